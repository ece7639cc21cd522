"""OTEL_SEMCONV_STABILITY_OPT_IN=http/dup and database/dup: the old conventions beside the stable ones.

In process, through the real cores: a request to an ASGI app and to a WSGI app, an outgoing
call, a sqlite3 statement and a Redis command, each span and metric point checked for the old
attribute names and values the official instrumentations set in these modes (``_semconv.py``).
The same comparison against the official instrumentations themselves, served under uvicorn, is
``test_conformance.py`` (its http/dup run).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_perf._config import load
from otel_perf._core import semconv_dup
from otel_perf._core.commands import Commands, CommandTarget
from otel_perf._core.outgoing import OutgoingCalls
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._core.server import ServerCore
from otel_perf._integrations import sqlite3 as sqlite_adapter
from otel_perf._integrations.asgi import PerfMiddleware
from otel_perf._integrations.wsgi import PerfWSGIMiddleware
from otel_perf._metrics.bridge import _attributes
from otel_perf._metrics.instruments import Histogram, Registry


class _Setup:
    def __init__(self, opt_in: str) -> None:
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.memory = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.registry = Registry()
        config = load({"OTEL_SEMCONV_STABILITY_OPT_IN": opt_in, "OTEL_TRACES_SAMPLER": "always_on"})
        self.rt = Runtime(
            config, self.provider.get_tracer("otel_perf"), self.registry, build_instruments(self.registry),
            Resource({}),
        )  # fmt: skip
        http_dup, self.rt.old_db = semconv_dup.modes(config)
        if http_dup:  # what the bootstrap does
            self.rt.old_http = semconv_dup.OldHttpMetrics(self.registry)

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.memory.get_finished_spans() if s.kind == kind]

    def points(self, name: str) -> list[tuple[dict[str, Any], float, int]]:
        """(attributes, sum, count) of each series of histogram ``name``."""
        inst = self.registry._instruments[name]
        assert isinstance(inst, Histogram)
        return [(_attributes(inst.attribute_names, s.key), s.sum, s.count) for s in inst.series()]


@pytest.fixture
def dup() -> Iterator[_Setup]:
    setup = _Setup("http/dup,database/dup")
    yield setup
    setup.provider.shutdown()


async def _empty_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"created"})


def _asgi_request(middleware: Any) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/items", "raw_path": b"/items", "query_string": b"page=2&token=s3cret",
        "root_path": "",
        "headers": [(b"host", b"shop.example:8443"), (b"user-agent", b"probe/1.0"),
                    (b"content-length", b"12")],
        "client": ("10.0.0.7", 50123), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{...12 bytes}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(middleware(scope, receive, send))


def test_a_server_request_carries_the_old_attributes_and_is_in_the_old_metrics(dup: _Setup) -> None:
    _asgi_request(PerfMiddleware(_app, dup.rt))
    [span] = dup.spans(SpanKind.SERVER)
    attrs = dict(span.attributes or {})
    assert attrs["http.request.method"] == "POST" and attrs["http.response.status_code"] == 201  # stable kept
    old = {k: v for k, v in attrs.items() if k.startswith(("http.", "net."))}
    assert old == {
        "http.request.method": "POST",
        "http.response.status_code": 201,
        "http.method": "POST",
        "http.scheme": "http",
        "http.flavor": "1.1",
        "http.host": "127.0.0.1:8000",  # the listening socket, as the official ASGI instrumentation
        "http.server_name": "shop.example:8443",  # the Host header
        "net.host.port": 8000,
        "http.target": "/items",  # the path, as the official ASGI instrumentation
        "http.url": "http://shop.example:8443/items?page=2&token=REDACTED",  # redacted as url.query is
        "http.user_agent": "probe/1.0",
        "net.peer.ip": "10.0.0.7",
        "net.peer.port": 50123,
        "http.status_code": 201,
    }
    [(key, total, count)] = dup.points("http.server.duration")
    assert count == 1 and total == round(total) >= 0, "milliseconds, rounded as the official one records"
    assert key == {
        "http.method": "POST", "http.host": "127.0.0.1:8000", "http.scheme": "http", "http.status_code": 201,
        "http.flavor": "1.1", "http.server_name": "shop.example:8443", "net.host.port": 8000,
    }  # fmt: skip  (no route matched: no http.target)
    [(_, size, _)] = dup.points("http.server.response.size")
    [(_, request_size, _)] = dup.points("http.server.request.size")
    assert (size, request_size) == (7, 12)
    _asgi_request(PerfMiddleware(_empty_app, dup.rt))
    assert [c for _, _, c in dup.points("http.server.response.size")] == [1], "an empty body: no point"
    assert dup.points("http.server.request.duration")[0][2] == 1, "the stable metric is recorded as before"


def test_the_old_server_metrics_carry_the_route_and_wsgi_host_names(dup: _Setup) -> None:
    from wsgiref.util import setup_testing_defaults

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = PerfWSGIMiddleware(app, dup.rt, route_of=lambda environ, work: "/orders/{id}")
    environ: dict[str, Any] = {
        "PATH_INFO": "/orders/7", "QUERY_STRING": "a=1", "HTTP_HOST": "shop.example", "SERVER_NAME": "web-1",
        "SERVER_PORT": "8080", "REMOTE_ADDR": "10.0.0.9", "REMOTE_PORT": "4000",
    }  # fmt: skip
    setup_testing_defaults(environ)
    body = middleware(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"ok"
    getattr(body, "close", lambda: None)()
    [(key, _, count)] = dup.points("http.server.duration")
    assert count == 1
    assert key["http.target"] == "/orders/{id}", "the route, never the raw path (as the official one)"
    assert (key["http.host"], key["http.server_name"], key["net.host.port"], key["net.host.name"]) == (
        "shop.example", "web-1", 8080, "shop.example",
    )  # fmt: skip  (the WSGI instrumentation's names: Host header, SERVER_NAME)
    assert dup.points("http.server.response.size") == [], "the official WSGI one records no old sizes"
    [span] = dup.spans(SpanKind.SERVER)
    attrs = dict(span.attributes or {})
    assert attrs["http.target"] == "/orders/7?a=1" and "http.url" not in attrs  # gunicorn's RAW_URI
    assert (attrs["http.host"], attrs["net.host.name"], attrs["http.server_name"]) == (
        "shop.example", "shop.example", "web-1",
    )  # fmt: skip


def test_an_outgoing_call_carries_the_old_attributes_and_is_in_http_client_duration(dup: _Setup) -> None:
    calls = OutgoingCalls(dup.rt, "httpx")
    headers: dict[str, str] = {}
    call = calls.start("GET", "https://user:pw@api.example/v1?x=1", "api.example", None, "https",
                       headers.__setitem__)  # fmt: skip
    assert call is not None
    calls.end(call, 404, version="HTTP/1.1")
    named = calls.start("GET", "http://api.example:8080/v1", "api.example", 8080, "http", headers.__setitem__)
    assert named is not None
    calls.end(named, 200, version="HTTP/1.1", sizes=(5, 20))  # urllib3's: the body, Content-Length
    [span, span_named] = dup.spans(SpanKind.CLIENT)
    assert dict(span_named.attributes or {})["net.peer.port"] == 8080, "a port the URL names"
    assert [(total, count) for _, total, count in dup.points("http.client.request.size")] == [(5, 1)]
    assert [(total, count) for _, total, count in dup.points("http.client.response.size")] == [(20, 1)]
    assert dup.points("http.client.request.body.size")[0][1:] == (5, 1), "the stable one too"
    attrs = dict(span.attributes or {})
    assert (attrs["http.method"], attrs["http.status_code"], attrs["http.flavor"]) == ("GET", 404, "1.1")
    assert attrs["http.url"] == attrs["url.full"] and "pw" not in attrs["http.url"], "redacted as url.full"
    assert attrs["http.host"] == "api.example" and "net.peer.port" not in attrs, "no port in the URL: none"
    points = sorted(dup.points("http.client.duration"), key=lambda p: p[0]["http.status_code"])
    assert [(count, total == round(total)) for _, total, count in points] == [(1, True), (1, True)]
    assert [key for key, _, _ in points] == [
        {"http.status_code": 200, "http.host": "api.example", "http.method": "GET", "http.flavor": "1.1",
         "http.scheme": "http", "net.peer.port": 8080, "net.peer.name": "api.example"},
        {"http.status_code": 404, "http.host": "api.example", "http.method": "GET", "http.flavor": "1.1",
         "http.scheme": "https", "net.peer.name": "api.example"},
    ]  # fmt: skip


def test_statements_and_commands_carry_the_old_database_names(dup: _Setup) -> None:
    sqlite_adapter.install(dup.rt, sqlite3)
    try:
        with dup.rt.tracer.start_as_current_span("unit"):
            db = sqlite3.connect(":memory:")
            db.execute("SELECT 1 WHERE 1 = 1")
            db.close()
            redis = CommandTarget("redis", "127.0.0.1", 6379, "0")
            Commands(dup.rt).record(redis, "GET", 0.001, "", arguments=2)
    finally:
        sqlite_adapter.uninstall()
    spans = [dict(s.attributes or {}) for s in dup.spans(SpanKind.CLIENT)]
    by_system = {attrs["db.system.name"]: attrs for attrs in spans}
    sql, command = by_system["sqlite"], by_system["redis"]
    assert (sql["db.system"], sql["db.operation"]) == ("sqlite", "SELECT")
    assert sql["db.statement"] == sql["db.query.text"]
    assert (command["db.system"], command["db.statement"], command["db.redis.database_index"]) == (
        "redis", "GET ?", 0,
    )  # fmt: skip  (the official Redis instrumentation's: the number, no db.name)
    assert (command["net.peer.name"], command["net.peer.port"]) == ("127.0.0.1", 6379)
    assert "db.name" not in command


def test_the_default_adds_nothing_and_takes_the_plain_paths() -> None:
    setup = _Setup("http,database")
    try:
        assert setup.rt.old_http is None and setup.rt.old_db is False
        core = ServerCore(setup.rt)
        assert "finish" not in vars(core) and "start_attributes" not in vars(core), "the default's methods"
        calls = OutgoingCalls(setup.rt)
        assert "_record" not in vars(calls) and "_start_attributes" not in vars(calls)
        _asgi_request(PerfMiddleware(_app, setup.rt))
        [span] = setup.spans(SpanKind.SERVER)
        assert not {"http.method", "http.status_code", "http.target"} & set(span.attributes or {})
        assert "http.server.duration" not in setup.registry._instruments
    finally:
        setup.provider.shutdown()
