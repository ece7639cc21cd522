"""SQLAlchemy: every statement of every engine handed to the statement core, plus pool metrics.

Each engine's dialect gets three hooks the first time the engine connects (every engine,
sync or the one inside an ``AsyncEngine``; SQLAlchemy 2.0 and 2.1; engines created before
we loaded too): ``do_execute``/``do_executemany``/``do_execute_no_params``, the dialect
methods every statement goes through, are wrapped on the dialect object to run between
two clock reads and hand the statement to :class:`~otel_perf._core.statements.Statements`
(spans, ``db.client.operation.duration``, query counts, slow-query and N+1 findings),
failed ones included.  No SQLAlchemy event is used: a listener on the connection events
(``before/after_cursor_execute``, ``engine_connect``) switches every ``Connection`` to
SQLAlchemy's slower evented path, and even the dialect events (``do_execute``,
``handle_error``) cost about 2 µs of dispatch per statement, more than our own bookkeeping.
The contrib SQLAlchemy instrumentation declares ``sqlalchemy < 2.1`` and then instruments
nothing on what pip installs today, and records no ``db.client.operation.duration``; this
adapter does both.  Pool usage is read at collection time, so it costs the hot path nothing.

The dialect's ``connect`` is hooked too, before the engine's first connection is made, so the
driver adapters beneath (sqlite3, psycopg, asyncpg, PyMySQL) hand back their driver's own
connection for the pool: a statement through SQLAlchemy is recorded once, by SQLAlchemy's hooks,
at no per-statement cost (see :func:`_connect_as_outer_layer`).
"""

from __future__ import annotations

import contextlib
import logging
import types
import weakref
from time import perf_counter
from typing import Any

from otel_perf import _names as n
from otel_perf._core import guard
from otel_perf._core.probes import forced_off
from otel_perf._core.runtime import Runtime
from otel_perf._core.statements import (
    DbTarget,
    Statements,
    batch_size,
    db_system,
    disown,
    outer_connection,
)
from otel_perf._metrics.instruments import Key

logger = logging.getLogger("otel_perf")
_INFO = "_otel_perf_info"
_PENDING = "_otel_perf_pending"
_MARK = "_otel_perf_original"
#: Where a dialect's hooks record which listener installed them.
_HOOKED = "_otel_perf_hooked"
_state: dict[str, Any] = {}


def _target(engine: Any) -> DbTarget:
    """The statement core's target for ``engine``: system, database, server."""
    url = engine.url
    return DbTarget(
        db_system(engine.dialect.name),
        str(url.database or ""),
        str(url.host or ""),
        int(url.port) if url.port else None,
    )


class SQLAlchemyListener:
    """The dialect hooks and pool bookkeeping of one runtime.

    The per-statement path (the dialect hooks) adds one Python call to SQLAlchemy's own:
    the statement core's ``record``, handed the dialect's :class:`DbTarget` directly.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.statements = Statements(runtime)
        #: each engine known, with its pool's name (unique in the process: see :meth:`know`);
        #: its pool is read at each collection, so one ``dispose()`` replaced is still measured
        self.engines: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        #: pool -> its name: engines sharing a pool (``engine.execution_options()`` returns one
        #: on the engine's pool) share its name
        self._pool_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._dialects: weakref.WeakKeyDictionary[Any, DbTarget] = weakref.WeakKeyDictionary()
        #: engines that connect straight to SQLAlchemy's method (see :meth:`bypass`)
        self._bypassed: weakref.WeakSet[Any] = weakref.WeakSet()
        #: threads inside QueuePool checkout right now (waiting when the pool is exhausted) are
        #: the entries of a list on the pool object itself (attribute ``_otel_perf_pending``):
        #: list append/pop are atomic, so checkouts take no lock of ours
        self.timeouts = runtime.registry.counter(
            n.DB_CONN_TIMEOUTS,
            "{timeout}",
            "Connection checkouts that timed out (pool exhausted).",
            (n.A_DB_POOL_NAME,),
        )

    def know(self, engine: Any) -> None:
        """Remember ``engine`` (its pool's gauges); idempotent per listener."""
        cached = getattr(engine, _INFO, None)
        if cached is not None and cached is self:
            return
        if engine not in self.engines:
            self.engines[engine] = self._name_of(engine)
        with contextlib.suppress(AttributeError):  # no __dict__: the weak mapping serves
            setattr(engine, _INFO, self)

    # The hooks run the dialect's own method between two clock reads.  Statements without an
    # execution context (internal executions) and those of SQLAlchemy's first-connect dialect
    # initialization are left to SQLAlchemy, unmeasured: that connection is built with
    # ``_allow_autobegin=False``, which every SQLAlchemy 2.x stores on it and no other
    # connection has (``_has_events=False``, checked before, is stored on *every* connection
    # up to 2.0.55 and in 2.1.0).  Were the attribute ever gone, those few statements would be
    # measured: the check fails safe.  Closures, not a shared helper: each adds no Python call
    # beyond the dialect's method and ``record``.
    def hook(self, engine: Any, statements: Any = None) -> None:
        """Wrap the execute methods of ``engine``'s dialect (idempotent per listener).

        ``statements``: what the hooks hand statements to (default: the statement core; the
        self-check passes a counter).
        """
        dialect = engine.dialect
        if dialect.__dict__.get(_HOOKED) is self:
            return
        target = _target(engine)
        statements = statements or self.statements
        record = statements.record
        failed = statements.failed
        cls = type(dialect)
        no_params = cls.do_execute_no_params
        do_execute = _timed_with_parameters(
            statements, dialect, target, cls.do_execute, False, "sqlalchemy.do_execute"
        )
        do_executemany = _timed_with_parameters(
            statements, dialect, target, cls.do_executemany, True, "sqlalchemy.do_executemany"
        )

        def do_execute_no_params(cursor: Any, statement: str, context: Any = None) -> None:
            if context is None or context.root_connection.__dict__.get("_allow_autobegin") is False:
                no_params(dialect, cursor, statement, context)
                return
            t0 = perf_counter()
            try:
                no_params(dialect, cursor, statement, context)
            except BaseException as exc:
                failed(target, statement, t0, exc, 0)
                raise
            seconds = perf_counter() - t0
            try:
                record(target, statement, seconds, "", 0)
            except Exception as exc:
                guard.internal_error("sqlalchemy.do_execute_no_params", exc)

        dialect.do_execute = do_execute
        dialect.do_executemany = do_executemany
        dialect.do_execute_no_params = do_execute_no_params
        dialect.connect = _connect_as_outer_layer(dialect.connect)
        setattr(dialect, _HOOKED, self)
        self._dialects[dialect] = target

    def bypass(self, engine: Any, original: Any) -> None:
        """Let ``engine`` connect without our ``Engine.connect`` wrapper from now on.

        Every Session connects once per unit of work; once its engine's dialect is hooked
        there is nothing left for the wrapper to do, so the engine gets SQLAlchemy's own
        method as an instance attribute (which shadows the class's wrapper).  Only once
        the hooks are really in place: a failed attempt is retried on the next connect.
        """
        if engine.dialect.__dict__.get(_HOOKED) is not self or "connect" in engine.__dict__:
            return
        if forced_off("sqlalchemy-connect-bypass"):
            return
        engine.__dict__["connect"] = types.MethodType(original, engine)
        self._bypassed.add(engine)

    def restore_connects(self) -> None:
        """Undo :meth:`bypass`: every engine connects through the class's method again."""
        for engine in list(self._bypassed):
            method = engine.__dict__.get("connect")
            if isinstance(method, types.MethodType) and method.__func__ is _state.get("connect"):
                del engine.__dict__["connect"]
        self._bypassed = weakref.WeakSet()

    def target(self, dialect: Any) -> DbTarget:
        """The target ``dialect``'s hooks record with (``dialect`` must be hooked)."""
        return self._dialects[dialect]

    def unhook(self) -> None:
        """Remove the hooks from every dialect this listener wrapped."""
        for dialect in list(self._dialects):
            if dialect.__dict__.get(_HOOKED) is self:
                for name in (*_HOOKS, _HOOKED):
                    dialect.__dict__.pop(name, None)
        self._dialects = weakref.WeakKeyDictionary()

    def connect(self, conn: Any) -> None:
        self.engine_seen(conn.engine)

    def engine_seen(self, engine: Any) -> None:
        """Know and hook ``engine``, before its first connection (see :func:`_connect_as_outer_layer`)."""
        try:
            self.know(engine)
            self.hook(engine)
            _disown_on_connect(engine.pool)
        except Exception as exc:
            guard.internal_error("sqlalchemy.engine_connect", exc)

    def _name_of(self, engine: Any) -> str:
        """The name of ``engine``'s pool: the one it has if another engine shares the pool,
        else a new one, unique among the pools: two engines on one database (an async and a
        sync engine, two binds) would make one series of two pools, so the second gets " #2"."""
        pool = engine.pool
        name = self._pool_names.get(pool)
        if name is None:
            name = base = _pool_name(engine)
            taken = {*self._pool_names.values(), *self.engines.values()}
            number = 2
            while name in taken:
                name = f"{base} #{number}"
                number += 1
            self._pool_names[pool] = name
        return name

    def pools(self) -> list[tuple[Any, str]]:
        """(pool, name) of every engine known, each pool once (engines may share one); a pool
        ``dispose()`` put in place keeps its engine's name."""
        out: list[tuple[Any, str]] = []
        seen: set[int] = set()
        for engine, name in list(self.engines.items()):
            pool = getattr(engine, "pool", None)
            if pool is None or id(pool) in seen:
                continue
            seen.add(id(pool))
            known = self._pool_names.get(pool)
            if known is None:  # the engine's new pool (dispose): its name carries over
                self._pool_names[pool] = known = name
            out.append((pool, known))
        return out

    def pool_name(self, pool: Any) -> str:
        return self._pool_names.get(pool, "")

    def pool_points(self) -> list[tuple[float, Key]]:
        out: list[tuple[float, Key]] = []
        for pool, name in self.pools():
            checkedout = getattr(pool, "checkedout", None)
            checkedin = getattr(pool, "checkedin", None)
            if checkedout is None or checkedin is None:
                continue
            out.append((float(checkedout()), (name, "used")))
            out.append((float(checkedin()), (name, "idle")))
        return out

    def pending_points(self) -> list[tuple[float, Key]]:
        waiting = [(getattr(pool, _PENDING, None), name) for pool, name in self.pools()]
        return [(float(len(inside)), (name,)) for inside, name in waiting if inside is not None]

    def checkout(self, original: Any) -> Any:
        """Wrap ``QueuePool._do_get``: count threads waiting for a connection, and timeouts."""
        listener = self
        from sqlalchemy.exc import TimeoutError as PoolTimeout  # not the builtin TimeoutError

        def _do_get(pool: Any) -> Any:
            # A list on the pool, not a counter under a lock nor a WeakKeyDictionary entry:
            # this runs on every checkout, from many threads at once.
            inside = pool.__dict__.get(_PENDING)
            if inside is None:
                inside = pool.__dict__.setdefault(_PENDING, [])  # atomic: one list per pool
            inside.append(None)
            try:
                return original(pool)
            except PoolTimeout:  # the pool is exhausted
                listener.timeouts.add(1, (listener.pool_name(pool),))
                raise
            finally:
                inside.pop()

        setattr(_do_get, _MARK, original)
        return _do_get

    def pool_max(self) -> list[tuple[float, Key]]:
        out: list[tuple[float, Key]] = []
        for pool, name in self.pools():
            size = getattr(pool, "size", None)
            overflow = getattr(pool, "_max_overflow", None)
            if size is None or overflow is None or overflow < 0:
                continue
            out.append((float(size() + overflow), (name,)))
        return out


def _timed_with_parameters(
    statements: Statements,
    dialect: Any,
    target: DbTarget,
    original: Any,
    executemany: bool,
    where: str,
) -> Any:
    """``dialect.do_execute``/``do_executemany`` (``original``, unbound) timed and recorded."""
    record = statements.record
    failed = statements.failed

    if executemany:

        def hooked_many(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
            if context is None or context.root_connection.__dict__.get("_allow_autobegin") is False:
                original(dialect, cursor, statement, parameters, context)
                return
            t0 = perf_counter()
            try:
                original(dialect, cursor, statement, parameters, context)
            except BaseException as exc:
                failed(target, statement, t0, exc, batch_size(parameters))
                raise
            seconds = perf_counter() - t0
            try:
                record(target, statement, seconds, "", batch_size(parameters))
            except Exception as exc:
                guard.internal_error(where, exc)

        return hooked_many

    def hooked(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        if context is None or context.root_connection.__dict__.get("_allow_autobegin") is False:
            original(dialect, cursor, statement, parameters, context)
            return
        t0 = perf_counter()
        try:
            original(dialect, cursor, statement, parameters, context)
        except BaseException as exc:
            failed(target, statement, t0, exc, 0)
            raise
        seconds = perf_counter() - t0
        try:
            record(target, statement, seconds, "", 0)
        except Exception as exc:
            guard.internal_error(where, exc)

    return hooked


def _disown_on_connect(pool: Any) -> None:
    """Disown every driver connection ``pool`` opens, first of its listeners (once per pool).

    A pool that opens connections without the dialect's ``connect`` (``create_engine(creator=...)``,
    ``create_engine(pool=...)``) hands the hooks connections a driver adapter wrapped: disowned
    before anything runs on them (the dialect's first-connect initialization included), their
    statements are recorded once, by the hooks.  Once per pooled connection, never per statement.
    """
    from sqlalchemy import event

    if not event.contains(pool, "connect", _disown_new):
        event.listen(pool, "connect", _disown_new, insert=True)


def _disown_new(dbapi_connection: Any, connection_record: Any) -> None:
    if _state.get("listener") is not None:  # not after uninstall
        disown(dbapi_connection)


def _connect_as_outer_layer(connect: Any) -> Any:
    """``dialect.connect`` opening driver connections that driver adapters leave unwrapped.

    SQLAlchemy records its statements itself (the hooks above), so the psycopg, sqlite3,
    asyncpg and pymysql adapters must not record them a second time: the pool's connections
    are opened with :func:`~otel_perf._core.statements.outer_connection` set, which those
    adapters honour by handing back the driver's own connection (nothing added per
    statement), and any that was wrapped anyway (aiosqlite connects in its own thread) is
    disowned.  Runs once per pooled connection, never per statement.
    """

    def connect_outer(*cargs: Any, **cparams: Any) -> Any:
        with outer_connection():
            connection = connect(*cargs, **cparams)
        disown(connection)
        return connection

    setattr(connect_outer, _MARK, connect)
    return connect_outer


def _pool_name(engine: Any) -> str:
    """``db.client.connection.pool.name`` as the official instrumentation names it: the pool's
    ``logging_name`` (``create_engine(pool_logging_name=...)``), else ``driver://host:port/db``."""
    logging_name = getattr(engine.pool, "logging_name", None)
    if isinstance(logging_name, str) and logging_name:
        return logging_name[:200]
    url = engine.url
    return f"{url.drivername or ''}://{url.host or ''}:{url.port or ''}/{url.database or ''}"[:200]


class _Counted:
    """Stands in for the statement core in the self-check: counts, records nothing."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def record(self, target: DbTarget, statement: str, seconds: float, error_type: str, batch: int) -> None:
        self.statements.append(statement)

    def failed(self, target: DbTarget, statement: str, t0: float, exc: BaseException, batch: int) -> None:
        self.statements.append(statement)


_PROBE = "SELECT 1 /* otel-perf self-check */"


def self_check(runtime: Runtime) -> str:
    """Run one statement through a private in-memory SQLite engine and see the hook count it.

    What this proves is the whole path a statement takes on this SQLAlchemy (the connect
    wrapper hooks the dialect, the hooks see the statement and do not mistake it for the
    dialect's own initialization); the probe's statement reaches no metric, span or finding.
    Returns what is lost when it fails, "" when the hook records.
    """
    from sqlalchemy import create_engine

    listener = _state.get("listener")
    if listener is None:
        return "the engine hook is not attached"
    engine = create_engine("sqlite://")
    counted = _Counted()
    try:
        engine.__dict__[_INFO] = listener  # known: no pool gauge for the probe
        listener.hook(engine, counted)
        with engine.connect() as conn:
            conn.exec_driver_sql(_PROBE).all()
    finally:
        engine.dispose()
    if _PROBE not in counted.statements:
        return (
            "statements run through SQLAlchemy never reach our hook on this release: no DB spans, "
            "no db.client.operation.duration, no query counts or N+1/slow-query findings. "
            "Upgrade SQLAlchemy (the tests cover 2.0.0 to the newest 2.1) and report this."
        )
    return ""


def install(runtime: Runtime, _sqlalchemy: Any) -> None:
    """Hook every engine (SQLAlchemy was imported); register the pool gauges."""
    listener = SQLAlchemyListener(runtime)
    runtime.registry.gauge(
        n.DB_CONN_COUNT,
        "{connection}",
        "Connections in the pool by state.",
        (n.A_DB_POOL_NAME, n.A_DB_CONN_STATE),
        listener.pool_points,
    )
    runtime.registry.gauge(
        n.DB_CONN_MAX,
        "{connection}",
        "Most connections the pool allows.",
        (n.A_DB_POOL_NAME,),
        listener.pool_max,
    )
    runtime.registry.gauge(
        n.DB_CONN_PENDING,
        "{request}",
        "Threads waiting for a pooled connection.",
        (n.A_DB_POOL_NAME,),
        listener.pending_points,
    )

    attach_listener(listener)
    from sqlalchemy.pool import QueuePool

    if getattr(QueuePool._do_get, _MARK, None) is None:
        _state["do_get"] = QueuePool._do_get
        QueuePool._do_get = listener.checkout(QueuePool._do_get)  # type: ignore[method-assign]


_HOOKS = ("do_execute", "do_executemany", "do_execute_no_params", "connect")


def attach_listener(listener: SQLAlchemyListener) -> None:
    """Hook ``listener`` into every engine (idempotent per listener)."""
    from sqlalchemy.engine import Engine

    previous = _state.get("listener")
    if previous is listener:
        return
    if previous is not None:  # its engines would connect straight past the new listener
        previous.restore_connects()
    # Each engine's dialect is hooked and its pool named when the engine first connects
    # (what the engine_connect event would tell us, without making every connection evented).
    original = Engine.connect
    if getattr(original, _MARK, None) is None:

        def connect(engine: Any, *args: Any, **kwargs: Any) -> Any:
            # Hooked before the first connection is made, so the pool opens even that one
            # through the hooked dialect.connect (its driver connection then stays unwrapped).
            active = _state.get("listener")
            if active is not None:
                known = engine.__dict__.get(_INFO)
                hooked = engine.dialect.__dict__.get(_HOOKED)
                if known is not active or hooked is not active:
                    active.engine_seen(engine)
            conn = original(engine, *args, **kwargs)
            if active is not None:
                active.bypass(engine, original)
            return conn

        setattr(connect, _MARK, original)
        Engine.connect = connect  # type: ignore[method-assign,assignment]
        _state["connect"] = original
    _state["listener"] = listener


def detach_listener(listener: SQLAlchemyListener) -> None:
    """Undo :func:`attach_listener`."""
    from sqlalchemy.engine import Engine

    listener.unhook()
    listener.restore_connects()
    if _state.get("listener") is listener:
        del _state["listener"]
    original = _state.pop("connect", None)
    if original is not None:
        Engine.connect = original  # type: ignore[method-assign]


def uninstall() -> None:
    listener = _state.get("listener")
    if listener is None:
        return
    detach_listener(listener)
    original = _state.pop("do_get", None)
    if original is not None:
        from sqlalchemy.pool import QueuePool

        QueuePool._do_get = original  # type: ignore[method-assign]
