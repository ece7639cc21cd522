"""Issue 19, in process: the pieces of the Django/Flask/WSGI support that need no server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from otel_perf._analysis.findings import FindingStore, recommend_n_plus_one
from otel_perf._core import server as server_module
from otel_perf._integrations import apps, logs, wsgi


def _record(**extra: Any) -> logging.LogRecord:
    return logging.getLogger("django.request").makeRecord(
        "django.request", logging.WARNING, __file__, 1, "Not Found: %s", ("/x",), None, extra=extra
    )


class _Request:
    def __repr__(self) -> str:
        return "<WSGIRequest: GET '/x?token=secret'>"


def test_otlp_records_leave_out_extras_that_are_no_attribute_values() -> None:
    request = _Request()
    record = _record(status_code=404, request=request, tags=["a", "b"], nested={"k": [1, 2]}, bad=[object()])
    exported = logs.exportable(record)
    assert exported is not record, "the record other handlers see must not change"
    assert record.request is request  # type: ignore[attr-defined]
    kept = vars(exported)
    assert kept["status_code"] == 404 and kept["tags"] == ["a", "b"] and kept["nested"] == {"k": [1, 2]}
    assert "request" not in kept and "bad" not in kept
    assert exported.getMessage() == "Not Found: /x"
    clean = _record(status_code=404)
    assert logs.exportable(clean) is clean, "a record with valid extras is passed as it is (no copy)"


def test_n_plus_one_advice_names_the_django_orm_tools() -> None:
    django = recommend_n_plus_one("GET polls/", "polls_question", "django")
    assert "select_related()" in django and "prefetch_related()" in django and "polls_question" in django
    assert "selectinload" in recommend_n_plus_one("GET /orders", "customers")
    store = FindingStore()
    advice = store.add_n_plus_one("polls/", "GET", "SELECT ...", 10, "ab" * 16, "polls_question", "django")
    assert "select_related" in advice


def test_framework_of_finds_framework_apps_through_wrappers() -> None:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.middleware.proxy_fix import ProxyFix

    def plain(environ: Any, start_response: Any) -> list[bytes]:
        return []

    app = Flask("t")
    assert apps.framework_of(app) == "Flask"
    assert apps.framework_of(ProxyFix(app)) == "Flask"
    assert apps.framework_of(ProxyFix(ProxyFix(app.wsgi_app))) == "Flask"  # a bound method's app
    assert apps.framework_of(plain) == ""
    # A dispatcher's default app decides: a Flask app mounted beside a plain one joins its units.
    assert apps.framework_of(DispatcherMiddleware(plain, {"/f": app})) == ""
    assert apps.framework_of(DispatcherMiddleware(app, {"/p": plain})) == "Flask"
    cycle: Any = ProxyFix(plain)
    cycle.app = cycle
    assert apps.framework_of(cycle) == ""
    assert apps.describe(plain).endswith(
        ":test_framework_of_finds_framework_apps_through_wrappers.<locals>.plain"
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", ("example.com", 0)),
        ("example.com:8080", ("example.com", 8080)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::1]", ("::1", 0)),
        ("", ("", 0)),
    ],
)
def test_host_header_split(host: str, expected: tuple[str, int]) -> None:
    from otel_perf._core.server import _host_and_port

    assert _host_and_port(host) == expected


def test_route_of_a_wsgi_request() -> None:
    class Rule:
        rule = "/orders/<int:order_id>"

    class Request:
        url_rule = Rule()

    class Work:
        name = ""

    assert wsgi.route_from_work({"werkzeug.request": Request()}, Work()) == "/orders/<int:order_id>"  # type: ignore[arg-type]
    assert wsgi.route_from_work({"werkzeug.request": None}, Work()) == ""  # type: ignore[arg-type]
    assert wsgi.route_from_work({}, Work()) == ""  # type: ignore[arg-type]
    named = Work()
    named.name = "polls/"
    assert wsgi.route_from_work({"werkzeug.request": Request()}, named) == "polls/"  # type: ignore[arg-type]


def test_the_readme_library_table_is_generated_from_the_registry() -> None:
    from pathlib import Path

    from otel_perf._integrations import REGISTRY, markdown_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = markdown_table()
    assert table in readme, "README library table is stale: paste `otel-perf instrumentations --markdown`"
    assert readme.count("| Library (oldest supported) |") == 1, "one library table, the generated one"
    rows = table.splitlines()[2:]
    for line, row in zip(rows, REGISTRY, strict=True):
        assert f"`{row.name}`" in line.split("|")[5], f"{row.name}: its switch-off name is missing"


def _requires(distribution: str) -> list[str]:
    from importlib import metadata

    try:
        return metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []


def test_every_extra_the_registry_names_exists_and_installs_its_library() -> None:
    import re
    from importlib import metadata

    from otel_perf._integrations import REGISTRY

    extras: dict[str, set[str]] = {}
    for requirement in metadata.requires("otel-perf-instrument") or []:
        found = re.search(r"extra\s*==\s*[\"']([^\"']+)", requirement)
        if found:
            name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            extras.setdefault(found.group(1), set()).add(name)
    for row in REGISTRY:
        if not row.extra:
            continue
        assert row.extra in extras, f"{row.name}: no extra [{row.extra}] in pyproject.toml"
        if row.library:
            brought = set(extras[row.extra])
            for package in extras[row.extra]:  # fastapi brings starlette
                brought |= {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in _requires(package)}
            assert row.library.lower() in brought, f"[{row.extra}] does not install {row.library}"
        for name in row.official:
            wanted = f"opentelemetry-instrumentation-{name}"
            assert wanted in extras[row.extra], f"[{row.extra}] does not install {wanted}"


def test_connection_attributes_are_each_requests_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection attributes built once per connection are the right ones for every
    request, whatever order they come in (Host and user agent may change on one connection);
    a server giving lists for the addresses gets them too; the connections kept are bounded."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perf._config import load
    from otel_perf._core.runtime import Runtime, build_instruments
    from otel_perf._core.server import ServerCore
    from otel_perf._metrics.instruments import Registry

    registry = Registry()
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("otel_perf")
    core = ServerCore(Runtime(load({}), tracer, registry, build_instruments(registry), Resource({})))

    def attrs(client: Any, host: str = "example.com:8443", agent: str = "curl/8") -> dict[str, Any]:
        return core.start_attributes(
            "GET", "GET", "/x", "a=1", "https", "1.1", host, ("10.0.0.9", 80), client, agent
        )

    first = attrs(("10.0.0.1", 5001))
    second = attrs(("10.0.0.2", 5002), host="", agent="")
    listed = attrs(["10.0.0.3", 5003])
    again = attrs(("10.0.0.1", 5001))
    assert first == again == {
        "http.request.method": "GET", "url.path": "/x", "url.query": "a=1", "url.scheme": "https",
        "network.protocol.version": "1.1", "server.address": "example.com", "server.port": 8443,
        "client.address": "10.0.0.1", "client.port": 5001, "user_agent.original": "curl/8",
    }  # fmt: skip
    assert first is not again  # each span its own dict
    assert (second["client.address"], second["client.port"]) == ("10.0.0.2", 5002)
    assert (second["server.address"], second["server.port"]) == ("10.0.0.9", 80)  # the socket's
    assert "user_agent.original" not in second
    assert (listed["client.address"], listed["client.port"]) == ("10.0.0.3", 5003)
    method = core.start_attributes("_OTHER", "PURGE", "/y", "", "http", "1.0", "h", None, None, "")
    assert method["http.request.method_original"] == "PURGE" and "client.address" not in method
    # one connection, another Host and user agent
    other = attrs(("10.0.0.1", 5001), host="other.example", agent="wget/1")
    assert (other["server.address"], other.get("server.port")) == ("other.example", None)
    assert other["user_agent.original"] == "wget/1"
    assert attrs(("10.0.0.1", 5001)) == first
    lists = core.start_attributes("GET", "GET", "/", "", "http", "1.1", "", ["10.0.0.8", 81], None, "")
    assert (lists["server.address"], lists["server.port"]) == ("10.0.0.8", 81)
    # raw header bytes (as ASGI gives them) give the same attributes as text
    raw = core.start_attributes(
        "GET", "GET", "/x", "a=1", "https", "1.1", b"example.com:8443", ("10.0.0.9", 80), ("10.0.0.1", 5001),
        b"curl/8",
    )
    assert raw == first
    latin_ua = "caf\xe9".encode("latin-1")
    latin = core.start_attributes("GET", "GET", "/", "", "http", "1.1", b"", None, None, latin_ua)
    assert latin["user_agent.original"] == "caf\xe9"
    # a connection's attributes are built once and shared, never changed by a request
    assert attrs(("10.0.0.1", 5001))["url.path"] == "/x" and not any(
        "url.path" in kept for kept in core._connections.values()
    )
    monkeypatch.setattr(server_module, "MAX_CACHED_CONNECTIONS", 2)
    for n in range(5):
        assert attrs(("10.0.0.1", 5001), host=f"h{n}.example:81")["server.address"] == f"h{n}.example"
    assert 0 < len(core._connections) <= 2
    long_host = "x" * 400
    assert attrs(None, host=long_host)["server.address"] == long_host[:256]
    assert not any(long_host in key for key in core._connections)
    long_agent = "a" * 600
    assert attrs(None, agent=long_agent)["user_agent.original"] == long_agent[:512]
    assert not any(long_agent in key for key in core._connections)


def test_server_spans_end_through_the_lean_end() -> None:
    """ServerCore.finish ends a recording SERVER span through SpanStarter.end (no ReadableSpan
    when our processor takes its fields), and that span is exported once."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_perf._config import load
    from otel_perf._core.runtime import Runtime, build_instruments
    from otel_perf._core.server import ServerCore
    from otel_perf._core.work import Work
    from otel_perf._metrics.instruments import Registry

    provider = TracerProvider(shutdown_on_exit=False)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    registry = Registry()
    tracer = provider.get_tracer("otel_perf")
    core = ServerCore(Runtime(load({}), tracer, registry, build_instruments(registry), Resource({})))
    ended: list[Any] = []
    end = core.spans.end
    core.spans.end = lambda span: (ended.append(span), end(span))  # type: ignore[method-assign]
    span = core.spans.start("GET", None, SpanKind.SERVER)
    work = Work("request", "", span, 10, "GET", None)
    core.finish(work, "/x", 200, "", 0.001)
    assert ended == [span] and not span.is_recording()
    assert [(s.name, s.attributes["http.route"]) for s in memory.get_finished_spans()] == [("GET /x", "/x")]


# --- excluded URLs: nothing of the request is traced or measured -----------------------------------


class _Excluded:
    """A runtime excluding ``^/health`` (OTEL_PYTHON_EXCLUDED_URLS), spans kept in memory, the
    sqlite3 adapter installed, and what an app does per request: a SQL statement, a Redis
    command (recorded as the Redis adapter does) and an outgoing call (as the HTTP clients do)."""

    def __init__(self, patterns: str = "^/health") -> None:
        import sqlite3

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from otel_perf._config import load
        from otel_perf._core.commands import Commands, CommandTarget
        from otel_perf._core.outgoing import OutgoingCalls
        from otel_perf._core.runtime import Runtime, build_instruments
        from otel_perf._integrations import sqlite3 as sqlite_adapter
        from otel_perf._metrics.instruments import Registry

        self.provider = TracerProvider(shutdown_on_exit=False)
        self.memory = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        registry = Registry()
        config = load({"OTEL_PYTHON_EXCLUDED_URLS": patterns, "OTEL_PERF_SLOW_QUERY_MS": "0"})
        tracer = self.provider.get_tracer("otel_perf")
        self.rt = Runtime(config, tracer, registry, build_instruments(registry), Resource({}))
        sqlite_adapter.install(self.rt, sqlite3)
        self.uninstall = sqlite_adapter.uninstall
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.commands = Commands(self.rt)
        self.redis = CommandTarget("redis", "127.0.0.1", 6379, "0")
        self.calls = OutgoingCalls(self.rt, "requests")
        self.traceparents: list[str] = []

    def work(self, statement: str) -> None:
        """What the app does while serving: one statement, one command, one outgoing call."""
        self.db.execute(statement)
        self.commands.record(self.redis, "GET", 0.001, "")
        headers: dict[str, str] = {}
        call = self.calls.start("GET", "http://peer.invalid/x", "peer.invalid", None, "http",
                                headers.__setitem__)
        if call is not None:
            self.calls.end(call, 200)
        self.traceparents.append(headers.get("traceparent", ""))

    def counts(self) -> dict[tuple[Any, ...], int]:
        """db.client.operation.duration points by (system, operation, collection, error)."""
        return {s.key[:4]: s.count for s in self.rt.inst.db_duration.series()}

    def close(self) -> None:
        self.uninstall()
        self.db.close()
        self.provider.shutdown()


@pytest.fixture
def excluded() -> Any:
    setup = _Excluded()
    try:
        yield setup
    finally:
        setup.close()


def _wsgi_get(app: Any, path: str) -> bytes:
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    body = app(environ, lambda status, headers, exc_info=None: None)
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def test_an_excluded_wsgi_request_traces_and_measures_nothing_it_does(excluded: _Excluded) -> None:
    """A request to an excluded URL gets no SERVER span, and its statements (in the app and while
    its streamed body is made), Redis commands and outgoing calls no root span, no duration
    point, no slow-query finding and no traceparent; a statement outside any request still
    gets its root span and point, and a measured request is as before."""
    excluded.db.execute("CREATE TABLE author (id INTEGER)")  # start-up: outside any request

    def app(environ: Any, start_response: Any) -> Any:
        excluded.work("SELECT id FROM author")
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"].endswith("/stream"):

            def chunks() -> Any:
                yield b"a"
                excluded.work("SELECT count(*) FROM author")  # while the body is sent
                yield b"b"

            return chunks()
        return [b"ok"]

    middleware = wsgi.PerfWSGIMiddleware(app, excluded.rt)
    assert _wsgi_get(middleware, "/health") == b"ok"
    assert _wsgi_get(middleware, "/health/stream") == b"ab"
    assert excluded.traceparents == ["", "", ""], "an excluded request's outgoing calls carry no traceparent"
    assert [q.operation for q in excluded.rt.findings.slow_queries] == ["CREATE"]  # every statement is slow
    spans = excluded.memory.get_finished_spans()
    assert [(s.name, s.parent) for s in spans] == [("CREATE", None)], "an excluded request's work was traced"
    assert excluded.counts() == {("sqlite", "CREATE", "", ""): 1}
    assert excluded.rt.inst.client_duration.series() == []

    assert _wsgi_get(middleware, "/orders") == b"ok"  # measured: its statement is its SERVER span's child
    server = next(s for s in excluded.memory.get_finished_spans() if s.kind == SpanKind.SERVER)
    children = [s for s in excluded.memory.get_finished_spans() if s.parent is not None]
    assert {s.parent.span_id for s in children} == {server.context.span_id}  # type: ignore[union-attr]
    assert sorted(s.name for s in children) == ["GET", "GET", "SELECT author"]
    assert excluded.traceparents[-1].split("-")[1] == f"{server.context.trace_id:032x}"
    assert excluded.counts() == {
        ("sqlite", "CREATE", "", ""): 1, ("sqlite", "SELECT", "author", ""): 1, ("redis", "GET", "", ""): 1,
    }  # fmt: skip
    assert len(excluded.rt.inst.client_duration.series()) == 1


def test_an_excluded_asgi_request_or_websocket_traces_and_measures_nothing_it_does(
    excluded: _Excluded,
) -> None:
    """The ASGI twin: an excluded request and an excluded websocket record nothing of what they
    run; the lifespan (start-up) keeps its root spans."""
    import asyncio

    from otel_perf._integrations.asgi import PerfMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            excluded.db.execute("CREATE TABLE author (id INTEGER)")
            return
        excluded.work("SELECT id FROM author")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0)
        excluded.work("SELECT count(*) FROM author")  # while the body is sent
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = PerfMiddleware(app, excluded.rt)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(kind: str, path: str) -> dict[str, Any]:
        return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                "root_path": "", "headers": [], "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 2)}  # fmt: skip

    async def serve() -> None:
        await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        await middleware(scope("http", "/health"), receive, send)
        await middleware(scope("websocket", "/health/ws"), receive, send)

    asyncio.run(serve())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body", "websocket.close"]
    assert excluded.traceparents == ["", "", ""]
    spans = excluded.memory.get_finished_spans()
    assert [(s.name, s.parent) for s in spans] == [("CREATE", None)], "an excluded request's work was traced"
    assert excluded.counts() == {("sqlite", "CREATE", "", ""): 1}
    assert excluded.rt.inst.client_duration.series() == []
    assert [q.operation for q in excluded.rt.findings.slow_queries] == ["CREATE"]

    asyncio.run(middleware(scope("http", "/orders"), receive, send))
    server = next(s for s in excluded.memory.get_finished_spans() if s.kind == SpanKind.SERVER)
    children = [s for s in excluded.memory.get_finished_spans() if s.parent is not None]
    assert {s.parent.span_id for s in children} == {server.context.span_id}  # type: ignore[union-attr]
    assert excluded.counts()[("sqlite", "SELECT", "author", "")] == 2


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve_asgi(middleware: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """One request through an ASGI ``middleware``; the messages it sent."""
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def test_excluded_url_patterns_match_the_path_or_the_full_url_as_the_official_ones_do() -> None:
    """The official instrumentations match a pattern against the request's full URL: ASGI and
    Django ``scheme://host/path`` (the Host header's host), Flask with the query string too.  A
    pattern naming the host, or Flask's query, excludes; one anchored at the path still does."""

    import flask
    import flask.app

    from otel_perf._integrations import flask as flask_adapter
    from otel_perf._integrations.asgi import PerfMiddleware

    setup = _Excluded(r"^/health,//internal\.example(:\d+)?/,[?&]probe=1")
    try:
        middleware = PerfMiddleware(_ok_app, setup.rt)

        def asgi(path: str, host: bytes | None, query: bytes = b"") -> None:
            headers = [(b"host", host)] if host is not None else []
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                     "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
                     "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
                     "server": ("internal.example", 8000)}  # fmt: skip
            _serve_asgi(middleware, scope)

        asgi("/orders", b"internal.example:8000")  # the Host header names the host: excluded
        asgi("/orders", None)  # no Host header: the server's address, internal.example:8000
        asgi("/health", b"shop.example")  # the path
        asgi("/orders", b"shop.example", b"probe=1")  # ASGI's URL has no query: measured
        asgi("/orders/health", b"shop.example")  # ^/health is anchored at the path: measured

        wsgi_app = wsgi.PerfWSGIMiddleware(lambda environ, start_response: [b"ok"], setup.rt)
        from wsgiref.util import setup_testing_defaults

        for host, query in [("internal.example", ""), ("shop.example", "probe=1")]:
            environ: dict[str, Any] = {"PATH_INFO": "/orders", "HTTP_HOST": host, "QUERY_STRING": query}
            setup_testing_defaults(environ)
            list(wsgi_app(environ, lambda status, headers, exc_info=None: None))  # Django's reading: no query

        flask_adapter.install(setup.rt, flask.app)
        try:
            flask_app = flask.Flask("excluded_by_url")
            flask_app.get("/orders")(lambda: "ok")
            client = flask_app.test_client()
            for url in ("/orders?probe=1", "/orders?page=2"):  # Flask's reading has the query
                assert client.get(url, base_url="http://shop.example").status_code == 200
        finally:
            flask_adapter.uninstall()

        measured = sorted(
            (str(s.attributes.get("url.path")), str(s.attributes.get("url.query", "")))  # type: ignore[union-attr]
            for s in setup.memory.get_finished_spans()
            if s.kind == SpanKind.SERVER
        )
        assert measured == [
            ("/orders", "page=2"), ("/orders", "probe=1"), ("/orders", "probe=1"), ("/orders/health", ""),
        ]  # fmt: skip
    finally:
        setup.close()


def test_an_excluded_flask_request_streaming_its_body_records_nothing(excluded: _Excluded) -> None:
    """Flask's own test of a complete body reads its unit, which an excluded request has not: the
    body it streams is still made in the excluded request's context."""
    import flask
    import flask.app

    from otel_perf._integrations import flask as flask_adapter

    flask_adapter.install(excluded.rt, flask.app)
    try:
        app = flask.Flask("excluded")

        @app.get("/health/stream")
        def stream() -> Any:
            def chunks() -> Any:
                yield "a"
                excluded.work("SELECT count(*) FROM sqlite_master")  # while the body is sent
                yield "b"

            return flask.Response(chunks(), mimetype="text/plain")

        response = app.test_client().get("/health/stream")
        assert response.get_data() == b"ab"
        response.close()
    finally:
        flask_adapter.uninstall()
    assert excluded.traceparents == [""]
    assert excluded.memory.get_finished_spans() == ()
    assert excluded.counts() == {}


def test_an_outgoing_call_without_a_response_has_no_status_in_its_duration_point(excluded: _Excluded) -> None:
    """Semconv: ``http.response.status_code`` only when a response came back.  A refused
    connection's point has ``error.type`` and no status (not a "status 0" series), as its span."""
    from otel_perf._metrics.bridge import _attributes

    for status, error in ((0, ConnectionRefusedError("refused")), (503, None)):
        call = excluded.calls.start("GET", "http://peer.invalid/", "peer.invalid", 80, "http", {}.__setitem__)
        assert call is not None
        excluded.calls.end(call, status, error=error)
    duration = excluded.rt.inst.client_duration
    points = [_attributes(duration.attribute_names, s.key) for s in duration.series()]
    assert sorted((p.get("http.response.status_code", 0), p["error.type"]) for p in points) == [
        (0, "ConnectionRefusedError"), (503, "503"),
    ]  # fmt: skip
    refused = next(p for p in points if p["error.type"] == "ConnectionRefusedError")
    assert "http.response.status_code" not in refused


@pytest.mark.parametrize("capture_all", [False, True])
def test_an_unknown_method_is_kept_as_sent_when_every_method_is_captured(capture_all: bool) -> None:
    """OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS=true: a method outside the standard
    set names the span and is ``http.request.method``, as the official instrumentations do;
    otherwise it is ``_OTHER`` with the method in ``http.request.method_original``."""

    from otel_perf._core import server as server_core
    from otel_perf._integrations.asgi import PerfMiddleware

    setup = _Excluded("^/never")
    if capture_all:
        from otel_perf._config import load

        setup.rt.config = load({"OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS": "true"})
    try:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PURGE",
                 "scheme": "http", "path": "/cache", "raw_path": b"/cache", "query_string": b"",
                 "root_path": "", "headers": [], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 2)}  # fmt: skip
        _serve_asgi(PerfMiddleware(_ok_app, setup.rt), scope)
        [span] = [s for s in setup.memory.get_finished_spans() if s.kind == SpanKind.SERVER]
        attributes = dict(span.attributes or {})
        if capture_all:
            assert span.name == "PURGE" and attributes["http.request.method"] == "PURGE"
            assert "http.request.method_original" not in attributes
        else:
            assert span.name == "HTTP" and attributes["http.request.method"] == "_OTHER"
            assert attributes["http.request.method_original"] == "PURGE"
    finally:
        server_core.capture_all_methods(False)
        setup.close()


def test_a_request_no_url_can_be_built_for_is_served_and_judged_by_its_path() -> None:
    """Exclusion set, and an environ or scope the full URL cannot be built from (no host, no
    scheme, a path outside Latin-1, a one-element server): the request is served, measured or
    excluded by its path alone, as before the full-URL matching."""

    from otel_perf._integrations.asgi import PerfMiddleware

    setup = _Excluded(r"^/health,//internal\\.example")
    try:
        wsgi_app = wsgi.PerfWSGIMiddleware(lambda environ, start_response: [b"ok"], setup.rt)
        for environ in (
            {"PATH_INFO": "/orders", "REQUEST_METHOD": "GET", "wsgi.url_scheme": "http"},  # no host
            {"PATH_INFO": "/orders", "REQUEST_METHOD": "GET", "HTTP_HOST": "h"},  # no scheme
            {"PATH_INFO": "/caf\\u20ac", "REQUEST_METHOD": "GET", "HTTP_HOST": "h", "wsgi.url_scheme": "x"},
            {"PATH_INFO": "/health", "REQUEST_METHOD": "GET"},
        ):
            assert list(wsgi_app(environ, lambda status, headers, exc_info=None: None)) == [b"ok"]

        scope = {"type": "http", "method": "GET", "path": "/orders", "headers": [], "server": ("h",)}
        sent = _serve_asgi(PerfMiddleware(_ok_app, setup.rt), scope)
        assert sent[-1]["body"] == b"ok"
        spans = [s for s in setup.memory.get_finished_spans() if s.kind == SpanKind.SERVER]
        served = sorted(str((s.attributes or {}).get("url.path")) for s in spans)
        assert served == ["/caf\\u20ac", "/orders", "/orders", "/orders"]  # /health excluded by its path
    finally:
        setup.close()
