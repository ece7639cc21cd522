"""Issue 18: FastAPI BackgroundTasks are jobs of their own, not part of the request.

The app's ``/background`` queues a 0.3 s task that runs 7 statements (an N+1) and a short async
one.  The request's recorded duration, span and queries end with its response: its span ends
before the tasks start, it ran no query, it is no slow request (threshold 250 ms); each task has
its own span in the request's trace, ``perf.job.*`` points and the N+1 finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port
from test_drivers_e2e import server_span, start_data_app, stats, trace_of

pytestmark = pytest.mark.slow
JOB = "data_app.send_report"


def test_a_background_task_is_its_own_unit_and_leaves_the_request_alone(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    svc = start_data_app(app_process, otlp_receiver, tmp_path)
    trace_id = trace_of(httpx.get(svc.base + "/background", params={"n": 6}))

    jobs = otlp_receiver.wait_for(
        lambda: (
            found
            if len(found := [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "INTERNAL"]) >= 2
            else []
        ),
        what="the two job spans",
    )
    server = server_span(otlp_receiver, trace_id)
    report = next(s for s in jobs if s.name == f"background {JOB}")
    assert {s.name for s in jobs} == {f"background {JOB}", "background data_app.notify"}
    assert {s.parent_span_id for s in jobs} == {server.span_id}
    assert server.end_ns <= min(s.start_ns for s in jobs)  # the request ended first
    assert server.attributes["perf.db.query_count"] == 0
    assert "perf.slow" not in server.attributes
    assert report.attributes["perf.job.system"] == "background"
    assert report.attributes["perf.db.query_count"] == 7
    assert report.duration_s >= 0.3
    assert [e.attributes["perf.db.repeat_count"] for e in report.events if e.name == "perf.n_plus_one"] == [6]
    # the statements of the job are children of the job's span
    statements = [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]
    assert len(statements) == 7 and {s.parent_span_id for s in statements} == {report.span_id}

    wanted = {"perf.job.system": "background", "perf.job.name": JOB}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.job.duration", wanted) == 1, what="perf.job.duration"
    )
    assert otlp_receiver.histogram_sum("perf.job.duration", wanted) >= 0.3
    request = {"http.route": "/background"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("http.server.request.duration", request) == 1, what="request"
    )
    # the request's recorded duration is its own: less than the job's sleep alone
    assert otlp_receiver.histogram_sum("http.server.request.duration", request) < 0.3
    assert otlp_receiver.histogram_sum("perf.db.queries_per_request", request) == 0

    summary = stats(svc)
    endpoint = next(e for e in summary["endpoints"] if e["route"] == "/background")
    assert endpoint["slow_count"] == 0 and endpoint["mean_queries"] == 0.0
    assert not summary["findings"]["slow_requests"]
    job = next(j for j in summary["jobs"] if j["name"] == JOB)
    assert (job["system"], job["count"], job["mean_queries"]) == ("background", 1, 7.0)
    assert job["n_plus_one_count"] == 1
    assert summary["findings"]["n_plus_one"][0]["route"] == JOB


def test_a_failing_background_task_fails_its_job_not_the_request(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    svc = start_data_app(app_process, otlp_receiver, tmp_path)
    trace_id = trace_of(httpx.get(svc.base + "/background/fails"))
    job = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "INTERNAL"], what="job span"
    )[0]
    assert job.status_code == "ERROR" and job.attributes["error.type"] == "RuntimeError"
    server = server_span(otlp_receiver, trace_id)
    assert server.status_code == "UNSET" and server.attributes["http.response.status_code"] == 200
    failed = {"perf.job.name": "data_app.failing_job", "error.type": "RuntimeError"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("perf.job.duration", failed) == 1, what="failed job"
    )
    summary = stats(svc)
    endpoint = next(e for e in summary["endpoints"] if e["route"] == "/background/fails")
    assert endpoint["errors"] == 0
    # uvicorn's error record about the task's exception names the job's trace
    log = otlp_receiver.wait_for_logs("Exception in ASGI application")[0]
    assert log.trace_id == trace_id and log.span_id == job.span_id


def test_a_5xx_response_with_a_background_task_ends_its_request_before_the_task(
    app_process: Callable[..., AppProcess], otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    """A 5xx returned (not raised) with a task queued: the request is as long as its response."""
    svc = start_data_app(app_process, otlp_receiver, tmp_path)
    r = httpx.get(svc.base + "/background/unavailable")
    assert r.status_code == 503
    trace_id = r.headers["traceresponse"].split("-")[1]
    job = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "INTERNAL"], what="job span"
    )[0]
    server = server_span(otlp_receiver, trace_id)
    assert server.end_ns <= job.start_ns, "the request's span lasted as long as its background task"
    assert server.attributes["perf.db.query_count"] == 0 and "perf.slow" not in server.attributes
    assert server.attributes["error.type"] == "503" and server.status_code == "ERROR"
    request = {"http.route": "/background/unavailable"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("http.server.request.duration", request) == 1, what="request"
    )
    assert otlp_receiver.histogram_sum("http.server.request.duration", request) < 0.3


def test_a_request_is_no_longer_active_while_its_background_task_runs(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """http.server.active_requests follows the request's end (its response), as its duration does."""
    metrics_port = free_port()
    svc = start_data_app(
        app_process,
        None,
        tmp_path,
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(metrics_port),
    )

    def active() -> float:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        lines = [x for x in text.splitlines() if x.startswith("http_server_active_requests{")]
        return sum(float(x.rsplit(" ", 1)[1]) for x in lines)

    assert httpx.get(svc.base + "/background", params={"n": 1}).status_code == 200
    during = active()  # the 0.3 s task has just started
    time.sleep(0.5)
    assert (during, active()) == (0.0, 0.0)
