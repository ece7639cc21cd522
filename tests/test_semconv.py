"""Issue 20: what the official instrumentations give, ours gives too (each of these was missing).

The sample service under the launcher, a real receiver, real requests: the SERVER span's
stable-semconv attributes, the ``exception`` event of a failed request, an unknown method
named ``HTTP``, captured headers (sensitive ones redacted), the per-framework excluded-URL
variable, websocket connections, the official log-correlation fields, the UpDownCounter of
requests in flight, body-size metrics, and an app that calls ``FastAPIInstrumentor`` itself
getting one SERVER span per request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import websocket  # websocket-client

from support.launch import APPS, BIN, Service, launcher, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def service(otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path) -> Service:
    return start_service(
        app_process,
        otlp_receiver,
        sqlite_urls(tmp_path)[0],
        env={
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "x-request-id,authorization",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type",
            "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "^/orders/in-list",
            "OTEL_PYTHON_LOG_CORRELATION": "true",
        },
    )


def test_server_span_attributes_headers_and_the_exception_event(
    service: Service, otlp_receiver: OTLPReceiver
) -> None:
    headers = {"user-agent": "semconv-test/1.0", "x-request-id": "abc-123", "authorization": "Bearer s3cret"}
    assert httpx.get(service.base + "/items/3", headers=headers).status_code == 200
    span = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER")[0]
    port = int(service.base.rsplit(":", 1)[1])
    assert span.attributes["server.address"] == "127.0.0.1"
    assert span.attributes["server.port"] == port
    assert span.attributes["client.address"] == "127.0.0.1"
    assert isinstance(span.attributes["client.port"], int)
    assert span.attributes["user_agent.original"] == "semconv-test/1.0"
    assert span.attributes["http.request.header.x_request_id"] == ["abc-123"]
    assert span.attributes["http.request.header.authorization"] == ["[REDACTED]"]
    assert span.attributes["http.response.header.content_type"] == ["application/json"]

    assert httpx.get(service.base + "/boom").status_code == 500
    failed = otlp_receiver.wait_for_spans(name="GET /boom", kind="SERVER")[0]
    assert failed.status_code == "ERROR"
    (event,) = [e for e in failed.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "boom"
    assert 'raise RuntimeError("boom")' in event.attributes["exception.stacktrace"]
    assert "exception.type" not in failed.attributes  # the non-standard attribute is gone


def test_an_unknown_method_is_named_http(service: Service, otlp_receiver: OTLPReceiver) -> None:
    httpx.request("FOO", service.base + "/hello")
    span = otlp_receiver.wait_for_spans(name="HTTP /hello", kind="SERVER")[0]
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "FOO"


def test_http_metrics_carry_scheme_and_protocol_and_body_sizes(
    service: Service, otlp_receiver: OTLPReceiver
) -> None:
    body = httpx.get(service.base + "/items/3").content
    point = otlp_receiver.wait_for(
        lambda: otlp_receiver.latest_points(
            "http.server.request.duration", {"http.route": "/items/{item_id}"}
        ),
        what="the request's duration point",
    )[0]
    assert point.attributes["url.scheme"] == "http"
    assert point.attributes["network.protocol.version"] == "1.1"
    size = otlp_receiver.wait_for(
        lambda: otlp_receiver.latest_points(
            "http.server.response.body.size", {"http.route": "/items/{item_id}"}
        ),
        what="the response size point",
    )[0]
    assert (size.unit, size.count, size.sum) == ("By", 1, len(body))
    active = otlp_receiver.wait_for_metric("http.server.active_requests")[0]
    assert active.kind == "sum" and active.is_monotonic is False
    assert set(active.attributes) == {"http.request.method", "url.scheme"}


def test_the_fastapi_excluded_urls_variable(service: Service, otlp_receiver: OTLPReceiver) -> None:
    assert httpx.get(service.base + "/orders/in-list").status_code == 200
    assert httpx.get(service.base + "/hello").status_code == 200
    otlp_receiver.wait_for_spans(name="GET /hello", kind="SERVER")
    assert not otlp_receiver.spans(name="GET /orders/in-list")
    assert not otlp_receiver.latest_points("http.server.request.duration", {"http.route": "/orders/in-list"})


def test_a_websocket_connection_is_one_span(service: Service, otlp_receiver: OTLPReceiver) -> None:
    ws = websocket.create_connection(service.base.replace("http", "ws") + "/ws/lobby", timeout=10)
    try:
        ws.send("hi")
        assert ws.recv() == "lobby:hi"
    finally:
        ws.close()
    span = otlp_receiver.wait_for_spans(name="/ws/{room}", kind="SERVER")[0]
    assert span.attributes["http.route"] == "/ws/{room}"
    assert span.attributes["url.path"] == "/ws/lobby"
    assert span.attributes["perf.db.query_count"] == 1
    assert [s for s in otlp_receiver.spans(kind="CLIENT") if s.parent_span_id == span.span_id]


def test_the_official_log_correlation_fields(service: Service) -> None:
    r = httpx.get(service.base + "/log-correlation")
    trace_id = r.headers["traceresponse"].split("-")[1]
    fields = r.json()
    assert (fields["otelTraceID"], fields["otelServiceName"]) == (trace_id, "service")
    assert len(fields["otelSpanID"]) == 16 and fields["otelSpanID"] != "0"


def test_an_app_instrumented_in_code_gets_one_server_span(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    port = free_port()
    proc = app_process(
        [launcher(), str(BIN / "uvicorn"), "instrumented_in_code:app", "--port", str(port)],
        {"PYTHONPATH": str(APPS), **otlp_receiver.exporter_env()},
    )
    base = f"http://127.0.0.1:{port}"
    proc.wait_http(base + "/hello")
    otlp_receiver.clear()
    for _ in range(3):
        assert httpx.get(base + "/hello").status_code == 200
    otlp_receiver.wait_for_spans(name="GET /hello", kind="SERVER")
    proc.stop()
    spans = otlp_receiver.spans()
    per_trace = Counter(s.trace_id for s in spans)
    assert len(per_trace) >= 3 and set(per_trace.values()) == {1}, [(s.name, s.scope) for s in spans]
    assert {(s.kind, s.scope) for s in spans} == {("SERVER", "otel_perf")}
    assert "FastAPIInstrumentor.instrument_app skipped" in proc.output()
