"""Issue 21: the per-request access log teams write by hand, and the user and tenant of a request.

The sample service runs under the launcher with ``OTEL_PERF_ACCESS_LOG=true``, the user id taken
from a header and the tenant from baggage.  Checked on what really leaves the process: the
JSON line on stderr, the OTLP log record, the SERVER span and the app's own log records; the
tenant reaches a metric only bounded (``OTEL_PERF_TENANT_METRIC_VALUES``), the user never.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.launch import APPS, BIN, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port
from support.web import serve

pytestmark = pytest.mark.slow

FIELDS = {
    "http.request.method": "GET",
    "http.route": "/items/{item_id}",
    "http.response.status_code": 200,
    "perf.db.query_count": 1,
    "enduser.id": "alice",
    "tenant.id": "acme",
}


def _access_lines(stderr: str) -> list[dict[str, Any]]:
    """The access-log records among complete lines (the server may be writing the last one)."""
    out = []
    for line in stderr.splitlines(keepends=True):
        if line.startswith("{") and '"otel_perf.access"' in line and line.endswith("\n"):
            out.append(json.loads(line))
    return out


def test_access_log_line_has_every_field_and_the_trace_id(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    db_url, _ = sqlite_urls(tmp_path)
    env = {
        "OTEL_PERF_ACCESS_LOG": "true",
        "OTEL_PERF_ENDUSER_FROM": "header:X-User-Id",
        "OTEL_PERF_TENANT_FROM": "baggage:tenant.id",
        "OTEL_PERF_TENANT_METRIC_VALUES": "2",
    }
    svc = start_service(app_process, otlp_receiver, db_url, env=env)
    r = httpx.get(svc.base + "/items/3", headers={"X-User-Id": "alice", "baggage": "tenant.id=acme"})
    assert r.status_code == 200
    trace_id = r.headers["traceresponse"].split("-")[1]
    for tenant in ("globex", "initech", "umbrella"):
        httpx.get(svc.base + "/private", headers={"baggage": f"tenant.id={tenant}"})

    otlp_receiver.wait_for(lambda: otlp_receiver.logs("GET /items/{item_id} 200"), timeout=20,
                           what="the access-log record over OTLP")  # fmt: skip
    line = next(x for x in _access_lines(svc.proc.stderr()) if x.get("http.route") == "/items/{item_id}")
    assert {k: line.get(k) for k in FIELDS} == FIELDS, line
    assert line["trace_id"] == trace_id and len(line["span_id"]) == 16
    assert line["perf.duration_ms"] > 0 and line["perf.db.duration_ms"] >= 0
    assert line["http.response.body.size"] == len(r.content)
    assert line["level"] == "INFO" and line["message"].startswith("GET /items/{item_id} 200 ")
    (refused, *_) = otlp_receiver.wait_for(
        lambda: [x for x in _access_lines(svc.proc.stderr()) if x.get("http.route") == "/private"],
        what="the /private request's access-log line",
    )
    assert refused["http.response.status_code"] == 401 and "enduser.id" not in refused

    (record,) = otlp_receiver.logs("GET /items/{item_id} 200")
    assert record.trace_id == trace_id
    assert {k: record.attributes.get(k) for k in FIELDS} == FIELDS

    # The SERVER span and the app's own log record of the request carry the user and the tenant.
    (span,) = otlp_receiver.wait_for(  # spans and logs leave in exports of their own
        lambda: otlp_receiver.spans(name="GET /items/{item_id}", kind="SERVER"), what="the SERVER span"
    )
    assert (span.attributes["enduser.id"], span.attributes["tenant.id"]) == ("alice", "acme")
    (app_record,) = otlp_receiver.logs("fetching item 3")
    assert (app_record.attributes["enduser.id"], app_record.attributes["tenant.id"]) == ("alice", "acme")

    # A metric gets the tenant only bounded (2 tenants, then _OTHER), and never the user.
    name = "perf.tenant.request.duration"
    otlp_receiver.wait_for(lambda: otlp_receiver.histogram_count(name) == 5, timeout=30, what="tenant metric")
    tenants = {p.attributes.get("tenant.id"): p.count for p in otlp_receiver.latest_points(name)}
    assert tenants == {"acme": 1, "globex": 1, "_OTHER": 2, None: 1}, tenants  # None: the readiness probe
    assert not [p for p in otlp_receiver.metric_points() if "enduser.id" in p.attributes]


def test_without_the_settings_no_access_log_and_no_user(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    db_url, _ = sqlite_urls(tmp_path)
    svc = start_service(app_process, otlp_receiver, db_url)
    assert httpx.get(svc.base + "/items/3", headers={"X-User-Id": "alice"}).status_code == 200
    otlp_receiver.wait_for(lambda: otlp_receiver.spans(name="GET /items/{item_id}"), what="the span")
    assert not _access_lines(svc.proc.stderr())
    (span,) = otlp_receiver.wait_for(  # spans and logs leave in exports of their own
        lambda: otlp_receiver.spans(name="GET /items/{item_id}", kind="SERVER"), what="the SERVER span"
    )
    assert "enduser.id" not in span.attributes
    assert "perf.tenant.request.duration" not in otlp_receiver.metric_names()


def test_wsgi_requests_log_as_asgi_ones_do(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess]
) -> None:
    """A WSGI app's access log: a list body's size without Content-Length, and a streamed body the
    client left after its first chunk logged in its request's context (trace id, user) when the
    server closes it."""
    port = free_port()
    env = {"PYTHONPATH": str(APPS), "OTEL_PERF_ACCESS_LOG": "true"}
    env["OTEL_PERF_ENDUSER_FROM"] = "header:X-User-Id"
    gunicorn = [str(BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "raw_apps:wsgi_app"]
    proc, base = serve(app_process, otlp_receiver, gunicorn, port, env, ready="/ready")

    missing = httpx.get(base + "/missing", headers={"X-User-Id": "alice"})
    assert missing.status_code == 404
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-Id: bob\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
    # The socket closed with data unread: the server's next write fails and it closes the body.
    traceresponse = next(
        line for line in head.decode("latin-1").split("\r\n") if line.lower().startswith("traceresponse:")
    )
    stream_trace = traceresponse.split(":", 1)[1].strip().split("-")[1]

    def lines() -> list[dict[str, Any]]:
        return [x for x in _access_lines(proc.stderr()) if x.get("enduser.id") in ("alice", "bob")]

    otlp_receiver.wait_for(lambda: len(lines()) == 2 or None, timeout=20, what="both access-log lines")
    by_user = {x["enduser.id"]: x for x in lines()}
    assert by_user["alice"]["http.response.body.size"] == len(missing.content) == 7
    assert by_user["alice"]["trace_id"] == missing.headers["traceresponse"].split("-")[1]
    streamed = by_user["bob"]
    assert streamed["trace_id"] == stream_trace and streamed["http.response.status_code"] == 200
    assert 0 < streamed["http.response.body.size"] < 100 * 65536
