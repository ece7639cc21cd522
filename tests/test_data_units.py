"""Issue 18 in-process: the driver, Redis, cache and job pieces that need no server.

The end-to-end behaviour is in test_drivers_e2e, test_redis_e2e, test_background_e2e and
test_celery_e2e; here: the sqlite3 adapter's connections (recording, handed back unwrapped to an
outer layer, disowned), counted once under SQLAlchemy, Redis command names bounded and reads
classified, job names, the stats/report sections and the registry rows.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otel_perf._analysis.stats import summary
from otel_perf._config import load
from otel_perf._core.caches import Caches, bookkeeping
from otel_perf._core.runtime import Runtime, build_instruments
from otel_perf._core.spans import PrimableIdGenerator
from otel_perf._core.statements import outer_connection, statement_text
from otel_perf._core.work import Work, current_work
from otel_perf._export.report import render
from otel_perf._integrations import BY_NAME, REGISTRY
from otel_perf._integrations import background as background_adapter
from otel_perf._integrations import redis as redis_adapter
from otel_perf._integrations import sqlite3 as sqlite_adapter
from otel_perf._metrics.instruments import Registry

ROOT = Path(__file__).resolve().parent.parent


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def runtime() -> Iterator[tuple[Runtime, _Collect]]:
    collect = _Collect()
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(collect))
    registry = Registry()
    tracer = provider.get_tracer("otel_perf")
    rt = Runtime(load({}), tracer, registry, build_instruments(registry), Resource({}))
    yield rt, collect
    provider.shutdown()


@pytest.fixture
def sqlite_installed(runtime: tuple[Runtime, _Collect]) -> Iterator[tuple[Runtime, _Collect]]:
    sqlite_adapter.install(runtime[0], sqlite3)
    try:
        yield runtime
    finally:
        sqlite_adapter.uninstall()


def _unit(rt: Runtime) -> tuple[Work, Any]:
    work = Work("operation", "unit", rt.tracer.start_span("unit"), rt.max_statements)
    return work, current_work.set(work)


def test_sqlite3_connections_record_every_statement_once(sqlite_installed: tuple[Runtime, _Collect]) -> None:
    rt, _ = sqlite_installed
    connection = sqlite3.connect(":memory:")
    assert isinstance(connection, sqlite3.Connection) and type(connection) is not sqlite3.Connection
    work, token = _unit(rt)
    try:
        connection.execute("CREATE TABLE t (id INTEGER)")  # the connection's shortcut
        connection.executemany("INSERT INTO t VALUES (?)", ((i,) for i in range(3)))  # a generator
        cursor = connection.cursor()
        cursor.execute("SELECT id FROM t WHERE id = ?", (1,))
        cursor.executescript("SELECT 1; SELECT 2;")
        with pytest.raises(sqlite3.OperationalError):
            cursor.execute("SELECT * FROM missing")
    finally:
        current_work.reset(token)
    assert work.query_count == 5
    series = {s.key: s.count for s in rt.inst.db_duration.series()}
    # system, operation, table, error type, then db.namespace, server.address, server.port
    assert series[("sqlite", "INSERT", "t", "", ":memory:", "", None)] == 1  # executemany: one statement
    assert series[("sqlite", "SELECT", "missing", "OperationalError", ":memory:", "", None)] == 1
    # db.client.response.returned_rows: the cursor's rowcount where sqlite3 knows it (3 rows
    # inserted), none where it reports -1 (a SELECT, DDL, a script) or the statement failed
    rows = {s.key: (s.count, s.sum) for s in rt.inst.returned_rows.series()}
    assert rows == {("sqlite", "INSERT", "t", "", ":memory:", "", None): (1, 3)}
    assert cursor.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_returned_rows_leave_out_scripts_and_counts_no_database_returns(
    sqlite_installed: tuple[Runtime, _Collect],
) -> None:
    """A script's cursor keeps its previous statement's rowcount (sqlite3), and PyMySQL's unbuffered
    cursors report 2**64-1 for "unknown": neither is a row count."""
    from otel_perf._core.statements import DbTarget, Statements

    rt, _ = sqlite_installed
    connection = sqlite3.connect(":memory:")
    cursor = connection.cursor()
    cursor.execute("CREATE TABLE t (id INTEGER)")
    cursor.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    cursor.executescript("CREATE TABLE u (id INTEGER); CREATE TABLE v (id INTEGER);")
    assert cursor.rowcount == 2, "sqlite3 keeps the executemany's count through the script"

    class Unbuffered:
        rowcount = 2**64 - 1

        def execute(self, statement: str) -> None:
            pass

    select = "SELECT id FROM t"
    Statements(rt).run(DbTarget("mysql", "shop"), select, 0, Unbuffered().execute, select)
    rows = {s.key[:2]: (s.count, s.sum) for s in rt.inst.returned_rows.series()}
    assert rows == {("sqlite", "INSERT"): (1, 2)}


def test_statement_and_command_duration_points_say_which_database(runtime: tuple[Runtime, _Collect]) -> None:
    """db.client.operation.duration carries db.namespace, server.address and server.port where
    known (semantic conventions: conditionally required / recommended), as the spans do."""
    from otel_perf._core.commands import Commands, CommandTarget
    from otel_perf._core.statements import DbTarget, Statements
    from otel_perf._metrics.bridge import _attributes

    rt = runtime[0]
    postgres = DbTarget("postgresql", "shop", "db.internal", 5433)
    Statements(rt).record(postgres, "SELECT 1 FROM t", 0.002, "", 0)
    Statements(rt).record(DbTarget("sqlite", "/srv/app.db"), "SELECT 1 FROM t", 0.001, "", 0)
    Commands(rt).record(CommandTarget("redis", "cache.internal", 6380, "2"), "GET", 0.001, "")
    inst = rt.inst.db_duration
    points = sorted(
        (sorted(_attributes(inst.attribute_names, s.key).items()) for s in inst.series()), key=str
    )
    assert points == sorted(
        [
            sorted({"db.system.name": "postgresql", "db.operation.name": "SELECT", "db.collection.name": "t",
                    "db.namespace": "shop", "server.address": "db.internal", "server.port": 5433}.items()),
            sorted({"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "t",
                    "db.namespace": "/srv/app.db"}.items()),
            sorted({"db.system.name": "redis", "db.operation.name": "GET", "db.namespace": "2",
                    "server.address": "cache.internal", "server.port": 6380}.items()),
        ],
        key=str,
    )  # fmt: skip


def test_sqlite3_connections_for_an_outer_layer_stay_unwrapped(
    sqlite_installed: tuple[Runtime, _Collect],
) -> None:
    with outer_connection():
        plain = sqlite3.connect(":memory:")
    assert type(plain) is sqlite3.Connection
    recording = sqlite3.connect(":memory:")
    assert sqlite_adapter._disown(recording)
    rt = sqlite_installed[0]
    work, token = _unit(rt)
    try:
        recording.execute("SELECT 1")
        plain.execute("SELECT 1")
    finally:
        current_work.reset(token)
    assert work.query_count == 0


def test_sqlalchemy_over_sqlite3_counts_each_statement_once(
    sqlite_installed: tuple[Runtime, _Collect],
) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from otel_perf._integrations import sqlalchemy as ours_sa

    rt, collect = sqlite_installed
    listener = ours_sa.SQLAlchemyListener(rt)
    ours_sa.attach_listener(listener)
    try:
        engine = sqlalchemy.create_engine("sqlite://")
        work, token = _unit(rt)
        try:
            with engine.connect() as conn:
                for _ in range(3):
                    conn.execute(sqlalchemy.text("SELECT 1"))
                assert type(conn.connection.driver_connection) is sqlite3.Connection
        finally:
            current_work.reset(token)
    finally:
        ours_sa.detach_listener(listener)
    assert work.query_count == 3
    assert len([s for s in collect.spans if s.name == "SELECT"]) == 3


@pytest.mark.parametrize("how", ["creator", "async_creator"])
def test_sqlalchemy_over_sqlite3_with_a_creator_counts_each_statement_once(
    how: str, sqlite_installed: tuple[Runtime, _Collect], tmp_path: Path
) -> None:
    """``create_engine(creator=...)``: the pool opens connections without the dialect's connect."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from otel_perf._integrations import sqlalchemy as ours_sa

    rt, collect = sqlite_installed
    listener = ours_sa.SQLAlchemyListener(rt)
    ours_sa.attach_listener(listener)
    try:
        if how == "creator":
            engine = sqlalchemy.create_engine("sqlite://", creator=lambda: sqlite3.connect(":memory:"))
        else:  # a pool of the app's own over the same creator
            pool = sqlalchemy.pool.QueuePool(lambda: sqlite3.connect(str(tmp_path / "p.db")))
            engine = sqlalchemy.create_engine("sqlite://", pool=pool)
        work, token = _unit(rt)
        try:
            with engine.connect() as conn:
                for _ in range(3):
                    conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            current_work.reset(token)
        engine.dispose()
    finally:
        ours_sa.detach_listener(listener)
    assert work.query_count == 3
    assert len([s for s in collect.spans if s.name == "SELECT"]) == 3


def test_pools_are_named_as_the_official_instrumentation_names_them_and_each_is_measured(
    sqlite_installed: tuple[Runtime, _Collect], tmp_path: Path
) -> None:
    """``db.client.connection.pool.name``: the pool's ``logging_name``, else the official
    ``driver://host:port/db``; two engines on one database (an async and a sync engine, two
    binds) are two series, not one; a pool ``dispose()`` replaced is still measured."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from otel_perf._integrations import sqlalchemy as ours_sa

    rt, _ = sqlite_installed
    listener = ours_sa.SQLAlchemyListener(rt)
    ours_sa.attach_listener(listener)
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    try:
        first = sqlalchemy.create_engine(url, pool_size=3)
        second = sqlalchemy.create_engine(url, pool_size=7)
        named = sqlalchemy.create_engine(url, pool_logging_name="orders")
        for engine in (first, second, named):
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        options = first.execution_options(isolation_level="AUTOCOMMIT")  # the same pool as first
        with options.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        first.dispose()  # a new pool, empty
        del options
        held = first.connect()
        try:
            official = f"sqlite://:/{tmp_path / 'shop.db'}"
            maxima = {key[0]: value for value, key in listener.pool_max()}
            assert maxima == {official: 3 + 10, f"{official} #2": 7 + 10, "orders": 5 + 10}
            points = {key: value for value, key in listener.pool_points()}
            assert points[(official, "used")] == 1 and points[(official, "idle")] == 0
            assert points[(f"{official} #2", "idle")] == 1
        finally:
            held.close()
    finally:
        ours_sa.detach_listener(listener)


def test_statement_text_of_what_drivers_take() -> None:
    class Composed:
        def as_string(self) -> str:
            return "SELECT 1"

    assert statement_text("SELECT 2") == "SELECT 2"
    assert statement_text(b"SELECT 3") == "SELECT 3"
    assert statement_text(Composed()) == "SELECT 1"


def test_redis_command_names_are_bounded() -> None:
    assert redis_adapter.operation("get") == "GET"
    assert redis_adapter.operation(b"HGETALL") == "HGETALL"
    assert redis_adapter.operation("CLIENT SETNAME") == "CLIENT"
    assert redis_adapter.operation("MY.CUSTOM.CMD") == "OTHER"
    names = {redis_adapter.operation(f"X{i}") for i in range(3000)}
    assert names == {"OTHER"} and len(redis_adapter._names) <= redis_adapter._MAX_NAMES


@pytest.mark.parametrize(
    ("command", "args", "reply", "split"),
    [
        ("GET", ("GET", "k"), b"v", (1, 0)),
        ("GET", ("GET", "k"), None, (0, 1)),
        ("MGET", ("MGET", "a", "b", "c"), [b"1", None, b"3"], (2, 1)),
        ("HMGET", ("HMGET", "h", "f", "g"), [None, None], (0, 2)),
        ("HGETALL", ("HGETALL", "h"), {}, (0, 1)),
        ("HGETALL", ("HGETALL", "h"), {b"f": b"v"}, (1, 0)),
        ("EXISTS", ("EXISTS", "a", "b", "c"), 2, (2, 1)),
        ("GETDEL", ("GETDEL", "k"), None, (0, 1)),
    ],
)
def test_redis_reads_split_into_hits_and_misses(
    command: str, args: tuple[Any, ...], reply: Any, split: tuple[int, int]
) -> None:
    assert redis_adapter.READS[command](args, reply) == split


def test_bookkeeping_reads_are_not_cache_reads(runtime: tuple[Runtime, _Collect]) -> None:
    rt = runtime[0]
    caches = Caches(rt)
    target = redis_adapter.CommandTarget("redis", "127.0.0.1", 6379, "0")
    redis_adapter._classify(caches, target, "GET", ("GET", "k"), None)
    with bookkeeping():
        redis_adapter._classify(caches, target, "GET", ("GET", "k"), None)
    assert caches.totals() == {("redis", "127.0.0.1:6379/0"): (0.0, 1.0)}


def test_job_names() -> None:
    def task(x: int) -> None: ...

    class Mailer:
        def send(self) -> None: ...

    assert background_adapter.job_name(task).endswith("test_job_names.<locals>.task")
    assert background_adapter.job_name(functools.partial(task, 1)) == background_adapter.job_name(task)
    assert background_adapter.job_name(Mailer().send).endswith("Mailer.send")


def test_stats_and_report_show_caches_and_jobs(runtime: tuple[Runtime, _Collect]) -> None:
    rt = runtime[0]
    Caches(rt).read("redis", "cache:6379/0", hits=5, misses=20)
    rt.inst.job_duration.record(0.2, ("celery", "tasks.send", ""))
    rt.inst.job_duration.record(0.4, ("celery", "tasks.send", "ValueError"))
    rt.inst.job_queue_wait.record(0.05, ("celery", "tasks.send"))
    rt.inst.job_queries.record(3, ("celery", "tasks.send"))
    rt.inst.job_queries.record(5, ("celery", "tasks.send"))
    stats = summary(rt)
    assert stats["caches"] == [
        {
            "system": "redis",
            "name": "cache:6379/0",
            "hits": 5,
            "misses": 20,
            "hit_ratio": 0.2,
            "floor": 0.8,
            "below_floor": True,
        }
    ]
    [job] = stats["jobs"]
    assert (job["name"], job["count"], job["errors"], job["mean_queries"]) == ("tasks.send", 2, 1, 4.0)
    assert "queue_wait_p95_ms" in job
    # a worker (no request, jobs ran) is judged by them, and the low cache degrades it
    assert stats["status"] == "degraded"
    assert stats["status_reasons"] == ["cache cache:6379/0 (redis): hit ratio 20.0% below 80%"]
    text = render(stats)
    assert "celery tasks.send" in text and "Jobs:" in text
    assert "redis cache:6379/0: 5 hits, 20 misses, hit ratio 20.0%  BELOW the 80% floor" in text


def test_the_floor_gauge_follows_the_setting(runtime: tuple[Runtime, _Collect]) -> None:
    rt = runtime[0]
    Caches(rt).read("redis", "c", hits=1)
    gauge = rt.registry.get("perf.cache.hit_floor")
    assert gauge is not None and gauge.values() == {("redis", "c"): 0.8}


def test_registry_rows_of_this_issue() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, replaces in (
        ("sqlite3", ("sqlite3",)),
        ("psycopg", ("psycopg",)),
        ("asyncpg", ("asyncpg",)),
        ("pymysql", ("pymysql",)),
        ("redis", ("redis",)),
        ("celery", ()),
        ("background_tasks", ()),
    ):
        row = BY_NAME[name]
        assert row.replaces == replaces
        if name not in ("sqlite3", "background_tasks"):
            assert row.extra in extras, f"{name}: extra [{row.extra}] missing from pyproject.toml"
    assert len({row.name for row in REGISTRY}) == len(REGISTRY)


@pytest.fixture
def django_orm(
    sqlite_installed: tuple[Runtime, _Collect], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Runtime, Any]]:
    """Django (in this process: no test here configures it differently) with our ORM hook on;
    its connections are closed after each test (files: Django keeps in-memory ones open)."""
    import django
    from django.conf import settings

    from otel_perf._integrations import django as django_adapter

    if not settings.configured:
        where = tmp_path_factory.mktemp("django")
        databases = {
            alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(where / f"{alias}.sqlite3")}
            for alias in ("default", "outside", "unclaimed")
        }
        settings.configure(DATABASES=databases, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()
    from django.db import connections
    from django.db.backends import signals
    from django.db.backends.base import base

    rt = sqlite_installed[0]
    django_adapter.install(rt, base)
    django_adapter.install(rt, signals)
    try:
        yield rt, connections
    finally:
        django_adapter.uninstall()
        connections.close_all()


def _django_statement(rt: Runtime, connection: Any) -> tuple[int, list[bool]]:
    """One statement through Django's cursor: the unit's query count, and whether each layer
    under our execute wrapper saw the outer-layer flag set."""
    from otel_perf._core.statements import recorded_above

    flags: list[bool] = []

    def inner(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        flags.append(recorded_above())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(inner):  # after ours in the list: runs inside it
        work, token = _unit(rt)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            current_work.reset(token)
    return work.query_count, flags


def test_django_statements_count_once_and_set_the_outer_flag_only_over_a_recording_driver(
    django_orm: tuple[Runtime, Any],
) -> None:
    from django.db.backends import signals

    from otel_perf._core import statements

    rt, connections = django_orm
    # Django connects as the outer layer: the driver's own connection, no flag per statement.
    default = connections["default"]
    default.ensure_connection()
    assert type(default.connection) is sqlite3.Connection
    assert _django_statement(rt, default) == (1, [False])

    def connect_outside(connection: Any) -> None:
        """A connection made where our connect() patch does not reach (a backend's own connect)."""
        connection.connection = connection.get_new_connection(connection.get_connection_params())
        signals.connection_created.send(sender=type(connection), connection=connection)

    # The sqlite3 adapter wrapped it: disowned at connect time, still no flag per statement.
    outside = connections["outside"]
    connect_outside(outside)
    assert type(outside.connection) is not sqlite3.Connection
    assert _django_statement(rt, outside) == (1, [False])

    # A driver adapter that records the connection and cannot let go of it: the flag makes it
    # pass the statement through, so it still counts once.
    statements.unregister_disowner(sqlite_adapter._disown)
    try:
        unclaimed = connections["unclaimed"]
        connect_outside(unclaimed)
        assert sqlite_adapter._target_of(unclaimed.connection) is not None  # the adapter records it
        assert _django_statement(rt, unclaimed) == (1, [True])
    finally:
        statements.register_disowner(sqlite_adapter._disown)


def test_uninstalling_leaves_the_apps_own_execute_wrappers(django_orm: tuple[Runtime, Any]) -> None:
    import gc

    from otel_perf._integrations import django as django_adapter

    rt, connections = django_orm
    connection = connections["default"]
    connection.ensure_connection()

    def apps_wrapper(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        return execute(sql, params, many, context)

    connection.execute_wrappers.append(apps_wrapper)
    try:
        assert len(connection.execute_wrappers) == 2  # ours, then the app's
        django_adapter.uninstall()
        gc.collect()
        assert connection.execute_wrappers == [apps_wrapper]
        assert _django_statement(rt, connection) == (0, [False])  # nothing of ours left
    finally:
        connection.execute_wrappers.remove(apps_wrapper)


def _django_reads(rt: Runtime, backend: Any) -> None:
    """A scripted sequence on a Django cache backend with our read counting on it."""
    from otel_perf._integrations import django as django_adapter

    django_adapter._count_reads(backend, "shared", Caches(rt))
    backend.set("here", 1)
    assert backend.get("here") == 1  # hit
    assert backend.get("absent", "fallback") == "fallback"  # miss
    assert backend.get_or_set("made", lambda: 2) == 2  # miss (Django reads it again after its add)
    assert backend.get_or_set("made", 3) == 2  # hit
    assert backend.get_many(["here", "made", "none"]) == {"here": 1, "made": 2}  # 2 hits, 1 miss


def test_a_django_cache_read_counts_once_with_get_or_set_as_one_read(
    django_orm: tuple[Runtime, Any],
) -> None:
    from django.core.cache.backends.locmem import LocMemCache

    rt = django_orm[0]
    _django_reads(rt, LocMemCache("get-or-set", {}))
    assert Caches(rt).totals() == {("django", "shared"): (4.0, 3.0)}


def test_a_get_or_set_filled_from_another_cache_counts_both_reads(django_orm: tuple[Runtime, Any]) -> None:
    """Two tiers: the local cache's get_or_set reads the shared one for its default."""
    from django.core.cache.backends.locmem import LocMemCache

    from otel_perf._integrations import django as django_adapter

    rt = django_orm[0]
    caches = Caches(rt)
    local, shared = LocMemCache("local-tier", {}), LocMemCache("shared-tier", {})
    django_adapter._count_reads(local, "local", caches)
    django_adapter._count_reads(shared, "shared", caches)
    shared.set("k", 1)
    assert local.get_or_set("k", lambda: shared.get("k")) == 1
    assert caches.totals() == {("django", "local"): (0.0, 1.0), ("django", "shared"): (1.0, 0.0)}


def test_a_connection_opened_inside_an_apps_execute_wrapper_keeps_ours(
    django_orm: tuple[Runtime, Any],
) -> None:
    """Django's docs' QueryLogger pattern: the thread's first query is inside the app's
    ``with connection.execute_wrapper(...)``; leaving it pops the app's wrapper, not ours."""
    rt, connections = django_orm
    connection = connections["outside"]
    seen: list[str] = []

    def apps_wrapper(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    assert connection.connection is None
    with connection.execute_wrapper(apps_wrapper):
        connection.ensure_connection()  # connects inside the block: ours goes in now
    assert apps_wrapper not in connection.execute_wrappers
    assert _django_statement(rt, connection) == (1, [False])  # ours still records
    assert seen == []


def test_a_django_cache_over_redis_counts_each_read_once(
    django_orm: tuple[Runtime, Any], redis_server: Any
) -> None:
    """Django's RedisCache over redis-py with our Redis adapter on: the reads are Django's only."""
    import redis.client
    from django.core.cache.backends.redis import RedisCache

    rt = django_orm[0]
    redis_adapter.install(rt, redis.client)
    try:
        backend = RedisCache(redis_server.url(5), {"KEY_PREFIX": "once"})
        _django_reads(rt, backend)
        backend.clear()
    finally:
        redis_adapter.uninstall()
    assert Caches(rt).totals() == {("django", "shared"): (4.0, 3.0)}


def test_a_slow_statement_outside_any_span_logs_its_finding_in_its_root_spans_trace(
    sqlite_installed: tuple[Runtime, _Collect],
) -> None:
    """A script's slow statement (no request, no job): its finding's log record is emitted in
    the root span's context, so the exported record names that trace, as its text does."""
    import logging

    from opentelemetry import trace

    rt, collect = sqlite_installed
    rt.slow_query_s = 0.0  # every statement is slow
    seen: list[tuple[str, int, int]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            ctx = trace.get_current_span().get_span_context()
            seen.append((record.getMessage(), ctx.trace_id, ctx.span_id))

    handler = Capture()
    logger = logging.getLogger("otel_perf")
    logger.addHandler(handler)
    try:
        sqlite3.connect(":memory:").execute("SELECT 42")
    finally:
        logger.removeHandler(handler)
    [span] = [s for s in collect.spans if s.name == "SELECT"]
    [(message, trace_id, span_id)] = [entry for entry in seen if entry[0].startswith("slow query")]
    assert (trace_id, span_id) == (span.context.trace_id, span.context.span_id)
    assert f"trace_id={trace_id:032x}" in message


def test_a_retried_job_run_is_a_retry_not_a_failure(runtime: tuple[Runtime, _Collect]) -> None:
    """Celery's self.retry() ends a run with error.type "Retry": the task runs again.  A task that
    succeeds on its third try is 3 runs, 2 retries, 0 failures, and its worker stays healthy."""
    rt = runtime[0]
    for error_type in ("Retry", "Retry", ""):
        rt.inst.job_duration.record(0.1, ("celery", "tasks.flaky", error_type))
    rt.inst.job_duration.record(0.1, ("celery", "tasks.broken", "ValueError"))
    stats = summary(rt)
    jobs = {job["name"]: job for job in stats["jobs"]}
    flaky, broken = jobs["tasks.flaky"], jobs["tasks.broken"]
    assert (flaky["count"], flaky["errors"], flaky["retries"], flaky["error_rate"]) == (3, 0, 2, 0.0)
    assert (broken["count"], broken["errors"], broken["retries"]) == (1, 1, 0)
    assert "0.0% (2 retried)" in render(stats)
