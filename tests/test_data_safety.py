"""Issue 7: no secret leaves the process, and the stats endpoint is closed unless opened.

End to end: two services (front calls peer) run under the launcher with every way a value
could leak switched on -- every statement a slow-query finding, every repeat an N+1
finding, the contrib httpx instrumentation capturing *all* request and response headers,
the stats endpoint open.  Secrets (all carrying the marker ``S3KR1T``) go into SQL literals
in WHERE clauses and INSERT values, bound parameters, failing statements whose errors are
logged, incoming and outgoing sensitive headers, and sensitive query parameters.  Nothing
exported (spans, logs, metrics, resources) and nothing the stats endpoint returns may hold
the marker, while the same data is visibly there in normalized or redacted form.

In process: property tests of SQL normalization and of the log scrubber, the header
sanitize list the launcher hands to the contrib instrumentations, and the stats endpoint's
token check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_perf._analysis.redact import LogScrubber
from otel_perf._analysis.sql import normalize
from otel_perf._cli.launcher import SANITIZE_ENV, sanitize_fields
from otel_perf._config import load
from support.launch import Service, sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess

MARKER = "S3KR1T"
TOKEN = "stats-token-Zx9-for-tests"
LEAKY_ENV = {
    "OTEL_PERF_SLOW_QUERY_MS": "0",
    "OTEL_PERF_N_PLUS_ONE_THRESHOLD": "2",
    "OTEL_PERF_STATS_PATH": "/_perf",
    "OTEL_PERF_STATS_TOKEN": TOKEN,
    "OTEL_PERF_SENSITIVE_HEADERS": "X-Custom-Token",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": ".*",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": ".*",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ".*",
}
INCOMING = {
    "Authorization": f"Bearer incoming-auth-{MARKER}",
    "Cookie": f"sid=incoming-cookie-{MARKER}",
    "X-Api-Key": f"incoming-apikey-{MARKER}",
    "Proxy-Authorization": f"Basic incoming-proxy-{MARKER}",
}


# ---------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def leaky(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> tuple[Service, OTLPReceiver]:
    peer = start_service(
        app_process, otlp_receiver, f"sqlite:///{tmp_path}/peer.db", env=LEAKY_ENV, name="peer"
    )
    # Errors are logged by the app itself here, so our guard must not turn them into raises.
    front = start_service(
        app_process,
        otlp_receiver,
        f"sqlite:///{tmp_path}/front.db",
        peer=peer.base,
        name="front",
        env={**LEAKY_ENV, "OTEL_PERF__RAISE_ERRORS": "0"},
    )
    return front, otlp_receiver


def _exported_text(receiver: OTLPReceiver) -> list[str]:
    out = []
    for s in receiver.spans():
        out.append(
            json.dumps(
                [
                    s.name,
                    s.attributes,
                    [(e.name, e.attributes) for e in s.events],
                    s.status_message,
                    s.resource,
                ],
                default=str,
            )
        )
    for r in receiver.logs():
        out.append(json.dumps([r.body, r.attributes, r.resource], default=str))
    for p in receiver.metric_points():
        out.append(
            json.dumps([p.name, p.attributes, p.resource, [e.attributes for e in p.exemplars]], default=str)
        )
    return out


@pytest.mark.slow
def test_no_secret_leaves_the_process(leaky: tuple[Service, OTLPReceiver]) -> None:
    svc, receiver = leaky
    with httpx.Client(headers=INCOMING, timeout=10) as client:
        for path in (
            "/secret-search",
            "/secret-repeat",
            "/secret-error-logged",
            "/call-peer-with-secrets",
            f"/hello?token=query-{MARKER}&api_key=key-{MARKER}&page=2",
        ):
            assert client.get(svc.base + path).status_code == 200, path
        assert client.post(svc.base + "/secret-insert").status_code == 200
        assert client.get(svc.base + "/secret-error").status_code == 500

    # The data is there, normalized or redacted ...
    db = receiver.wait_for(
        lambda: [
            s
            for s in receiver.spans(kind="CLIENT")
            if "db.query.text" in s.attributes
            and s.attributes["db.query.text"].startswith("INSERT INTO customers")
            and s.parent_span_id  # the request's insert (the seed data at start-up has root spans)
        ],
        what="INSERT spans",
    )
    assert {s.attributes["db.query.text"] for s in db} == {"INSERT INTO customers (name) VALUES (?)"}
    assert receiver.wait_for(lambda: receiver.spans(name="SELECT no_such_table"), what="failing SELECT span")
    outgoing = receiver.wait_for(
        lambda: [
            s for s in receiver.spans(kind="CLIENT") if "http.request.header.authorization" in s.attributes
        ],
        what="the outgoing httpx span with captured headers",
    )[0].attributes
    for header in ("authorization", "cookie", "x_api_key", "proxy_authorization", "x_custom_token"):
        assert outgoing[f"http.request.header.{header}"] == ["[REDACTED]"], header
    for header in ("set_cookie", "x_api_key"):
        assert outgoing[f"http.response.header.{header}"] == ["[REDACTED]"], header
    assert "token=REDACTED" in outgoing["url.full"]
    hello = receiver.wait_for(
        lambda: [s for s in receiver.spans(name="GET /hello", kind="SERVER") if "url.query" in s.attributes],
        what="the /hello span with a query string",
    )[0]
    assert hello.attributes["url.query"] == "token=REDACTED&api_key=REDACTED&page=2"
    logged = receiver.wait_for_logs("query failed again")[0]
    assert "[SQL: SELECT * FROM no_such_table WHERE name = ? AND note = ?]" in logged.body
    assert "[parameters: REDACTED]" in logged.body
    assert receiver.wait_for_logs("HTTP Request: GET")[0].body.count("token=REDACTED") == 1

    r = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {TOKEN}"})
    stats = r.json()
    assert stats["findings"]["n_plus_one"], stats["findings"]
    assert stats["findings"]["slow_queries"], stats["findings"]
    statements = json.dumps(stats["findings"]) + json.dumps(stats["database"])
    assert "WHERE name = ? AND id = ?" in statements

    # ... and the secrets are not, anywhere.
    receiver.wait_for(lambda: receiver.metric_points("db.client.operation.duration"), what="metrics")
    leaks = [t for t in _exported_text(receiver) if MARKER in t or "hunter2" in t]
    assert not leaks, "\n".join(t[:400] for t in leaks)
    assert MARKER not in r.text and "hunter2" not in r.text and TOKEN not in r.text


# ---------------------------------------------------------------------------------------------------
# Stats endpoint access
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stats_endpoint_is_off_without_a_token(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    svc = start_service(app_process, None, sqlite_urls(tmp_path)[0], env={"OTEL_PERF_STATS_PATH": "/_perf"})
    r = httpx.get(svc.base + "/_perf")
    assert r.status_code == 404 and "endpoints" not in r.text  # the app's own 404: nothing served
    assert "OTEL_PERF_STATS_TOKEN is empty" in svc.proc.stderr()


@pytest.mark.slow
def test_stats_endpoint_rejects_missing_and_wrong_tokens(
    app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    svc = start_service(
        app_process,
        None,
        sqlite_urls(tmp_path)[0],
        env={"OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": TOKEN},
    )
    url = svc.base + "/_perf"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"X-Api-Key": TOKEN},
    ):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "endpoints" not in r.text and TOKEN not in r.text
    assert httpx.post(url + "/reset").status_code == 401
    assert httpx.get(url + "/reset", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
    ok = httpx.get(url, headers={"Authorization": f"bearer {TOKEN}"})
    assert ok.status_code == 200 and "endpoints" in ok.json()
    assert ok.headers["cache-control"] == "no-store"
    assert TOKEN not in ok.text


def _endpoint(token: str) -> Any:
    from otel_perf._export.stats_endpoint import StatsEndpoint

    class _Runtime:
        config = load({"OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": token})

    return StatsEndpoint(_Runtime())  # type: ignore[arg-type]


@given(given_token=st.binary(max_size=300))
def test_token_check_compares_fixed_size_digests(given_token: bytes) -> None:
    """Whatever is sent, one constant-time comparison of two 32-byte digests decides.

    So neither the token's length nor a matching prefix changes the time a wrong token takes.
    """
    import otel_perf._export.stats_endpoint as module

    endpoint = _endpoint(TOKEN)
    calls: list[tuple[int, int]] = []
    original = module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return original(a, b)

    module.hmac.compare_digest = spy  # type: ignore[assignment]
    try:
        ok = endpoint.authorized([(b"authorization", b"Bearer " + given_token)])
    finally:
        module.hmac.compare_digest = original
    assert calls == [(32, 32)]
    assert ok == (given_token.strip() == TOKEN.encode())
    assert endpoint._digest == hashlib.sha256(TOKEN.encode()).digest()


def test_stats_401_body_is_the_same_for_every_wrong_token() -> None:
    endpoint = _endpoint(TOKEN)

    async def ask(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        await endpoint.handle(
            {"type": "http", "path": "/_perf", "method": "GET", "headers": headers}, receive, send
        )
        return sent

    answers = [
        asyncio.run(ask(h))
        for h in (
            [],
            [(b"authorization", b"Bearer x")],
            [(b"authorization", b"Bearer " + TOKEN.encode()[:-1])],
        )
    ]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0]["status"] == 401


# ---------------------------------------------------------------------------------------------------
# In process: SQL normalization, log scrubbing, header sanitize list
# ---------------------------------------------------------------------------------------------------

SECRET = st.text(
    alphabet="abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=6, max_size=24
).map(lambda s: "zq" + s)
# SQL around the literals: identifiers, keywords, operators -- nothing that opens a literal.
NOISE = st.text(alphabet="abcdefgh_ ,.()=<>*;\n\tSELECTFROMWHEREANDINVALUES", max_size=30)
FRAGMENTS = [
    "WHERE name = '{s}'",
    "WHERE name = E'{s}\\'x'",
    "WHERE a = 'x\\'{s}' AND b = 'y'",
    'WHERE name = "{s}"',
    "WHERE name IN ('{s}', 'b', 'c')",
    "WHERE name LIKE '%{s}%'",
    "INSERT INTO t (a, b) VALUES ('{s}', 1), ('{s}2', 2)",
    "UPDATE t SET a = '{s}' WHERE id = 1",
    "SELECT $${s}$$",
    "SELECT $tag${s}$tag$",
    "SELECT 1 /* {s} */",
    "SELECT 1 -- {s}\n",
    "SELECT 'it''s {s}'",
    "SELECT N'{s}'",
    "SELECT \"it's\" FROM t WHERE a = '{s}'",
    "SELECT '-- {s}' , '/* {s}'",
]
# Unterminated literals (a statement cut short, or malformed) can only come last.
TAILS = [
    "",
    "SELECT 'unterminated {s}",
    "SELECT /* unterminated {s}",
    "SELECT $$unterminated {s}",
    "WHERE a = E'{s}",
]


@given(
    secret=SECRET,
    picks=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4),
    tail=st.sampled_from(TAILS),
    noise=NOISE,
    number=st.integers(min_value=100_000, max_value=10**15),
)
def test_normalized_sql_holds_no_literal(
    secret: str, picks: list[str], tail: str, noise: str, number: int
) -> None:
    sql = f" {noise} ".join(f.format(s=secret) for f in picks) + f" AND n = {number} " + tail.format(s=secret)
    out = normalize(sql)
    assert secret not in out, (sql, out)
    assert str(number) not in out
    out.encode("utf-8")  # always exportable


@given(secret=SECRET, pad=st.integers(min_value=4000, max_value=4200))
def test_literal_cut_by_the_length_limit_does_not_leak(secret: str, pad: int) -> None:
    for opener in ("'", "$$", "/*", "E'", '= "'):
        sql = "SELECT " + "x" * (pad - 7) + f" {opener}{secret}{secret}{secret}"
        assert secret not in normalize(sql)


@given(st.text(max_size=300))
def test_normalized_sql_is_valid_utf8(sql: str) -> None:
    normalize(sql + "\udcff").encode("utf-8")


@given(secret=SECRET)
def test_log_scrubber_takes_values_out_of_error_text(secret: str) -> None:
    scrubber = LogScrubber(("token", "api_key"))
    text = (
        "(psycopg.errors.UniqueViolation) duplicate key\n"
        f"DETAIL:  Key (email)=({secret}@x.com) already exists.\n"
        f"[SQL: INSERT INTO users (email, note)\nVALUES ('{secret}', %(note)s)]\n"
        f"[parameters: {{'note': '{secret}'}}]\n(Background on this error at: https://sqlalche.me/e/20/gkpj)\n"
        f"LINE 1: SELECT * FROM t WHERE a = '{secret}'\n"
        f'HTTP Request: GET http://h/x?token={secret}&page=1&API_KEY={secret} "HTTP/1.1 200 OK"'
    )
    out = scrubber.text(text)
    assert secret not in out
    assert "[SQL: INSERT INTO users (email, note) VALUES (?, ?)]" in out
    assert "page=1" in out


def test_header_sanitize_list_keeps_the_users_entries_and_adds_ours() -> None:
    env = {"OTEL_PERF_SENSITIVE_HEADERS": "X-Custom-Token", SANITIZE_ENV: ".*session.*"}
    fields = sanitize_fields(env).split(",")
    assert fields[0] == ".*session.*"
    for name in (
        "authorization",
        "cookie",
        "set\\-cookie",
        "proxy\\-authorization",
        "x\\-api\\-key",
        "x\\-custom\\-token",
    ):
        assert name in fields
    assert sanitize_fields({SANITIZE_ENV: sanitize_fields({})}) == sanitize_fields({})  # idempotent


def test_exported_log_records_leave_out_celery_task_payloads_and_our_formatter_fields() -> None:
    """Celery's "received"/"succeeded" records carry the task's args, kwargs and return value
    in ``extra={"data": ...}``: not exported.  The trace_id/span_id/service_name our record
    factory adds for formatters duplicate the record's context and resource: not exported."""
    import logging

    from opentelemetry.sdk._logs import LoggerProvider, export
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    from otel_perf._metrics.instruments import Registry
    from otel_perf._setup.providers import Health, _drop_counting_logs, official_log_handler

    exporter = getattr(export, "InMemoryLogRecordExporter", None) or export.InMemoryLogExporter  # SDK < 1.45
    exporter = exporter()
    provider = LoggerProvider()
    scrubber = LogScrubber(())
    provider.add_log_record_processor(
        _drop_counting_logs(SimpleLogRecordProcessor(exporter), Health(Registry(), 60.0), 100, scrubber)
    )
    handler = official_log_handler()(logger_provider=provider)
    payload = {"id": "t-1", "name": "tasks.charge", "args": "('4111 1111 1111 1111',)", "kwargs": "{}"}
    ours = {"trace_id": "ab" * 16, "span_id": "cd" * 8, "service_name": "shop"}
    app = {"data": {"order": 7}, **ours}
    for name, extra in (("celery.worker.strategy", {"data": payload}), ("shop.orders", app)):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("Task received", extra=extra)
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
    records = [getattr(d, "log_record", d) for d in exporter.get_finished_logs()]
    celery, shop = (dict(r.attributes or {}) for r in records)
    assert "data" not in celery and "4111" not in repr(celery)
    assert shop.get("data") == {"order": 7}  # an app's own extra is kept
    assert not {"trace_id", "span_id", "service_name"} & set(shop)


@given(secret=SECRET)
def test_a_refused_statements_exception_event_leaves_out_the_values_in_the_error(secret: str) -> None:
    """Drivers put the offending value in the error: MySQL's duplicate entry, PostgreSQL's
    invalid input; the event keeps the words and the stack trace's lines, not the value."""
    from otel_perf._analysis.redact import database_error

    class IntegrityError(Exception):
        pass

    try:
        try:
            raise IntegrityError(1062, f"Duplicate entry '{secret}' for key 'users.email'")
        except IntegrityError as inner:
            raise ValueError(f'invalid input syntax for type uuid: "{secret}"') from inner
    except ValueError as exc:
        event = database_error(LogScrubber(()), exc)
    assert secret not in repr(event)
    assert event["exception.message"] == "invalid input syntax for type uuid: ?"
    assert '(1062, "Duplicate entry ? for key ?")' in event["exception.stacktrace"]
    assert "test_a_refused_statements_exception_event" in event["exception.stacktrace"]
