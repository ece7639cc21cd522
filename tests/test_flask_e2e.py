"""Issue 19: a Flask 3 + Flask-SQLAlchemy app under the launcher gets what a FastAPI app gets.

tests/apps/flask_app.py (an N+1 list, a detail route, an eager list, a blueprint route, a slow
query, a logging route, a failing route, a streaming route) served by gunicorn's sync worker
and by ``flask run``, exporting to a real OTLP receiver.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.otlp_receiver import OTLPReceiver, Span
from support.procs import AppProcess, free_port, tail
from support.web import BIN, INSIGHT_ENV, SERVERS, STATS_TOKEN, flask_env, serve

pytestmark = pytest.mark.slow

DURATION = "http.server.request.duration"


@dataclass
class App:
    base: str
    receiver: OTLPReceiver
    proc: AppProcess


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The app under gunicorn (one sync worker: the stats endpoint answers for its process)."""
    env = flask_env(f"sqlite:///{tmp_path_factory.mktemp('flask') / 'app.db'}", **INSIGHT_ENV)
    started: list[AppProcess] = []

    def start(args: list[str], env: dict[str, str], **kwargs: object) -> AppProcess:
        proc = AppProcess(args, env, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.start()

    with OTLPReceiver() as receiver:
        port = free_port()
        try:
            proc, base = serve(
                start,
                receiver,
                SERVERS["gunicorn-1"]("flask_app:app", port),
                port,
                env,
                ready="/hello",
                name="shop",
            )
            yield App(base, receiver, proc)
        finally:
            for proc in started:
                proc.stop()
                print(f"--- output:\n{tail(proc.output())}")


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


@pytest.mark.parametrize(
    ("path", "route", "queries"),
    [
        ("/orders/4", "/orders/<int:order_id>", 1),
        ("/api/v1/customers/2", "/api/v1/customers/<int:customer_id>", 1),  # a blueprint's prefix kept
    ],
)
@pytest.mark.matrix  # Flask and Flask-SQLAlchemy
def test_server_span_named_by_route_template_with_sql_children(
    app: App, path: str, route: str, queries: int
) -> None:
    r = httpx.get(app.base + path)
    assert r.status_code == 200
    trace_id, span_id = _trace(r)
    span = _server_span(app.receiver, trace_id)
    assert span.span_id == span_id
    assert span.name == f"GET {route}"
    assert span.attributes["http.route"] == route
    assert span.attributes["url.path"] == path
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["perf.db.query_count"] == queries
    sql = app.receiver.wait_for(
        lambda: [s for s in app.receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"], what="SQL span"
    )
    assert [s.parent_span_id for s in sql] == [span_id]
    assert sql[0].attributes["db.system.name"] == "sqlite"
    app.receiver.wait_for(
        lambda: app.receiver.histogram_count(DURATION, {"http.route": route}) >= 1,
        what="the route's histogram",
    )


def test_unmatched_requests_collapse_to_one_series(app: App) -> None:
    for i in range(3):
        assert httpx.get(f"{app.base}/no/such/{i}").status_code == 404

    def unmatched() -> int:
        return sum(
            p.count or 0
            for p in app.receiver.latest_points(DURATION)
            if "http.route" not in p.attributes and p.attributes.get("http.response.status_code") == 404
        )

    app.receiver.wait_for(lambda: unmatched() == 3, what="3 unmatched requests in one series")


def test_n_plus_one_on_the_list_route_only(app: App) -> None:
    r = httpx.get(app.base + "/orders")
    trace_id, _ = _trace(r)
    span = _server_span(app.receiver, trace_id)
    event = next(e for e in span.events if e.name == "perf.n_plus_one")
    assert event.attributes["perf.db.repeat_count"] == 10
    assert "FROM customers" in event.attributes["perf.db.statement"]
    for i in range(6):
        httpx.get(f"{app.base}/orders/{i + 1}")
        httpx.get(app.base + "/orders/eager")
    findings = _stats(app.base)["findings"]["n_plus_one"]
    assert [(f["route"], f["trace_id"]) for f in findings] == [("/orders", trace_id)]
    assert "selectinload" in findings[0]["recommendation"]
    assert app.receiver.wait_for_logs("N+1 queries in GET /orders")[0].trace_id == trace_id


def test_slow_query_finding(app: App) -> None:
    r = httpx.get(app.base + "/slow-query")
    trace_id, span_id = _trace(r)
    db = app.receiver.wait_for(
        lambda: [s for s in app.receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"], what="slow SQL span"
    )[0]
    assert db.attributes["perf.slow"] is True and db.parent_span_id == span_id
    slow = [q for q in _stats(app.base)["findings"]["slow_queries"] if q["trace_id"] == trace_id]
    assert slow and slow[0]["route"] == "/slow-query"


def test_stats_endpoint_is_answered_before_flask(app: App) -> None:
    assert httpx.get(app.base + "/_perf").status_code == 401
    assert httpx.post(app.base + "/_perf/reset").status_code == 401
    httpx.get(app.base + "/orders/9")
    routes = {e["route"] for e in _stats(app.base)["endpoints"]}
    assert "/orders/<int:order_id>" in routes


def test_each_log_line_once_with_the_trace_id(app: App) -> None:
    r = httpx.get(app.base + "/log")
    trace_id, _ = _trace(r)
    assert app.receiver.wait_for_logs("flask log line")[0].trace_id == trace_id
    lines = [line for line in app.proc.stderr().splitlines() if "flask log line" in line]
    assert len(lines) == 1 and json.loads(lines[0])["trace_id"] == trace_id


def test_a_failing_route_is_an_error_span_with_its_exception(app: App) -> None:
    r = httpx.get(app.base + "/boom")
    assert r.status_code == 500
    trace_id, _ = _trace(r)
    span = _server_span(app.receiver, trace_id)
    assert span.name == "GET /boom" and span.status_code == "ERROR"
    assert (
        next(e for e in span.events if e.name == "exception").attributes["exception.type"] == "RuntimeError"
    )
    assert app.receiver.wait_for_logs("Exception on /boom")[0].trace_id == trace_id


def test_the_exception_event_of_a_failing_route_is_scrubbed(app: App) -> None:
    """Its message and stack trace leave the process as the FastAPI one's do: query secrets redacted."""
    r = httpx.get(app.base + "/secret-error")
    assert r.status_code == 500
    span = _server_span(app.receiver, _trace(r)[0])
    (event,) = [e for e in span.events if e.name == "exception"]
    assert "token=REDACTED" in event.attributes["exception.message"]
    assert "token=REDACTED" in event.attributes["exception.stacktrace"]
    assert "S3KR1T" not in json.dumps(event.attributes)


def test_queries_of_a_streaming_body_count_for_its_request(app: App) -> None:
    r = httpx.get(app.base + "/stream")
    assert r.text.count("\n") == 3
    span = _server_span(app.receiver, _trace(r)[0])
    assert span.attributes["perf.db.query_count"] == 1 and span.attributes["http.route"] == "/stream"


def test_findings_with_sampling_off(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    env = flask_env(f"sqlite:///{tmp_path / 'app.db'}", **INSIGHT_ENV, OTEL_TRACES_SAMPLER="always_off")
    port = free_port()
    _, base = serve(
        app_process, otlp_receiver, SERVERS["gunicorn-1"]("flask_app:app", port), port, env, ready="/hello"
    )
    r = httpx.get(base + "/orders")
    assert int(r.headers["traceresponse"].split("-")[3], 16) & 1 == 0
    for i in range(5):
        httpx.get(f"{base}/orders/{i + 1}")
    assert [f["route"] for f in _stats(base)["findings"]["n_plus_one"]] == ["/orders"]
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.route": "/orders/<int:order_id>"}) == 5,
        what="all five detail requests counted",
    )
    otlp_receiver.wait_for(lambda: otlp_receiver.sum_value("perf.n_plus_one") == 1, what="one N+1 counted")
    assert not otlp_receiver.spans()


def test_flask_run_with_its_reloader(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    env = flask_env(f"sqlite:///{tmp_path / 'app.db'}", OTEL_PERF_REPORT="true")
    port = free_port()
    args = [str(BIN / "flask"), "run", "--debug", "--port", str(port)]
    proc, base = serve(app_process, otlp_receiver, args, port, env, ready="/hello")
    r = httpx.get(base + "/orders/3")
    span = _server_span(otlp_receiver, _trace(r)[0])
    assert span.name == "GET /orders/<int:order_id>"
    # The serving child reports and exits on SIGTERM; the reloader parent, which only restarts
    # it, then exits without a report of its own.
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGTERM)
    proc.wait_exit(20)
    proc.stop()
    out = proc.output()
    assert out.count("otel-perf report") == 1, out[-3000:]
    assert "GET /orders/<int:order_id>" in out


def test_a_failing_route_under_flask_run_debug_is_one_exception_event(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """In debug mode Flask lets the exception escape after its signal: recorded once all the same."""
    env = flask_env(f"sqlite:///{tmp_path / 'app.db'}")
    port = free_port()
    args = [str(BIN / "flask"), "run", "--debug", "--no-reload", "--port", str(port)]
    _, base = serve(app_process, otlp_receiver, args, port, env, ready="/hello")
    assert httpx.get(base + "/boom").status_code == 500  # werkzeug's debugger answers (no traceresponse)
    (span,) = otlp_receiver.wait_for_spans(name="GET /boom", kind="SERVER")
    assert span.attributes["error.type"] == "RuntimeError"
    assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["RuntimeError"]


def test_python_app_run(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """``python flask_app.py`` (``app.run()``: werkzeug's server, threaded)."""
    port = free_port()
    env = flask_env(f"sqlite:///{tmp_path / 'app.db'}", APP_PORT=str(port))
    from support.launch import APPS

    _, base = serve(
        app_process, otlp_receiver, [sys.executable, str(APPS / "flask_app.py")], port, env, ready="/hello"
    )
    span = _server_span(otlp_receiver, _trace(httpx.get(base + "/orders"))[0])
    assert span.name == "GET /orders" and span.attributes["perf.db.query_count"] == 11
