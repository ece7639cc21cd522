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
