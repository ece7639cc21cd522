"""Issue 19: apps of no framework we instrument by route are still measured, and said so.

Hand-written WSGI and ASGI apps under gunicorn and uvicorn get SERVER spans and duration
histograms by method (``http.route`` unset), traceresponse, the stats endpoint and
trace-correlated logs, and a startup warning naming them.  Framework apps hidden inside such
objects are measured once, by their route: a Flask app inside an unknown WSGI wrapper joins the
wrapper's unit; a FastAPI app inside an unknown ASGI wrapper makes the generic measurement stand
down.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from support.launch import APPS, BIN
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port
from support.web import STATS_TOKEN, serve

pytestmark = pytest.mark.slow

DURATION = "http.server.request.duration"
ENV = {"PYTHONPATH": str(APPS), "OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": STATS_TOKEN}


def _gunicorn(app: str, port: int) -> list[str]:
    return [str(BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", app]


def _uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), *extra, app]


SERVED = {
    "gunicorn-wsgi": (lambda port: _gunicorn("raw_apps:wsgi_app", port), "raw_apps:wsgi_app", "a WSGI app"),
    "uvicorn-wsgi": (
        lambda port: _uvicorn("raw_apps:wsgi_app", port, "--interface", "wsgi"),
        "raw_apps:wsgi_app",
        "a WSGI app",
    ),
    "uvicorn-asgi": (lambda port: _uvicorn("raw_apps:asgi_app", port), "raw_apps:asgi_app", "an ASGI app"),
}


@pytest.mark.parametrize("served", list(SERVED))
def test_an_app_of_no_known_framework_is_measured_by_method(
    served: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    command, name, kind = SERVED[served]
    port = free_port()
    proc, base = serve(app_process, otlp_receiver, command(port), port, ENV, ready="/ready")
    responses = [httpx.get(f"{base}/things/{i}") for i in range(4)]
    trace_id = responses[0].headers["traceresponse"].split("-")[1]
    span = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "SERVER"], what="server span"
    )[0]
    assert span.name == "GET" and "http.route" not in span.attributes
    assert span.attributes["url.path"] == "/things/0" and span.attributes["http.response.status_code"] == 200
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.response.status_code": 200}) == 5,
        what="five requests (the readiness probe and four) in the by-method series",
    )
    assert all("http.route" not in p.attributes for p in otlp_receiver.metric_points(DURATION))
    assert otlp_receiver.wait_for_logs("raw ")[0].trace_id  # the app's log line carries its trace
    assert httpx.get(base + "/_perf").status_code == 401
    stats = httpx.get(base + "/_perf", headers={"Authorization": f"Bearer {STATS_TOKEN}"}).json()
    assert [(e["route"], e["count"]) for e in stats["endpoints"]] == [("(unmatched)", 5)]
    warning = next(line for line in proc.stderr().splitlines() if "no framework we instrument" in line)
    assert name in warning and kind in warning


def test_a_fastapi_app_hidden_in_an_asgi_wrapper_is_measured_once_by_route(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    proc, base = serve(
        app_process, otlp_receiver, _uvicorn("raw_apps:hidden_fastapi", port), port, ENV, ready="/items/0"
    )
    for i in range(3):
        assert httpx.get(f"{base}/items/{i + 1}").status_code == 200
    route = "/items/{item_id}"
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.route": route}) == 4,
        what="4 requests by route",
    )
    assert otlp_receiver.histogram_count(DURATION) == 4, "a request was measured twice"
    otlp_receiver.wait_for(lambda: len(otlp_receiver.spans(kind="SERVER")) == 4, what="4 server spans")
    assert {s.name for s in otlp_receiver.spans(kind="SERVER")} == {f"GET {route}"}
    assert "stands down" in proc.stderr()


@pytest.mark.parametrize(
    ("target", "path", "route"),
    [
        ("raw_apps:hidden_flask", "/things/7", "/things/<int:thing_id>"),
        ("raw_apps:dispatched_flask", "/sub/things/7", "/things/<int:thing_id>"),
    ],
    ids=["wrapped", "dispatched"],
)
def test_a_flask_app_inside_an_unknown_wsgi_app_joins_its_unit(
    target: str, path: str, route: str, otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    _, base = serve(app_process, otlp_receiver, _gunicorn(target, port), port, ENV, ready=path)
    for _ in range(3):
        assert httpx.get(base + path).status_code == 200
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count(DURATION, {"http.route": route}) == 4,
        what="4 requests by route",
    )
    assert otlp_receiver.histogram_count(DURATION) == 4, "a request was measured twice"
    otlp_receiver.wait_for(lambda: len(otlp_receiver.spans(kind="SERVER")) == 4, what="4 server spans")
    assert {s.name for s in otlp_receiver.spans(kind="SERVER")} == {f"GET {route}"}
