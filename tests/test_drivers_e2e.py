"""Issue 18: database insight on every driver (raw sqlite3, psycopg sync and async, asyncpg, PyMySQL).

The app (tests/apps/data_app.py) runs under the launcher against a file SQLite database, the
tests' PostgreSQL and a MariaDB.  Per driver: the request's query count is exact, an N+1 loop is found (with
the sampler off too: counts and findings cover every request), a slow statement is a finding,
and each statement is exactly one CLIENT span even with the official driver instrumentations
installed beside us; a statement through SQLAlchemy over a driver is recorded once; the rows a
DB-API cursor reports are ``db.client.response.returned_rows``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.launch import BIN, Service, start_service
from support.mysql import MySQLServer
from support.otlp_receiver import OTLPReceiver, Span
from support.postgres import PostgresServer
from support.procs import AppProcess, free_port, skip_or_fail

pytestmark = pytest.mark.slow
TOKEN = "t0ken-for-the-data-tests"
ENV = {
    "OTEL_PERF_STATS_PATH": "/_perf",
    "OTEL_PERF_STATS_TOKEN": TOKEN,
    "OTEL_PERF_SLOW_QUERY_MS": "100",
    "OTEL_PERF_SLOW_REQUEST_MS": "250",
}
#: endpoint -> (db.system.name, the table its loop reads)
LOOPS = {
    "/sqlite/loop": ("sqlite", "items"),
    "/psycopg/loop": ("postgresql", "data_items"),
    "/psycopg-async/loop": ("postgresql", "data_items"),
    "/asyncpg/loop": ("postgresql", "data_items"),
    "/pymysql/loop": ("mysql", "my_items"),
}
#: The official instrumentations of these drivers (installed beside us by a fixture).
CONTRIB = (
    "opentelemetry-instrumentation-dbapi==0.66b2",
    "opentelemetry-instrumentation-sqlite3==0.66b1",
    "opentelemetry-instrumentation-psycopg==0.66b1",
    "opentelemetry-instrumentation-asyncpg==0.66b1",
    "opentelemetry-instrumentation-pymysql==0.66b1",
    "opentelemetry-instrumentation-sqlalchemy==0.66b2",
)


def start_data_app(
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver | None,
    tmp_path: Path,
    pg: PostgresServer | MySQLServer | None = None,
    python_path: str = "",
    **env: str,
) -> Service:
    """tests/apps/data_app.py under the launcher with uvicorn (``pg``: PostgreSQL or MariaDB)."""
    port = free_port()
    full = {"APP_SQLITE_PATH": str(tmp_path / "data.db"), **ENV, **env}
    if isinstance(pg, PostgresServer):
        full["APP_PG_DSN"] = pg.dsn()
    elif pg is not None:
        full["APP_MYSQL_PORT"] = str(pg.port)
    server = (str(BIN / "uvicorn"), "data_app:app", "--host", "127.0.0.1", "--port", str(port))
    return start_service(
        app_process, receiver, "", env=full, server=server, port=port, python_path=python_path, name="data"
    )


def stats(svc: Service) -> dict[str, Any]:
    r = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def trace_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["traceresponse"].split("-")[1]


def server_span(receiver: OTLPReceiver, trace_id: str) -> Span:
    return receiver.wait_for(
        lambda: [s for s in receiver.spans(trace_id=trace_id) if s.kind == "SERVER"], what="server span"
    )[0]


def db_spans(receiver: OTLPReceiver, trace_id: str, system: str) -> list[Span]:
    return [
        s
        for s in receiver.spans(trace_id=trace_id)
        if s.kind == "CLIENT" and s.attributes.get("db.system.name") == system
    ]


def _pg_for(path: str, request: pytest.FixtureRequest) -> PostgresServer | MySQLServer | None:
    system = LOOPS[path][0]
    if system == "sqlite":
        return None
    return request.getfixturevalue("postgres_server" if system == "postgresql" else "mysql_server")  # type: ignore[no-any-return]


#: The raw-driver loops .ci/matrix runs on each driver's oldest and newest release (sqlite3 is Python's;
#: psycopg's async loop is the same library as its sync one).
_MATRIX_DRIVERS = {"/psycopg/loop", "/asyncpg/loop", "/pymysql/loop"}
MATRIX_LOOPS = [
    pytest.param(p, marks=pytest.mark.matrix) if p in _MATRIX_DRIVERS else p
    for p in LOOPS
]


@pytest.mark.parametrize("path", MATRIX_LOOPS)
def test_raw_driver_statements_count_feed_the_metric_and_find_n_plus_one(
    path: str,
    request: pytest.FixtureRequest,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    system, table = LOOPS[path]
    svc = start_data_app(app_process, otlp_receiver, tmp_path, _pg_for(path, request))
    trace_id = trace_of(httpx.get(svc.base + path, params={"n": 6}))

    server = server_span(otlp_receiver, trace_id)
    assert server.attributes["perf.db.query_count"] == 7  # the list + one per item
    event = next(e for e in server.events if e.name == "perf.n_plus_one")
    assert event.attributes["perf.db.repeat_count"] == 6
    assert f"FROM {table} WHERE id = ?" in event.attributes["perf.db.statement"]
    spans = otlp_receiver.wait_for(
        lambda: found if len(found := db_spans(otlp_receiver, trace_id, system)) >= 7 else [],
        what=f"7 {system} spans",
    )
    assert len(spans) == 7, [s.name for s in spans]
    assert {s.parent_span_id for s in spans} == {server.span_id}
    assert all(s.name == f"SELECT {table}" for s in spans)
    if system != "sqlite":
        assert spans[0].attributes["db.namespace"] == "testdb"
        assert spans[0].attributes["server.address"] == "127.0.0.1"
    wanted = {"db.system.name": system, "db.operation.name": "SELECT", "db.collection.name": table}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("db.client.operation.duration", wanted) >= 7,
        what="7 SELECT points",
    )
    assert otlp_receiver.histogram_count("db.client.operation.duration", wanted) == 7
    # db.client.response.returned_rows, from the DB-API cursor's rowcount as the official DB-API
    # instrumentation records it: the list's 6 rows, then 1 per item; sqlite3 reports no rowcount
    # for a SELECT (-1) and asyncpg has no cursor, so neither has a point
    rows = otlp_receiver.histogram_count("db.client.response.returned_rows", wanted)
    if path in ("/sqlite/loop", "/asyncpg/loop"):
        assert rows == 0
    else:
        assert rows == 7 and otlp_receiver.histogram_sum("db.client.response.returned_rows", wanted) == 12
    finding = stats(svc)["findings"]["n_plus_one"][0]
    assert finding["route"] == path and finding["trace_id"] == trace_id


@pytest.mark.parametrize("path", list(LOOPS))
def test_counts_and_n_plus_one_without_sampling(
    path: str,
    request: pytest.FixtureRequest,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    svc = start_data_app(
        app_process, otlp_receiver, tmp_path, _pg_for(path, request), OTEL_TRACES_SAMPLER="always_off"
    )
    for _ in range(2):
        assert httpx.get(svc.base + path, params={"n": 6}).status_code == 200
    summary = stats(svc)
    endpoint = next(e for e in summary["endpoints"] if e["route"] == path)
    assert endpoint["count"] == 2
    assert endpoint["mean_queries"] == 7.0
    assert endpoint["n_plus_one_count"] == 2
    [finding] = summary["findings"]["n_plus_one"]
    assert finding["repeat_count"] == 6 and finding["occurrences"] == 2
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.n_plus_one", {"http.route": path}) >= 2, what="perf.n_plus_one"
    )
    assert not [s for s in otlp_receiver.spans() if s.kind in ("SERVER", "CLIENT")]


@pytest.mark.parametrize("path", ["/sqlite/slow", "/psycopg/slow", "/asyncpg/slow", "/pymysql/slow"])
def test_a_slow_raw_statement_is_a_finding(
    path: str,
    request: pytest.FixtureRequest,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    pg = _pg_for(path.replace("/slow", "/loop"), request)
    svc = start_data_app(app_process, otlp_receiver, tmp_path, pg)
    trace_id = trace_of(httpx.get(svc.base + path))
    slow = stats(svc)["findings"]["slow_queries"]
    assert [q["route"] for q in slow] == [path]
    assert "sleep(?)" in slow[0]["statement"].lower() and slow[0]["duration_ms"] >= 100
    assert slow[0]["trace_id"] == trace_id
    span = otlp_receiver.wait_for(
        lambda: [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"], what="slow span"
    )[0]
    assert span.attributes["perf.slow"] is True
    otlp_receiver.wait_for(
        lambda: otlp_receiver.sum_value("perf.slow_queries") >= 1, what="perf.slow_queries counter"
    )


def test_sqlalchemy_over_psycopg_and_raw_psycopg_each_count_once(
    postgres_server: PostgresServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    svc = start_data_app(app_process, otlp_receiver, tmp_path, postgres_server)
    for _ in range(2):  # the second request reuses SQLAlchemy's pooled connection
        trace_id = trace_of(httpx.get(svc.base + "/mixed"))
        assert server_span(otlp_receiver, trace_id).attributes["perf.db.query_count"] == 2
        spans = otlp_receiver.wait_for(
            lambda t=trace_id: found if len(found := db_spans(otlp_receiver, t, "postgresql")) >= 2 else [],
            what="2 spans",
        )
        assert sorted(s.attributes["db.query.text"] for s in spans) == [
            "SELECT count(*) FROM data_items",
            "SELECT max(id) FROM data_items",
        ]


def test_statements_outside_a_request_get_root_spans_and_metrics(
    postgres_server: PostgresServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    start_data_app(app_process, otlp_receiver, tmp_path, postgres_server)
    roots = otlp_receiver.wait_for_spans(  # all three: they may leave in different batches
        3,
        kind="CLIENT",
        where=lambda s: not s.parent_span_id and s.attributes.get("db.system.name") == "postgresql",
        what="the three start-up statements",
    )
    operations = sorted(s.attributes["db.operation.name"] for s in roots)
    assert operations == ["CREATE", "INSERT", "TRUNCATE"]
    insert = next(s for s in roots if s.attributes["db.operation.name"] == "INSERT")
    assert insert.attributes["db.operation.batch.size"] == 10
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count(
                "db.client.operation.duration",
                {"db.system.name": "postgresql", "db.operation.name": "TRUNCATE"},
            )
            == 1
        ),
        what="the TRUNCATE point",
    )


# --- with the official driver instrumentations installed too ----------------------------------


@pytest.fixture(scope="session")
def contrib_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder holding the official sqlite3/psycopg/asyncpg/SQLAlchemy instrumentations, for PYTHONPATH.

    Installed apart (``--no-deps``): their releases pin other versions of our dependencies.
    """
    target = tmp_path_factory.mktemp("contrib")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), *CONTRIB],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        skip_or_fail(f"could not install the official driver instrumentations: {result.stderr[-500:]}")
    return str(target)


@pytest.mark.parametrize("path", ["/sqlite/loop", "/psycopg/loop", "/asyncpg/loop", "/pymysql/loop"])
def test_one_span_per_statement_with_the_official_driver_instrumentations_installed(
    path: str,
    request: pytest.FixtureRequest,
    contrib_path: str,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    system, _table = LOOPS[path]
    pg = _pg_for(path, request)
    svc = start_data_app(app_process, otlp_receiver, tmp_path, pg, python_path=contrib_path)
    trace_id = trace_of(httpx.get(svc.base + path, params={"n": 6}))
    assert server_span(otlp_receiver, trace_id).attributes["perf.db.query_count"] == 7
    otlp_receiver.wait_for(lambda: len(db_spans(otlp_receiver, trace_id, system)) >= 7, what="7 spans")
    spans = [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]
    assert len(spans) == 7, [(s.name, s.attributes) for s in spans]


def test_sqlalchemy_over_sqlite3_with_the_official_instrumentations_is_one_span_and_one_point(
    contrib_path: str,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    """#17: with contrib -sqlalchemy and -sqlite3 installed, one span and one metric point per statement."""
    svc = start_data_app(app_process, otlp_receiver, tmp_path, python_path=contrib_path)
    trace_id = trace_of(httpx.get(svc.base + "/sqlalchemy/sqlite"))
    assert server_span(otlp_receiver, trace_id).attributes["perf.db.query_count"] == 3
    otlp_receiver.wait_for(lambda: len(db_spans(otlp_receiver, trace_id, "sqlite")) >= 3, what="3 spans")
    spans = [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]
    assert len(spans) == 3, [(s.name, s.attributes) for s in spans]
    wanted = {"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "items"}
    otlp_receiver.wait_for(
        lambda: otlp_receiver.histogram_count("db.client.operation.duration", wanted) >= 3, what="3 points"
    )
    assert otlp_receiver.histogram_count("db.client.operation.duration", wanted) == 3
