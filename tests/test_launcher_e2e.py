"""Issue 2 acceptance: the launcher wires traces, metrics and logs into a real app.

A real OTLP/HTTP receiver decodes what the exporters send; the sample service runs as a
subprocess under ``otel-perf-instrument uvicorn``; requests go over real sockets.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import Service, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver, Span
from support.procs import AppProcess

# The `matrix` ones (.ci/matrix, oldest and newest versions): spans with semconv, SQL sync and async,
# DB metrics and pool, routes of routers and mounts, logs, the httpx client span.
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def db_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return sqlite_urls(tmp_path)
    pg = request.getfixturevalue("postgres_server")
    name = f"db_{abs(hash(request.node.name)) % 10**8}"
    url = pg.create_database(name)
    return url, url


@pytest.fixture
def service(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], db_urls: tuple[str, str]
) -> Service:
    sync_url, async_url = db_urls
    return start_service(app_process, otlp_receiver, sync_url, async_db_url=async_url)


@pytest.mark.matrix
@pytest.mark.sqlalchemy
def test_server_span_has_route_template_and_semconv_attributes(
    service: Service, otlp_receiver: OTLPReceiver
) -> None:
    r = httpx.get(service.base + "/items/7?token=abc&page=2")
    assert r.status_code == 200
    spans = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER")
    span = spans[0]
    assert span.attributes["http.route"] == "/items/{item_id}"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/items/7"
    assert span.attributes["url.query"] == "token=REDACTED&page=2"
    assert span.attributes["perf.db.query_count"] == 1
    assert span.resource["service.name"] == "service"
    assert span.resource["telemetry.distro.name"] == "otel-perf-instrument"


@pytest.mark.matrix
@pytest.mark.sqlalchemy
def test_sql_child_spans_sync_and_async(service: Service, otlp_receiver: OTLPReceiver) -> None:
    httpx.get(service.base + "/items/2")
    httpx.get(service.base + "/async-items/3")
    for route in ("/items/{item_id}", "/async-items/{item_id}"):
        server = otlp_receiver.wait_for_spans(name=f"GET {route}", kind="SERVER")[0]
        children = otlp_receiver.wait_for(
            lambda s=server: [c for c in otlp_receiver.spans(kind="CLIENT") if c.parent_span_id == s.span_id],
            what=f"SQL spans under {route}",
        )
        sql = children[0]
        assert sql.name == "SELECT orders"
        assert sql.trace_id == server.trace_id
        assert sql.attributes["db.operation.name"] == "SELECT"
        assert sql.attributes["db.collection.name"] == "orders"
        assert sql.attributes["db.system.name"] in ("sqlite", "postgresql")
        assert "?" in sql.attributes["db.query.text"] or "%" not in sql.attributes["db.query.text"]


@pytest.mark.sqlalchemy
def test_failed_statement_is_measured_with_its_error(service: Service, otlp_receiver: OTLPReceiver) -> None:
    """A statement the database refuses: an ERROR span and a duration point naming the error."""
    error = httpx.get(service.base + "/orders/broken").json()
    assert error not in ("", "no error")
    server = otlp_receiver.wait_for_spans(name="GET /orders/broken", kind="SERVER")[0]
    children = otlp_receiver.wait_for(
        lambda: [c for c in otlp_receiver.spans(kind="CLIENT") if c.parent_span_id == server.span_id],
        what="SQL spans under /orders/broken",
    )
    by_table = {c.attributes.get("db.collection.name"): c for c in children}
    assert set(by_table) == {"customers", "no_such_table"}
    failed, ok = by_table["no_such_table"], by_table["customers"]
    assert failed.name == "SELECT no_such_table"
    assert failed.attributes["error.type"] == error
    assert failed.status_code == "ERROR"
    # As the official instrumentations: the exception event and a status description, scrubbed
    [event] = [e for e in failed.events if e.name == "exception"]
    assert event.attributes["exception.type"] == error
    message = event.attributes["exception.message"]  # SQLite: no such table: ...; PostgreSQL quotes it
    assert "no such table: no_such_table" in message or 'relation ? does not exist' in message
    assert failed.status_message == f"{error}: {message}"
    assert "hunter2-literal" not in repr(failed)
    assert "error.type" not in ok.attributes and ok.status_code == "UNSET"
    assert failed.end_ns > failed.start_ns
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count(
                "db.client.operation.duration", {"db.collection.name": "no_such_table", "error.type": error}
            )
            >= 1
        ),
        what="db.client.operation.duration for the failed statement",
    )


def test_one_server_span_per_request_no_duplicates(service: Service, otlp_receiver: OTLPReceiver) -> None:
    httpx.get(service.base + "/hello")
    otlp_receiver.wait_for_spans(name="GET /hello", kind="SERVER")
    httpx.get(service.base + "/items/1")  # a later request flushes anything still pending
    otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER")
    hello = [
        s for s in otlp_receiver.spans() if s.trace_id == otlp_receiver.spans(name="GET /hello")[0].trace_id
    ]
    # No ASGI send/receive sub-spans and no FastAPI-native dependency/endpoint spans.
    assert [s.name for s in hello] == ["GET /hello"]


def test_traceresponse_header_matches_exported_span(service: Service, otlp_receiver: OTLPReceiver) -> None:
    r = httpx.get(service.base + "/hello")
    version, trace_id, span_id, flags = r.headers["traceresponse"].split("-")
    assert (version, flags[-1]) == ("00", "1") or (version, int(flags, 16) & 1) == ("00", 1)
    span = otlp_receiver.wait_for(
        lambda: otlp_receiver.spans(trace_id=trace_id), what=f"span of trace {trace_id}"
    )[0]
    assert (span.name, span.kind, span.span_id) == ("GET /hello", "SERVER", span_id)


def test_http_metrics_use_route_templates(service: Service, otlp_receiver: OTLPReceiver) -> None:
    for i in range(3):
        httpx.get(f"{service.base}/items/{i + 1}")
    httpx.get(service.base + "/no/such/path/123")
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count("http.server.request.duration", {"http.route": "/items/{item_id}"})
            >= 3
        ),
        what="3 requests counted under /items/{item_id}",
    )
    routes = {
        p.attributes.get("http.route") for p in otlp_receiver.metric_points("http.server.request.duration")
    }
    assert "/items/{item_id}" in routes
    assert not any(r and "/items/1" in r for r in routes)
    assert not any(r and "/no/such" in r for r in routes)  # unmatched paths collapse to one series
    point = otlp_receiver.latest_points("http.server.request.duration", {"http.route": "/items/{item_id}"})[0]
    assert point.unit == "s"
    assert point.attributes["http.response.status_code"] == 200
    assert otlp_receiver.wait_for_metric("http.server.active_requests")


@pytest.mark.matrix
def test_routes_of_included_routers_and_mounts_keep_every_prefix(
    service: Service, otlp_receiver: OTLPReceiver
) -> None:
    """FastAPI 0.165 includes routers lazily (scope["route"] is the inner route): the exported
    route is still the full template, and two prefixes of one router stay two routes.  A request
    to the mounted FastAPI app is measured once: one SERVER span, one duration point, one
    ``traceresponse`` (the sub-app's own middleware joins the outer app's unit)."""
    paths = {
        "/api/v1/shop/items/3": "/api/v1/shop/items/{item_id}",
        "/api/v2/shop/items/4": "/api/v2/shop/items/{item_id}",
        "/sub/ping/alice": "/sub/ping/{name}",
        "/sub/nested/items/5": "/sub/nested/items/{item_id}",
    }
    for path in paths:
        response = httpx.get(service.base + path)
        assert response.status_code == 200, path
        assert len(response.headers.get_list("traceresponse")) == 1, path
    for path, route in paths.items():
        span = otlp_receiver.wait_for_spans(name=f"GET {route}", kind="SERVER")[0]
        assert span.attributes["http.route"] == route
        assert span.attributes["url.path"] == path
    for route in paths.values():
        otlp_receiver.wait_for(
            lambda route=route: otlp_receiver.histogram_count(
                "http.server.request.duration", {"http.route": route}
            )
            >= 1,
            what=f"http.server.request.duration for {route}",
        )
        count = otlp_receiver.histogram_count("http.server.request.duration", {"http.route": route})
        assert count == 1, route
        assert len(otlp_receiver.spans(name=f"GET {route}", kind="SERVER")) == 1, route
    shop_spans = [s for s in otlp_receiver.spans(kind="SERVER") if s.name.endswith("/shop/items/{item_id}")]
    assert {s.name for s in shop_spans} == {
        "GET /api/v1/shop/items/{item_id}",
        "GET /api/v2/shop/items/{item_id}",
    }


@pytest.mark.matrix
@pytest.mark.sqlalchemy
def test_db_operation_duration_and_pool_metrics(service: Service, otlp_receiver: OTLPReceiver) -> None:
    httpx.get(service.base + "/items/5")
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count(
                "db.client.operation.duration",
                {"db.operation.name": "SELECT", "db.collection.name": "orders"},
            )
            >= 1
        ),
        what="db.client.operation.duration for SELECT orders",
    )
    pool = otlp_receiver.wait_for_metric("db.client.connection.count")
    assert {p.attributes["db.client.connection.state"] for p in pool} >= {"idle", "used"}
    for name in ("process.cpu.time", "process.memory.usage", "cpython.gc.collections"):
        assert otlp_receiver.wait_for_metric(name)


@pytest.mark.matrix
def test_logs_carry_trace_ids(service: Service, otlp_receiver: OTLPReceiver) -> None:
    r = httpx.get(service.base + "/log")
    trace_id = r.json()["logged"]
    records = otlp_receiver.wait_for_logs("inside the request")
    assert records[0].trace_id == trace_id
    assert records[0].severity_number == 13  # WARN
    # The same record on stderr, as one JSON object per line (the default OTEL_PERF_LOG_FORMAT=json).
    otlp_receiver.wait_for(lambda: f'"trace_id": "{trace_id}"' in service.proc.output(), what="JSON log line")


@pytest.mark.matrix
def test_client_span_joins_the_peer_service_trace(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, async_url = sqlite_urls(tmp_path)
    peer = start_service(app_process, otlp_receiver, url, async_db_url=async_url, name="peer")
    front = start_service(app_process, otlp_receiver, url, peer=peer.base, name="front")
    for path in ("/call-peer?style=client", "/call-peer?style=module", "/call-peer-async"):
        assert httpx.get(front.base + path).json()["peer_status"] == 200

    def servers_of(name: str) -> list[Span]:
        spans = [s for s in otlp_receiver.spans(kind="SERVER") if s.resource["service.name"] == name]
        return spans if len(spans) >= 3 else []

    clients = otlp_receiver.wait_for(
        lambda: (
            [
                s
                for s in otlp_receiver.spans(kind="CLIENT")
                if s.resource["service.name"] == "front" and "http.request.method" in s.attributes
            ][2:]
            and [
                s
                for s in otlp_receiver.spans(kind="CLIENT")
                if s.resource["service.name"] == "front" and "http.request.method" in s.attributes
            ]
        ),
        what="three httpx CLIENT spans",
    )
    for client in clients:
        peer_span = otlp_receiver.wait_for(
            lambda c=client: next((p for p in servers_of("peer") if p.parent_span_id == c.span_id), None),
            what=f"peer server span under client span {client.span_id}",
        )
        assert peer_span.trace_id == client.trace_id
        front_span = otlp_receiver.wait_for(
            lambda c=client: next((f for f in servers_of("front") if f.span_id == c.parent_span_id), None),
            what=f"front server span above client span {client.span_id}",
        )
        assert front_span.trace_id == client.trace_id
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count("http.client.request.duration", {"server.address": "127.0.0.1"})
            >= 3
        ),
        what="three client request durations",
    )


def test_asgi_subspans_can_be_turned_on(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, _ = sqlite_urls(tmp_path)
    svc = start_service(app_process, otlp_receiver, url, env={"OTEL_PERF_ASGI_SUBSPANS": "true"})
    httpx.get(svc.base + "/hello")
    server = otlp_receiver.wait_for_spans(name="GET /hello", kind="SERVER")[0]
    subs = otlp_receiver.wait_for(
        lambda: [
            s for s in otlp_receiver.spans() if s.parent_span_id == server.span_id and s.name == "http send"
        ],
        what="http send sub-spans",
    )
    assert subs


def test_sqlalchemy_2_0_is_instrumented_too(
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
    sqlalchemy_20_path: str,
) -> None:
    url, _ = sqlite_urls(tmp_path)
    svc = start_service(app_process, otlp_receiver, url, python_path=sqlalchemy_20_path)
    r = httpx.get(svc.base + "/items/1")
    assert r.status_code == 200
    version = subprocess.run(
        [sys.executable, "-c", "import sqlalchemy; print(sqlalchemy.__version__)"],
        env={"PYTHONPATH": sqlalchemy_20_path},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith("2.0."), version
    server = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER")[0]
    assert otlp_receiver.wait_for(
        lambda: [c for c in otlp_receiver.spans(kind="CLIENT") if c.parent_span_id == server.span_id],
        what="SQL span with SQLAlchemy 2.0",
    )


def test_standard_switches_excluded_urls_disabled_instrumentations_sdk_disabled(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, _ = sqlite_urls(tmp_path)
    svc = start_service(
        app_process,
        otlp_receiver,
        url,
        env={
            "OTEL_PYTHON_EXCLUDED_URLS": "/hello,/health.*",
            # SQLAlchemy runs over sqlite3: with both layers off no statement is seen
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy,sqlite3",
        },
    )
    assert "traceresponse" not in httpx.get(svc.base + "/hello").headers
    r = httpx.get(svc.base + "/items/1")
    trace_id = r.headers["traceresponse"].split("-")[1]
    server = otlp_receiver.wait_for(lambda: otlp_receiver.spans(trace_id=trace_id), what="items span")[0]
    assert server.kind == "SERVER"
    assert server.attributes["perf.db.query_count"] == 0
    assert not otlp_receiver.spans(name="GET /hello")
    assert not [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]

    off = start_service(app_process, otlp_receiver, url, env={"OTEL_SDK_DISABLED": "true"}, name="off")
    assert "traceresponse" not in httpx.get(off.base + "/items/1").headers
    off.proc.stop()
    assert not [s for s in otlp_receiver.spans() if s.resource.get("service.name") == "off"]


def test_system_metrics_can_be_switched_off(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    url, _ = sqlite_urls(tmp_path)
    quiet = start_service(
        app_process, otlp_receiver, url, env={"OTEL_PERF_SYSTEM_METRICS": "false"}, name="no-system-metrics"
    )
    loud = start_service(app_process, otlp_receiver, url, name="system-metrics")
    for svc in (quiet, loud):
        httpx.get(svc.base + "/items/1")

    def names_of(service: str) -> set[str]:
        return {p.name for p in otlp_receiver.metric_points() if p.resource.get("service.name") == service}

    # Both export: the request histogram arrives from each, the process metrics only from one.
    otlp_receiver.wait_for(
        lambda: (
            {"http.server.request.duration", "process.cpu.time"} <= names_of("system-metrics")
            and "http.server.request.duration" in names_of("no-system-metrics")
        ),
        what="request metrics from both services, process metrics from the one with them on",
    )
    quiet_names = names_of("no-system-metrics")
    assert not {"process.cpu.time", "process.memory.usage", "cpython.gc.collections"} & quiet_names
    assert "perf.process.memory.limit" in quiet_names  # ours, not the system-metrics instrumentation


@pytest.mark.matrix
@pytest.mark.sqlalchemy
def test_pool_exhaustion_is_measured(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    import threading

    url, _ = sqlite_urls(tmp_path)
    svc = start_service(app_process, otlp_receiver, url)
    # Held long enough that the next export (0.5 s) shows it and the second checkout still waits.
    holder = threading.Thread(target=lambda: httpx.get(svc.base + "/pool/hold?ms=3000", timeout=10))
    holder.start()
    otlp_receiver.wait_for(
        lambda: httpx.get(svc.base + "/pool/checked-out").json() == 1, what="the holder's checkout"
    )
    assert httpx.get(svc.base + "/pool/use").json() == {"error": "TimeoutError"}
    otlp_receiver.wait_for(
        lambda: any(
            p.value == 1
            for p in otlp_receiver.latest_points(
                "db.client.connection.count", {"db.client.connection.state": "used"}
            )
        ),
        what="the small pool's one connection in use",
    )
    holder.join()
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("db.client.connection.timeouts") == 1, what="one pool timeout counted"
    )
    assert otlp_receiver.wait_for_metric("db.client.connection.pending_requests")
    maxima = {p.value for p in otlp_receiver.latest_points("db.client.connection.max")}
    assert 1 in maxima


def test_load_test_baggage_tags_the_server_span(service: Service, otlp_receiver: OTLPReceiver) -> None:
    r = httpx.get(service.base + "/hello", headers={"baggage": "perf.loadtest.run_id=run-42,other=x"})
    trace_id = r.headers["traceresponse"].split("-")[1]
    span = otlp_receiver.wait_for(lambda: otlp_receiver.spans(trace_id=trace_id), what="tagged span")[0]
    assert span.attributes["perf.loadtest.run_id"] == "run-42"
    assert "other" not in span.attributes
