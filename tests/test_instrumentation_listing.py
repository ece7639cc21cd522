"""Issue 17: what is instrumented here, and by what (``otel-perf config``, ``otel-perf
instrumentations``); the redaction of URL attributes on spans that are not ours."""

from __future__ import annotations

import subprocess
from importlib import metadata

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

from otel_perf._analysis.redact import redacted_url_attributes
from otel_perf._setup.providers import OUR_SCOPE, UrlRedactor
from support.launch import BIN
from support.procs import clean_environ

NAMES = frozenset({"token", "api_key"})


def _run(*args: str, **env: str) -> str:
    result = subprocess.run(
        [str(BIN / "otel-perf"), *args], env=clean_environ(env), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _rows(output: str) -> dict[tuple[str, str], list[str]]:
    """(instrumentation, "ours" or the official distribution) -> the row's words."""
    table = output.split("instrumentations (", 1)[1].splitlines()[2:]
    rows = {}
    for line in table:
        if not line.strip():
            break
        words = line.split()
        rows[(words[0], "ours" if words[2] == "ours" else words[2])] = words
    return rows


def test_config_lists_every_instrumentation_loaded_or_skipped_and_why() -> None:
    # The official name with its dash, as opentelemetry-instrument users write it.
    rows = _rows(_run("config", "--no-check", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="aiohttp-client,celery"))
    assert rows[("requests", "ours")][1] == "loaded"
    assert rows[("urllib3", "ours")][1] == "loaded"
    official_requests = " ".join(rows[("requests", "opentelemetry-instrumentation-requests")])
    assert (
        "skipped" in official_requests
        and "replaced: ours instruments this library (requests)" in official_requests
    )
    official_sqlalchemy = " ".join(rows[("sqlalchemy", "opentelemetry-instrumentation-sqlalchemy")])
    assert "replaced" in official_sqlalchemy
    aiohttp = " ".join(rows[("aiohttp_client", "ours")])
    assert "skipped" in aiohttp and "disabled by OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in aiohttp
    celery = " ".join(rows[("celery", "opentelemetry-instrumentation-celery")])
    assert "skipped" in celery and "disabled" in celery
    redis = " ".join(rows[("redis", "opentelemetry-instrumentation-redis")])
    assert "skipped" in redis and "replaced" in redis
    # One package, two libraries: the httpx package's httpx2 instrumentor has no httpx2 here.
    httpx2 = rows.get(("httpx2", "opentelemetry-instrumentation-httpx"))
    if httpx2 is not None:
        assert httpx2[1] == "skipped" and "httpx2" in " ".join(httpx2[3:]), httpx2

    rows = _rows(_run("config", "--no-check"))
    assert rows[("celery", "opentelemetry-instrumentation-celery")][1] == "loaded"
    assert rows[("aiohttp_client", "ours")][1] == "loaded"
    # Our own switches count: the system metrics off, their row is skipped.
    rows = _rows(_run("config", "--no-check", OTEL_PERF_SYSTEM_METRICS="false"))
    assert rows[("system_metrics", "ours")][1] == "skipped"


def test_config_says_how_to_pick_our_distro_when_another_is_installed() -> None:
    """opentelemetry-distro (dev extra) beside ours: opentelemetry-instrument would take either."""
    out = _run("config", "--no-check")
    assert "distro 'distro'" in out and "OTEL_PYTHON_DISTRO=otel_perf" in out
    chosen = _run(
        "config", "--no-check", OTEL_PYTHON_DISTRO="otel_perf", OTEL_PYTHON_CONFIGURATOR="otel_perf"
    )
    assert "other OpenTelemetry distros" not in chosen


def test_instrumentations_lists_what_instruments_each_installed_library() -> None:
    lines = _run("instrumentations").splitlines()
    by_library: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line.strip() and not line.startswith(" "):
            by_library.setdefault(line.split()[0], []).append(line)
    for library in ("requests", "urllib3", "httpx", "fastapi", "sqlalchemy"):
        rows = by_library[library]
        assert any(f"ours ({library})" in row for row in rows), rows
    assert any("ours (aiohttp_client)" in row for row in by_library["aiohttp"])
    assert any("official, not installed (aiohttp_server)" in row for row in by_library["aiohttp"])
    assert "official, installed (celery)" in by_library["celery"][0]

    requirements = _run("instrumentations", "--requirements").split()
    replaced = {"requests", "urllib3", "aiohttp-client", "httpx", "fastapi", "sqlalchemy", "logging"}
    for requirement in requirements:
        package = requirement.split("==")[0]
        assert package.removeprefix("opentelemetry-instrumentation-") not in replaced, requirement
        with pytest.raises(metadata.PackageNotFoundError):
            metadata.version(package)  # only what is not installed yet


def test_url_attributes_of_other_instrumentations_are_redacted() -> None:
    attributes = {
        "url.full": "https://user:pw@api.example.com/v1/x?token=abc&page=2",
        "http.url": "https://api.example.com/v1/x?API_KEY=abc",
        "url.query": "token=abc&page=2",
        "http.target": "/v1/x?page=2&token=abc",
        "http.method": "GET",
    }
    assert redacted_url_attributes(attributes, NAMES, 2048) == {
        "url.full": "https://api.example.com/v1/x?token=REDACTED&page=2",
        "http.url": "https://api.example.com/v1/x?API_KEY=REDACTED",
        "url.query": "token=REDACTED&page=2",
        "http.target": "/v1/x?page=2&token=REDACTED",
    }
    assert redacted_url_attributes({"url.full": "https://api.example.com/?page=1"}, NAMES, 2048) is None


def test_statements_of_other_instrumentations_lose_their_literals() -> None:
    """The official psycopg2, mysqlclient and DB-API instrumentations export the statement as
    sent, literals included: ours are normalized, and theirs are too before they leave."""
    pg = {"db.system.name": "postgresql", "db.query.text": "SELECT * FROM \"p2\" WHERE a = 'literal-secret'"}
    assert redacted_url_attributes(pg, NAMES, 2048) == {"db.query.text": 'SELECT * FROM "p2" WHERE a = ?'}
    old = {"db.system": "mysql", "db.statement": "UPDATE users SET token = \"s3cret\" WHERE id = 7"}
    expected = "UPDATE users SET token = ? WHERE id = ?"
    assert redacted_url_attributes(old, NAMES, 2048) == {"db.statement": expected}
    assert redacted_url_attributes({"db.query.text": "GET ?", "db.system.name": "redis"}, NAMES, 2048) is None
    search = {"db.system": "elasticsearch", "db.statement": '{"query": {"term": {"email": "?"}}}'}
    assert redacted_url_attributes(search, NAMES, 2048) is None  # no SQL: left as its instrumentation made it


def _span(scope: str, attributes: dict[str, object]) -> ReadableSpan:
    context = SpanContext(0xABC, 0xDEF, is_remote=False)
    return ReadableSpan(
        name="GET",
        context=context,
        attributes=attributes,  # type: ignore[arg-type]
        kind=SpanKind.CLIENT,
        start_time=1,
        end_time=2,
        instrumentation_scope=InstrumentationScope(scope),
    )


def test_url_redactor_copies_foreign_spans_and_leaves_ours() -> None:
    redactor = UrlRedactor(NAMES, 2048)
    foreign = _span("opentelemetry.instrumentation.urllib", {"http.url": "http://h/?token=s3cret", "n": 1})
    out = redactor.span(foreign)
    assert out is not foreign
    assert dict(out.attributes or {}) == {"http.url": "http://h/?token=REDACTED", "n": 1}
    assert (out.context, out.kind, out.start_time, out.end_time, out.name) == (
        foreign.context,
        foreign.kind,
        1,
        2,
        "GET",
    )
    assert out.instrumentation_scope == foreign.instrumentation_scope
    clean = _span("opentelemetry.instrumentation.urllib", {"http.url": "http://h/?page=1"})
    assert redactor.span(clean) is clean
    ours = _span(OUR_SCOPE, {"url.full": "http://h/?token=raw-but-ours"})
    assert redactor.span(ours) is ours  # our cores redact as they set attributes
