"""Issue 3 acceptance: performance findings over real sockets, app under the launcher.

N+1 (and the patterns that must not be N+1), slow requests, slow queries, a blocked event
loop, an upstream with rate-limit headers and 429s, measure(), the stats endpoint and its
token, Server-Timing; and everything still reported with the sampler set to always_off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import Service, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess

pytestmark = pytest.mark.slow
TOKEN = "t0ken-for-the-tests"
INSIGHT_ENV = {
    "OTEL_PERF_SLOW_REQUEST_MS": "250",
    "OTEL_PERF_SLOW_QUERY_MS": "50",
    "OTEL_PERF_LOOP_BLOCK_MS": "150",
    "OTEL_PERF_STATS_PATH": "/_perf",
    "OTEL_PERF_STATS_TOKEN": TOKEN,
    "OTEL_PERF_SERVER_TIMING": "true",
}


def _start(
    app_process: Callable[..., AppProcess], receiver: OTLPReceiver, tmp_path: Path, **env: str
) -> Service:
    url, async_url = sqlite_urls(tmp_path)
    # The service calls itself as the rate-limited upstream.
    return start_service(app_process, receiver, url, async_db_url=async_url, env={**INSIGHT_ENV, **env})


@pytest.fixture
def service(otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path) -> Service:
    return _start(app_process, otlp_receiver, tmp_path)


def _stats(svc: Service) -> dict:  # type: ignore[type-arg]
    r = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_n_plus_one_is_reported_as_event_counter_log_and_stat(
    service: Service, otlp_receiver: OTLPReceiver
) -> None:
    r = httpx.get(service.base + "/orders/n-plus-one")
    trace_id = r.headers["traceresponse"].split("-")[1]
    server = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "SERVER"],
        what="N+1 server span",
    )[0]
    event = next(e for e in server.events if e.name == "perf.n_plus_one")
    assert event.attributes["perf.db.repeat_count"] >= 5
    statement = event.attributes["perf.db.statement"]
    assert "FROM customers" in statement and "?" in statement
    assert server.attributes["perf.db.query_count"] >= 6
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.n_plus_one", {"http.route": "/orders/n-plus-one"}) >= 1,
        what="perf.n_plus_one counter",
    )
    log = otlp_receiver.wait_for_logs("N+1 queries")[0]
    assert log.trace_id == trace_id
    assert log.attributes["perf.recommendation"].startswith("N+1 on GET /orders/n-plus-one")
    finding = _stats(service)["findings"]["n_plus_one"][0]
    assert finding["route"] == "/orders/n-plus-one"
    assert finding["trace_id"] == trace_id
    assert "eager" in finding["recommendation"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/orders/eager"),
        ("GET", "/orders/joined"),
        ("GET", "/orders/in-list"),
        ("POST", "/orders/bulk"),
        ("GET", "/orders/different"),
        ("GET", "/items/1"),
    ],
)
def test_no_false_n_plus_one(service: Service, otlp_receiver: OTLPReceiver, method: str, path: str) -> None:
    for _ in range(6):  # repeated requests each doing few queries are not N+1 either
        assert httpx.request(method, service.base + path).status_code == 200
    stats = _stats(service)
    assert stats["findings"]["n_plus_one"] == []
    otlp_receiver.wait_for_metric("perf.db.queries_per_request")
    assert not [p for p in otlp_receiver.metric_points("perf.n_plus_one") if p.value]


def test_slow_request_and_slow_query(service: Service, otlp_receiver: OTLPReceiver) -> None:
    slow = httpx.get(service.base + "/slow?ms=400")
    slow_trace = slow.headers["traceresponse"].split("-")[1]
    query = httpx.get(service.base + "/slow-query")
    query_trace = query.headers["traceresponse"].split("-")[1]

    span = otlp_receiver.wait_for(lambda: otlp_receiver.spans(trace_id=slow_trace), what="slow span")[0]
    assert span.attributes["perf.slow"] is True
    log = otlp_receiver.wait_for_logs("slow request GET /slow ")[0]
    assert log.trace_id == slow_trace
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.slow_requests", {"http.route": "/slow"}) >= 1,
        what="perf.slow_requests",
    )

    db = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=query_trace) if s.kind == "CLIENT"],
        what="slow SQL span",
    )[0]
    assert db.attributes["perf.slow"] is True
    qlog = otlp_receiver.wait_for_logs("slow query")[0]
    assert qlog.trace_id == query_trace
    assert "1500000" not in qlog.body and "?" in qlog.body  # literals replaced, never the values
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.slow_queries", {"db.operation.name": "SELECT"}) >= 1,
        what="perf.slow_queries",
    )
    findings = _stats(service)["findings"]
    assert next(x for x in findings["slow_requests"] if x["route"] == "/slow")["trace_id"] == slow_trace
    assert findings["slow_queries"][0]["trace_id"] == query_trace
    assert "index" in findings["slow_queries"][0]["recommendation"]


# "task-context": from Python 3.12 the watchdog reads the request from the blocked task's context
# (the matrix runs this on 3.13); "registered": each request registers its task (before 3.12,
# and the fallback when the probe is off).
@pytest.mark.matrix
@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(
            "task-context",
            marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="Task.get_context() is 3.12+"),
        ),
        "registered",
    ],
)
def test_blocking_call_in_async_endpoint_is_named(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path, lookup: str
) -> None:
    env = {"OTEL_PERF__PROBES_OFF": "asyncio-task-context"} if lookup == "registered" else {}
    service = _start(app_process, otlp_receiver, tmp_path, **env)
    r = httpx.get(service.base + "/blocking")
    trace_id = r.headers["traceresponse"].split("-")[1]
    log = otlp_receiver.wait_for_logs("event loop blocked")[0]
    assert "GET /blocking" in log.body
    assert log.attributes["perf.blocking_trace_id"] == trace_id
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.asyncio.loop.lag") > 0, what="loop lag"
    )
    assert _stats(service)["findings"]["event_loop_blocks"][0]["trace_id"] == trace_id

    # A task the request started, blocking after the request ended, is not that request.
    assert httpx.get(service.base + "/spawns-blocker").status_code == 200
    log = otlp_receiver.wait_for(
        lambda: [x for x in otlp_receiver.logs("event loop blocked") if "outside a request" in x.body],
        what="a block outside any request",
    )[0]
    assert "/spawns-blocker" not in log.body and not log.attributes.get("perf.blocking_trace_id")
    # A background task blocking the loop after the response: its job's doing.
    queued = httpx.get(service.base + "/background-blocker")
    assert queued.status_code == 200
    log = otlp_receiver.wait_for(
        lambda: [x for x in otlp_receiver.logs("event loop blocked") if "blocking_job" in x.body],
        what="a block by the background job",
    )[0]
    assert "by background service.blocking_job" in log.body  # the job, not GET /background-blocker
    assert log.attributes["perf.blocking_trace_id"] == queued.headers["traceresponse"].split("-")[1]


def test_outgoing_rate_limit_headroom_and_429s(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, _ = sqlite_urls(tmp_path)
    upstream = start_service(app_process, None, url, name="upstream")
    svc = start_service(app_process, otlp_receiver, url, peer=upstream.base, env=INSIGHT_ENV)
    statuses = [httpx.get(svc.base + "/call-upstream").json()["status"] for _ in range(5)]
    assert statuses.count(429) == 2
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.http.client.throttled", {"server.address": "127.0.0.1"}) >= 2,
        what="two throttled responses",
    )
    remaining = otlp_receiver.latest_points(
        "perf.http.client.ratelimit.remaining", {"server.address": "127.0.0.1"}
    )
    limit = otlp_receiver.latest_points("perf.http.client.ratelimit.limit", {"server.address": "127.0.0.1"})
    assert remaining[0].value == 0 and limit[0].value == 3
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count("http.client.request.duration", {"server.address": "127.0.0.1"})
            >= 5
        ),
        what="client durations",
    )
    outgoing = _stats(svc)["outgoing"][0]
    assert outgoing["throttled"] == 2 and outgoing["ratelimit"]["limit"] == 3


def test_measure_counts_runs_errors_and_finds_n_plus_one(
    service: Service, otlp_receiver: OTLPReceiver
) -> None:
    httpx.get(service.base + "/job")
    httpx.get(service.base + "/measured-failure")
    span = otlp_receiver.wait_for_spans(name="jobs.report")[0]
    assert span.attributes["perf.operation.name"] == "jobs.report"
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count("perf.operation.duration", {"perf.operation.name": "jobs.report"})
            == 1
        ),
        what="one jobs.report run",
    )
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.sum_value("perf.operation.errors", {"perf.operation.name": "tasks.create"}) == 1
        ),
        what="one tasks.create error",
    )
    failed = otlp_receiver.wait_for_spans(name="tasks.create")[0]
    assert failed.status_code == "ERROR" and failed.attributes["error.type"] == "ValueError"


def test_measure_outside_a_request_is_its_own_unit(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    from support.launch import APPS, launcher

    url, _ = sqlite_urls(tmp_path)
    env = {
        **otlp_receiver.exporter_env(),
        "APP_DATABASE_URL": url,
        "OTEL_PERF__RAISE_ERRORS": "1",
        "PYTHONPATH": str(APPS),
        "OTEL_SERVICE_NAME": "worker",
    }
    import sys

    proc = app_process(
        [launcher(), sys.executable, "-c", "import service; service.run_job()"], env, name="worker"
    )
    assert proc.wait_exit(30) == 0
    span = otlp_receiver.wait_for_spans(name="jobs.report")[0]
    assert any(e.name == "perf.n_plus_one" for e in span.events)
    assert otlp_receiver.sum_value("perf.n_plus_one", {"http.route": "jobs.report"}) == 1


def test_everything_reported_with_sampling_off(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    svc = _start(app_process, otlp_receiver, tmp_path, OTEL_TRACES_SAMPLER="always_off")
    n1 = httpx.get(svc.base + "/orders/n-plus-one")
    assert int(n1.headers["traceresponse"].split("-")[3], 16) & 1 == 0  # a trace id, sampled flag off
    httpx.get(svc.base + "/slow?ms=300")
    httpx.get(svc.base + "/slow-query")
    for i in range(4):
        httpx.get(f"{svc.base}/items/{i + 1}")
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count("http.server.request.duration", {"http.route": "/items/{item_id}"})
            == 4
        ),
        what="all 4 item requests counted",
    )
    for name in ("perf.n_plus_one", "perf.slow_requests", "perf.slow_queries"):
        otlp_receiver.wait_for(lambda n=name: otlp_receiver.sum_value(n) >= 1, what=name)
    assert otlp_receiver.histogram_count("db.client.operation.duration") >= 10
    otlp_receiver.wait_for_logs("N+1 queries")
    otlp_receiver.wait_for_logs("slow query")
    stats = _stats(svc)
    assert stats["findings"]["n_plus_one"] and stats["findings"]["slow_requests"]
    assert not [s for s in otlp_receiver.spans() if s.name != "GET /hello"]  # no spans at all


def test_stats_endpoint_requires_the_token(service: Service) -> None:
    assert httpx.get(service.base + "/_perf").status_code == 401
    assert httpx.get(service.base + "/_perf", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(service.base + "/_perf", headers={"Authorization": TOKEN}).status_code == 401
    assert httpx.post(service.base + "/_perf/reset").status_code == 401
    httpx.get(service.base + "/items/1")
    stats = _stats(service)
    assert {"endpoints", "findings", "outgoing", "status", "uptime_seconds", "telemetry"} <= set(stats)
    entry = next(e for e in stats["endpoints"] if e["route"] == "/items/{item_id}")
    assert entry["count"] == 1 and entry["mean_queries"] == 1.0
    reset = httpx.post(service.base + "/_perf/reset", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reset.json() == {"reset": True, "workers": 1}  # every worker of the server resets
    assert not [e for e in _stats(service)["endpoints"] if e["route"] == "/items/{item_id}"]


def test_server_timing_header(service: Service) -> None:
    r = httpx.get(service.base + "/items/2")
    timing = r.headers["server-timing"]
    assert timing.startswith("total;dur=") and 'desc="1 queries"' in timing


def test_exit_report(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    svc = _start(app_process, None, tmp_path, OTEL_PERF_REPORT="true")  # type: ignore[arg-type]
    httpx.get(svc.base + "/orders/n-plus-one")
    httpx.get(svc.base + "/items/1")
    svc.proc.stop()
    out = svc.proc.output()
    assert "otel-perf report" in out
    assert "GET /orders/n-plus-one" in out and "N+1 findings" in out
