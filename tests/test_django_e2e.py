"""Issue 19: a Django project under the launcher gets what a FastAPI app gets.

The project in tests/apps/djangosite (polls: a list view whose template reads each choice's
question, a detail view, a slow query, a scripted cache sequence, a logging view, a failing
view, a streaming view) runs as WSGI under gunicorn and as ASGI under uvicorn, exporting to a
real OTLP receiver; every test reads what was exported, the response headers, the stats
endpoint and the server's stderr.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.launch import launcher
from support.otlp_receiver import OTLPReceiver, Span
from support.procs import AppProcess, clean_environ, free_port, skip_or_fail, tail
from support.web import DJANGO_SITE, INSIGHT_ENV, SERVERS, STATS_TOKEN, django_env, pythonpath, serve

pytestmark = pytest.mark.slow

DURATION = "http.server.request.duration"
DB_DURATION = "db.client.operation.duration"
TARGETS = {"gunicorn": "djsite.wsgi", "uvicorn": "djsite.asgi:application"}
#: One process: the stats endpoint answers for the process it reaches.
ONE_PROCESS = {"gunicorn": "gunicorn-1", "uvicorn": "uvicorn"}


@dataclass
class Site:
    server: str
    base: str
    receiver: OTLPReceiver
    proc: AppProcess


def _started() -> tuple[Callable[..., AppProcess], list[AppProcess]]:
    started: list[AppProcess] = []

    def start(args: list[str], env: dict[str, str], **kwargs: object) -> AppProcess:
        proc = AppProcess(args, env, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.start()

    return start, started


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The project served as WSGI (gunicorn, a sync worker) or ASGI (uvicorn), one per module."""
    server = request.param
    env = django_env(str(tmp_path_factory.mktemp("django") / "db.sqlite3"), **INSIGHT_ENV)
    start, started = _started()
    with OTLPReceiver() as receiver:
        port = free_port()
        try:
            proc, base = serve(
                start,
                receiver,
                SERVERS[ONE_PROCESS[server]](TARGETS[server], port),
                port,
                env,
                ready="/hello/",
                name="polls",
            )
            yield Site(server, base, receiver, proc)
        finally:
            for proc in started:
                proc.stop()
                print(f"--- {server} output:\n{tail(proc.output())}")


def _trace(response: httpx.Response) -> tuple[str, str]:
    _, trace_id, span_id, _ = response.headers["traceresponse"].split("-")
    return trace_id, span_id


def _server_span(receiver: OTLPReceiver, trace_id: str) -> Span:
    return receiver.wait_for(
        lambda: [s for s in receiver.spans(trace_id=trace_id) if s.kind == "SERVER"],
        what=f"server span {trace_id}",
    )[0]


def _stats(base: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(base + "/_perf", headers={"Authorization": f"Bearer {STATS_TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.matrix  # WSGI (gunicorn) and ASGI (uvicorn)
def test_server_span_named_by_url_pattern_with_db_children_and_traceresponse(site: Site) -> None:
    r = httpx.get(site.base + "/polls/3/")
    assert r.status_code == 200
    trace_id, span_id = _trace(r)
    span = _server_span(site.receiver, trace_id)
    assert span.span_id == span_id, "traceresponse names another span than the one exported"
    assert span.name == "GET polls/<int:question_id>/"
    attrs = span.attributes
    assert attrs["http.route"] == "polls/<int:question_id>/"
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.path"] == "/polls/3/"
    assert attrs["url.scheme"] == "http"
    assert attrs["perf.db.query_count"] == 2
    if site.server == "gunicorn":  # the WSGI environ names both ends
        assert attrs["server.address"] == "127.0.0.1" and attrs["client.address"] == "127.0.0.1"
    site.receiver.wait_for(lambda: len(site.receiver.spans(trace_id=trace_id)) >= 3, what="both SQL spans")
    children = [s for s in site.receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]
    assert len(children) == 2
    assert {c.parent_span_id for c in children} == {span_id}
    assert {c.attributes["db.collection.name"] for c in children} == {"polls_question", "polls_choice"}
    assert {c.attributes["db.system.name"] for c in children} == {"sqlite"}
    assert all(
        '"polls_' in c.attributes["db.query.text"] and "?" in c.attributes["db.query.text"] for c in children
    )
    site.receiver.wait_for(
        lambda: site.receiver.histogram_count(DURATION, {"http.route": "polls/<int:question_id>/"}) >= 1,
        what="the route's duration histogram",
    )
    db_points = site.receiver.wait_for_metric("db.client.operation.duration")
    assert {"polls_question", "polls_choice"} <= {p.attributes.get("db.collection.name") for p in db_points}


def test_route_histograms_root_and_unmatched(site: Site) -> None:
    for _ in range(3):
        assert httpx.get(site.base + "/").status_code == 200
    for i in range(2):
        assert httpx.get(f"{site.base}/no/such/page-{i}").status_code == 404
    receiver = site.receiver
    receiver.wait_for(
        lambda: receiver.histogram_count(DURATION, {"http.route": "/"}) == 3, what="3 requests to /"
    )

    def unmatched() -> int:
        return sum(
            p.count or 0
            for p in receiver.latest_points(DURATION)
            if "http.route" not in p.attributes and p.attributes.get("http.response.status_code") == 404
        )

    receiver.wait_for(lambda: unmatched() == 2, what="both 404s in one series without http.route")
    unmatched_spans = receiver.wait_for_spans(  # spans leave in exports of their own, maybe after the metrics
        2,
        kind="SERVER",
        where=lambda s: s.attributes.get("http.response.status_code") == 404,
        what="the SERVER spans of both 404s",
    )
    names = {s.name for s in unmatched_spans}
    assert names == {"GET"}, "an unmatched request must not be named by its path"


def test_n_plus_one_on_the_list_view_and_not_on_the_detail_view(site: Site) -> None:
    r = httpx.get(site.base + "/polls/")
    assert r.status_code == 200 and r.text.count("<li>") == 10
    trace_id, _ = _trace(r)
    span = _server_span(site.receiver, trace_id)
    event = next(e for e in span.events if e.name == "perf.n_plus_one")
    assert event.attributes["perf.db.repeat_count"] == 10
    assert 'FROM "polls_question"' in event.attributes["perf.db.statement"]
    for _ in range(6):
        httpx.get(site.base + "/polls/4/")
        httpx.get(site.base + "/polls/eager/")
    findings = _stats(site.base)["findings"]["n_plus_one"]
    assert [(f["route"], f["trace_id"]) for f in findings] == [("polls/", trace_id)]
    assert "select_related" in findings[0]["recommendation"]
    assert "prefetch_related" in findings[0]["recommendation"]
    log = site.receiver.wait_for_logs("N+1 queries in GET polls/")[0]
    assert log.trace_id == trace_id
    site.receiver.wait_for(
        lambda: site.receiver.sum_value("perf.n_plus_one", {"http.route": "polls/"}) == 1,
        what="one N+1 counted",
    )
    assert not site.receiver.sum_value("perf.n_plus_one", {"http.route": "polls/eager/"})


def test_slow_query_finding(site: Site) -> None:
    r = httpx.get(site.base + "/polls/slow/")
    trace_id, span_id = _trace(r)
    db = site.receiver.wait_for(
        lambda: [s for s in site.receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"],
        what="slow SQL span",
    )[0]
    assert db.attributes["perf.slow"] is True and db.parent_span_id == span_id
    slow = [q for q in _stats(site.base)["findings"]["slow_queries"] if q["trace_id"] == trace_id]
    assert slow and slow[0]["route"] == "polls/slow/" and "1000000" not in slow[0]["statement"]
    site.receiver.wait_for(
        lambda: site.receiver.sum_value("perf.slow_queries") >= 1, what="perf.slow_queries"
    )


def test_cache_hits_and_misses_by_alias_exact(site: Site) -> None:
    for round_no in range(3):
        assert httpx.get(f"{site.base}/polls/cache/{round_no}/").status_code == 200
    receiver = site.receiver

    def counts() -> tuple[float, float, float, float]:
        def value(alias: str, result: str) -> float:
            wanted = {"perf.cache.system": "django", "perf.cache.name": alias, "perf.cache.result": result}
            return receiver.sum_value("perf.cache.operations", wanted)

        return (
            value("default", "hit"),
            value("default", "miss"),
            value("sessions", "hit"),
            value("sessions", "miss"),
        )

    try:  # per round: default 2 hits and 3 misses (get_many: 1 + 2), sessions 1 miss
        receiver.wait_for(lambda: counts() == (6, 9, 0, 3), what="exact cache counts")
    except AssertionError:
        raise AssertionError(f"(default hit, miss, sessions hit, miss) = {counts()}") from None


def test_stats_endpoint_is_answered_before_djangos_resolver(site: Site) -> None:
    assert httpx.get(site.base + "/_perf").status_code == 401
    assert httpx.get(site.base + "/_perf", headers={"Authorization": "Bearer wrong"}).status_code == 401
    httpx.get(site.base + "/polls/5/")
    stats = _stats(site.base)
    routes = {e["route"] for e in stats["endpoints"]}
    assert "polls/<int:question_id>/" in routes
    assert not [r for r in routes if "_perf" in r], "the stats endpoint's own requests were measured"


def test_each_log_line_once_with_the_trace_id(site: Site) -> None:
    r = httpx.get(site.base + "/polls/log/")
    trace_id, _ = _trace(r)
    missing = httpx.get(site.base + "/page-that-logs-not-found")
    missing_trace, _ = _trace(missing)
    record = site.receiver.wait_for_logs("polls log line for /polls/log/")[0]
    assert record.trace_id == trace_id
    not_found = site.receiver.wait_for_logs("Not Found: /page-that-logs-not-found")[0]
    assert not_found.trace_id == missing_trace
    assert not_found.attributes.get("status_code") == 404 and "request" not in not_found.attributes
    stderr = site.proc.stderr()
    lines = [line for line in stderr.splitlines() if "polls log line for /polls/log/" in line]
    assert len(lines) == 1, lines
    assert json.loads(lines[0])["trace_id"] == trace_id
    assert len([line for line in stderr.splitlines() if "Not Found: /page-that-logs-not-found" in line]) == 1
    assert "Invalid type" not in stderr and "recursive logging" not in stderr


def test_a_failing_view_is_an_error_span_with_its_exception(site: Site) -> None:
    r = httpx.get(site.base + "/polls/boom/")
    assert r.status_code == 500
    span = _server_span(site.receiver, _trace(r)[0])
    assert span.name == "GET polls/boom/"
    assert span.status_code == "ERROR" and span.attributes["error.type"] == "500"
    exception = next(e for e in span.events if e.name == "exception")
    assert exception.attributes["exception.type"] == "RuntimeError"


def test_a_request_a_middleware_fails_is_named_by_the_pattern_its_path_matches(site: Site) -> None:
    """The middleware raises before Django resolves the URL: the route is still the pattern's
    (as the official instrumentation names it), not the unmatched series."""
    r = httpx.get(site.base + "/polls/3/", headers={"X-Break-Middleware": "1"})
    assert r.status_code == 500
    span = _server_span(site.receiver, _trace(r)[0])
    assert span.name == "GET polls/<int:question_id>/"
    assert span.attributes["http.route"] == "polls/<int:question_id>/"
    assert span.status_code == "ERROR" and span.attributes["error.type"] == "500"
    exception = next(e for e in span.events if e.name == "exception")
    assert exception.attributes["exception.message"] == "the middleware failed"
    unmatched = httpx.get(site.base + "/nowhere/", headers={"X-Break-Middleware": "1"})
    assert unmatched.status_code == 500
    assert _server_span(site.receiver, _trace(unmatched)[0]).name == "GET"  # no pattern matches


def test_the_exception_event_of_a_failing_view_is_scrubbed(site: Site) -> None:
    """Its message and stack trace leave the process as the FastAPI one's do: query secrets redacted."""
    r = httpx.get(site.base + "/polls/secret-error/")
    assert r.status_code == 500
    span = _server_span(site.receiver, _trace(r)[0])
    (event,) = [e for e in span.events if e.name == "exception"]
    assert "token=REDACTED" in event.attributes["exception.message"]
    assert "token=REDACTED" in event.attributes["exception.stacktrace"]
    assert "S3KR1T" not in json.dumps(event.attributes)


def test_queries_of_a_streaming_body_count_for_its_request(site: Site) -> None:
    r = httpx.get(site.base + "/polls/stream/")
    assert r.text.count("\n") == 3
    trace_id, span_id = _trace(r)
    span = _server_span(site.receiver, trace_id)
    assert span.attributes["perf.db.query_count"] == 4  # the list and one count per question
    site.receiver.wait_for(lambda: len(site.receiver.spans(trace_id=trace_id)) == 5, what="4 SQL spans")
    assert {s.parent_span_id for s in site.receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"} == {
        span_id
    }


# --- one server per test --------------------------------------------------------------------------


def _django(
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver | None,
    tmp_path: Path,
    server: str,
    **env: str,
) -> tuple[AppProcess, str]:
    full = django_env(str(tmp_path / "db.sqlite3"), **{**INSIGHT_ENV, **env})
    port = free_port()
    args = SERVERS[server](TARGETS[server.split("-", maxsplit=1)[0]], port)
    return serve(app_process, receiver, args, port, full, ready="/hello/")


@pytest.mark.parametrize("server", ["gunicorn-1", "uvicorn"])
def test_django_excluded_urls_under_wsgi_and_asgi(
    server: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """OTEL_PYTHON_DJANGO_EXCLUDED_URLS, as the official instrumentation reads it, whichever the handler.

    Nothing of an excluded request is traced or measured: the queries of a streaming body sent
    for one (its list of questions, one count per question) make no root CLIENT spans and no
    db.client.operation.duration points; a measured request's queries are as before.
    """
    excluded_urls = {"OTEL_PYTHON_DJANGO_EXCLUDED_URLS": "polls/pid,polls/stream"}
    _, base = _django(app_process, otlp_receiver, tmp_path, server, **excluded_urls)
    excluded = httpx.get(base + "/polls/pid/")
    assert excluded.status_code == 200 and "traceresponse" not in excluded.headers
    streamed = httpx.get(base + "/polls/stream/")
    assert streamed.text.count("\n") == 3 and "traceresponse" not in streamed.headers
    measured = httpx.get(base + "/polls/3/")
    trace_id, span_id = _trace(measured)
    _server_span(otlp_receiver, trace_id)
    paths = [s.attributes.get("url.path") for s in otlp_receiver.spans(kind="SERVER")]
    assert "/polls/3/" in paths and "/polls/pid/" not in paths and "/polls/stream/" not in paths
    # The measured request's two queries (its question, its choices), ended after the excluded ones'.
    otlp_receiver.wait_for(
        lambda: len(otlp_receiver.spans(kind="CLIENT", trace_id=trace_id)) == 2, what="the measured queries"
    )
    statements = otlp_receiver.spans(kind="CLIENT")
    assert {(s.trace_id, s.parent_span_id) for s in statements} == {(trace_id, span_id)}, [
        (s.name, s.parent_span_id) for s in statements
    ]

    def points(table: str) -> int:
        return otlp_receiver.histogram_count(DB_DURATION, {"db.collection.name": table})

    for table in ("polls_question", "polls_choice"):  # cumulative: a point with the measured one has all
        otlp_receiver.wait_for(functools.partial(points, table), what=f"the measured {table} query")
        assert points(table) == 1, f"{table}: the excluded requests' queries were measured"


def test_an_exception_django_propagates_is_one_exception_event(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """DEBUG_PROPAGATE_EXCEPTIONS: the view's exception escapes after Django's signal, recorded once."""
    _, base = _django(app_process, otlp_receiver, tmp_path, "gunicorn-1", APP_PROPAGATE="1")
    assert httpx.get(base + "/polls/boom/").status_code == 500  # gunicorn's own error page
    (span,) = otlp_receiver.wait_for_spans(name="GET polls/boom/", kind="SERVER")
    assert span.attributes["error.type"] == "RuntimeError"
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["RuntimeError"]


def test_findings_with_sampling_off(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    _, base = _django(app_process, otlp_receiver, tmp_path, "gunicorn-1", OTEL_TRACES_SAMPLER="always_off")
    r = httpx.get(base + "/polls/")
    assert int(r.headers["traceresponse"].split("-")[3], 16) & 1 == 0  # a trace id, not sampled
    for _ in range(6):
        httpx.get(base + "/polls/2/")
    httpx.get(base + "/polls/slow/")
    findings = _stats(base)["findings"]
    assert [f["route"] for f in findings["n_plus_one"]] == ["polls/"]
    assert findings["slow_queries"]
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.route": "polls/<int:question_id>/"}) == 6,
        what="all six detail requests counted",
    )
    otlp_receiver.wait_for(lambda: otlp_receiver.sum_value("perf.n_plus_one") == 1, what="one N+1 counted")
    assert not [s for s in otlp_receiver.spans() if s.name != "GET hello/"], "spans exported with always_off"


def test_runserver_with_its_autoreloader(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    env = django_env(str(tmp_path / "db.sqlite3"), OTEL_PERF_REPORT="true")
    port = free_port()
    args = [sys.executable, str(DJANGO_SITE / "manage.py"), "runserver", f"127.0.0.1:{port}"]
    proc, base = serve(app_process, otlp_receiver, args, port, env, ready="/hello/")
    r = httpx.get(base + "/polls/7/")
    span = _server_span(otlp_receiver, _trace(r)[0])
    assert span.name == "GET polls/<int:question_id>/" and span.attributes["perf.db.query_count"] == 2
    # SIGTERM to the serving child (to the group, Django's parent would SIGKILL it on its way out):
    # it reports and exits; the parent, which only restarts it, then exits 0 without a report.
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGTERM)
    assert proc.wait_exit(20) == 0
    proc.stop()
    out = proc.output()
    assert out.count("otel-perf report") == 1, "the autoreloader's parent printed a report too"
    assert "GET polls/<int:question_id>/" in out


def test_the_official_django_instrumentation_beside_ours_doubles_nothing(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    target = tmp_path / "official"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target),
         "opentelemetry-instrumentation-django", "opentelemetry-instrumentation-wsgi"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        skip_or_fail(f"could not install opentelemetry-instrumentation-django: {result.stderr[-500:]}")
    _, base = _django(
        app_process,
        otlp_receiver,
        tmp_path,
        "gunicorn",
        PYTHONPATH=pythonpath(DJANGO_SITE, target),
    )
    traces = [_trace(httpx.get(f"{base}/polls/{i}/"))[0] for i in (1, 2, 3)]
    for trace_id in traces:  # ours and its two SQL spans, nothing else (the official one would
        # add an INTERNAL span under ours, and its own duration histogram)
        otlp_receiver.wait_for(lambda t=trace_id: len(otlp_receiver.spans(trace_id=t)) >= 3, what="a trace")
    route = "polls/<int:question_id>/"
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.route": route}) >= 3, what="3 requests"
    )
    for trace_id in traces:
        spans = otlp_receiver.spans(trace_id=trace_id)
        assert sorted((s.kind, s.scope) for s in spans) == [
            ("CLIENT", "otel_perf"),
            ("CLIENT", "otel_perf"),
            ("SERVER", "otel_perf"),
        ], [(s.name, s.kind, s.scope) for s in spans]
    assert otlp_receiver.histogram_count(DURATION, {"http.route": route}) == 3
    assert {p.scope for p in otlp_receiver.metric_points(DURATION)} == {"otel_perf"}


def test_a_logging_setting_of_the_app_keeps_export_and_findings(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """LOGGING with a root handler (dictConfig also disables existing loggers, ours among them)."""
    proc, base = _django(app_process, otlp_receiver, tmp_path, "gunicorn", APP_LOGGING="root")
    r = httpx.get(base + "/polls/log/")
    trace_id, _ = _trace(r)
    httpx.get(base + "/polls/")
    record = otlp_receiver.wait_for_logs("polls log line for /polls/log/")[0]
    assert record.trace_id == trace_id
    otlp_receiver.wait_for_logs("N+1 queries in GET polls/")
    stderr = proc.stderr()
    lines = [line for line in stderr.splitlines() if "polls log line for /polls/log/" in line]
    assert lines == ["APPLOG INFO polls.views polls log line for /polls/log/"]
    assert "N+1 queries in GET polls/" in stderr


@pytest.fixture(scope="module")
def postgres_db(postgres_server) -> str:  # type: ignore[no-untyped-def]
    postgres_server.create_database("djangopolls")
    return f"postgresql://postgres@{postgres_server.host}:{postgres_server.port}/djangopolls"


def test_postgresql_spans_n_plus_one_and_slow_query(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], postgres_db: str
) -> None:
    env = django_env(postgres_db, **INSIGHT_ENV)
    port = free_port()
    _, base = serve(
        app_process, otlp_receiver, SERVERS["gunicorn-1"]("djsite.wsgi", port), port, env, ready="/hello/"
    )
    detail = httpx.get(base + "/polls/3/")
    trace_id, span_id = _trace(detail)
    otlp_receiver.wait_for(
        lambda: len(otlp_receiver.spans(trace_id=trace_id)) == 3, what="server + 2 SQL spans"
    )
    sql = [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]
    assert {s.parent_span_id for s in sql} == {span_id}
    assert {s.attributes["db.system.name"] for s in sql} == {"postgresql"}
    assert {s.attributes["db.namespace"] for s in sql} == {"djangopolls"}
    port = int(postgres_db.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    assert {s.attributes["server.port"] for s in sql} == {port}
    listing = httpx.get(base + "/polls/")
    slow = httpx.get(base + "/polls/slow/")
    stats = _stats(base)
    assert [(f["route"], f["trace_id"]) for f in stats["findings"]["n_plus_one"]] == [
        ("polls/", _trace(listing)[0])
    ]
    assert [q["trace_id"] for q in stats["findings"]["slow_queries"]] == [_trace(slow)[0]]
    assert "pg_sleep" in stats["findings"]["slow_queries"][0]["statement"]


def test_the_launcher_runs_django_admin_commands_untouched(tmp_path: Path) -> None:
    """A management command (no handler made) under the launcher: nothing announced, exit 0."""
    env = django_env(str(tmp_path / "db.sqlite3"))
    result = subprocess.run(
        [launcher(), sys.executable, str(DJANGO_SITE / "manage.py"), "check"],
        env=clean_environ({**env, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                           "OTEL_LOGS_EXPORTER": "none"}),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "app found" not in result.stderr


def test_browser_script_and_html_server_timing(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """With the browser feature on, the WSGI handler serves the script and joins HTML pages to their trace."""
    _, base = _django(
        app_process, otlp_receiver, tmp_path, "gunicorn-1", OTEL_PERF_BROWSER_ENDPOINT="http://127.0.0.1:4318"
    )
    script = httpx.get(base + "/_otel_perf/browser.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "127.0.0.1:4318" in script.text
    page = httpx.get(base + "/polls/")
    trace_id, span_id = _trace(page)
    timing = page.headers["server-timing"]
    assert f'traceparent;desc="00-{trace_id}-{span_id}-' in timing and 'route;desc="polls/"' in timing
    assert "server-timing" not in httpx.get(base + "/hello/").headers  # JSON: no page to join
