"""SQLAlchemy: a CLIENT span, a duration metric and insight counters per statement.

Each engine's dialect gets three hooks the first time the engine connects (every engine,
sync or the one inside an ``AsyncEngine``; SQLAlchemy 2.0 and 2.1; engines created before
we loaded too): ``do_execute``/``do_executemany``/``do_execute_no_params``, the dialect
methods every statement goes through, are wrapped on the dialect object to run between
two clock reads and record the statement, failed ones included.  No SQLAlchemy event is
used: a listener on the connection events (``before/after_cursor_execute``,
``engine_connect``) switches every ``Connection`` to SQLAlchemy's slower evented path, and
even the dialect events (``do_execute``, ``handle_error``) cost about 2 µs of dispatch per
statement, more than our own bookkeeping.
The contrib SQLAlchemy instrumentation declares ``sqlalchemy < 2.1`` and then instruments
nothing on what pip installs today, and records no ``db.client.operation.duration``; this
listener does both.

Per statement: time it, normalize it (cached), add it to the current :class:`Work`,
record ``db.client.operation.duration`` by operation and table, flag it slow, and, when
the enclosing span is sampled, emit a child span with explicit start/end times (no
context attach needed: a statement has no children).  Pool usage is read at collection
time, so it costs the hot path nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import types
import weakref
from time import perf_counter
from typing import Any

from opentelemetry.context import get_current as _current_context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._analysis.sql import Shape
from otel_perf._core import guard
from otel_perf._core.runtime import Runtime
from otel_perf._core.spans import FrozenAttributes, SpanStarter, runtime_context_var
from otel_perf._core.work import current_work
from otel_perf._metrics.instruments import Key

logger = logging.getLogger("otel_perf")
_INFO = "_otel_perf_info"
_PENDING = "_otel_perf_pending"
_SAMPLED = int(TraceFlags.SAMPLED)
#: Bound of the per-dialect statement cache and the per-engine span-attribute cache (each
#: cleared whole when full).
_CACHED_STATEMENTS = 1024
_MARK = "_otel_perf_original"
#: Where a dialect's hooks record which listener installed them.
_HOOKED = "_otel_perf_hooked"
_SYSTEMS = {"mssql": "microsoft.sql_server", "oracle": "oracle.db", "postgresql": "postgresql"}
_state: dict[str, Any] = {}
_ERROR = Status(StatusCode.ERROR)


def _system(dialect_name: str) -> str:
    """``db.system.name`` for a SQLAlchemy dialect name."""
    return _SYSTEMS.get(dialect_name, dialect_name)


class _DialectState:
    """What every statement of one dialect needs: its system name and its statement cache."""

    __slots__ = ("statements", "system")

    def __init__(self, dialect: Any) -> None:
        self.system = _system(dialect.name)
        #: raw statement -> (shape, metric key); bounded, cleared whole when full
        self.statements: dict[str, tuple[Shape, Key]] = {}


class _EngineInfo:
    """What a statement's span needs from its engine: attributes, and cached span shapes."""

    __slots__ = ("attributes", "spans", "system")

    def __init__(self, engine: Any) -> None:
        self.system = _system(engine.dialect.name)
        url = engine.url
        attrs: dict[str, Any] = {n.A_DB_SYSTEM: self.system}
        if url.database:
            attrs["db.namespace"] = str(url.database)[-256:]
        if url.host:
            attrs["server.address"] = url.host
            if url.port:
                attrs["server.port"] = int(url.port)
        self.attributes = attrs
        #: normalized statement -> its span's attributes and name (the usual case: not slow,
        #: not failed, not a batch); bounded like ``statements``
        self.spans: dict[str, tuple[FrozenAttributes, str]] = {}


class SQLAlchemyListener:
    """The event handlers, bound to one runtime.

    The per-statement path (the dialect hooks and ``_record``) is written for the number of
    Python calls and bytecodes it runs, which is what it costs inside a busy app: the hooks
    hand over their dialect's state (system name, statement cache), so a raw statement maps
    to its shape *and* its metric key in one dict lookup; the engine's info (span attributes)
    is looked up only for a statement that gets a span; the unit-of-work counters are
    updated inline.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.spans = SpanStarter(runtime.tracer)
        self._context_var = runtime_context_var()
        self._engines: weakref.WeakKeyDictionary[Any, _EngineInfo] = weakref.WeakKeyDictionary()
        self._dialects: weakref.WeakKeyDictionary[Any, _DialectState] = weakref.WeakKeyDictionary()
        self.pools: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
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

    def info(self, engine: Any) -> _EngineInfo:
        cached = getattr(engine, _INFO, None)
        if cached is not None and cached[0] is self:
            found: _EngineInfo = cached[1]
            return found
        info = self._engines.get(engine)
        if info is None:
            info = self._engines[engine] = _EngineInfo(engine)
            self.pools[engine.pool] = _pool_name(engine)
        with contextlib.suppress(AttributeError):  # no __dict__: the weak mapping serves
            setattr(engine, _INFO, (self, info))
        return info

    # The hooks run the dialect's own method between two clock reads.  Statements without an
    # execution context (internal executions) and those of connections built with
    # ``_has_events=False`` (SQLAlchemy's own first-connect dialect initialization, which
    # never sees engine events) are left to SQLAlchemy, unmeasured.  Closures, not a shared
    # helper: each adds no Python call beyond the dialect's method and ``_record``.
    def hook(self, dialect: Any) -> None:
        """Wrap ``dialect``'s execute methods (idempotent per listener)."""
        if dialect.__dict__.get(_HOOKED) is self:
            return
        listener = self
        state = _DialectState(dialect)
        cls = type(dialect)
        no_params = cls.do_execute_no_params
        do_execute = _timed_with_parameters(
            self, dialect, state, cls.do_execute, False, "sqlalchemy.do_execute"
        )
        do_executemany = _timed_with_parameters(
            self, dialect, state, cls.do_executemany, True, "sqlalchemy.do_executemany"
        )

        def do_execute_no_params(cursor: Any, statement: str, context: Any = None) -> None:
            conn = context.root_connection if context is not None else None
            if conn is None or conn.__dict__.get("_has_events") is False:
                no_params(dialect, cursor, statement, context)
                return
            t0 = perf_counter()
            try:
                no_params(dialect, cursor, statement, context)
            except BaseException as exc:
                listener.failed(conn, statement, t0, exc, False, state)
                raise
            seconds = perf_counter() - t0
            try:
                listener._record(conn, statement, seconds, "", False, state)
            except Exception as exc:
                guard.internal_error("sqlalchemy.do_execute_no_params", exc)

        dialect.do_execute = do_execute
        dialect.do_executemany = do_executemany
        dialect.do_execute_no_params = do_execute_no_params
        setattr(dialect, _HOOKED, self)
        self._dialects[dialect] = state

    def bypass(self, engine: Any, original: Any) -> None:
        """Let ``engine`` connect without our ``Engine.connect`` wrapper from now on.

        Every Session connects once per unit of work; once its engine's dialect is hooked
        there is nothing left for the wrapper to do, so the engine gets SQLAlchemy's own
        method as an instance attribute (which shadows the class's wrapper).  Only once
        the hooks are really in place: a failed attempt is retried on the next connect.
        """
        if engine.dialect.__dict__.get(_HOOKED) is not self or "connect" in engine.__dict__:
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

    def dialect_state(self, dialect: Any) -> _DialectState:
        """The state ``dialect``'s hooks record with (``dialect`` must be hooked)."""
        return self._dialects[dialect]

    def unhook(self) -> None:
        """Remove the hooks from every dialect this listener wrapped."""
        for dialect in list(self._dialects):
            if dialect.__dict__.get(_HOOKED) is self:
                for name in (*_HOOKS, _HOOKED):
                    dialect.__dict__.pop(name, None)
        self._dialects = weakref.WeakKeyDictionary()

    def failed(
        self,
        conn: Any,
        statement: str,
        t0: float,
        exc: BaseException,
        executemany: bool,
        state: _DialectState,
    ) -> None:
        """Record a statement the database refused (or that was interrupted)."""
        try:
            error_type = type(exc).__qualname__ or "Error"
            self._record(conn, statement, perf_counter() - t0, error_type, executemany, state)
        except Exception as error:
            guard.internal_error("sqlalchemy.failed", error)

    def _record(
        self,
        conn: Any,
        statement: str,
        seconds: float,
        error_type: str,
        executemany: bool,
        state: _DialectState,
    ) -> None:
        rt = self.rt
        statements = state.statements
        entry = statements.get(statement)
        if entry is None:
            shape = rt.shapes.shape(statement)
            entry = (shape, (state.system, shape.operation, shape.collection, ""))
            if len(statements) >= _CACHED_STATEMENTS:
                statements.clear()
            statements[statement] = entry
        shape, key = entry
        if error_type:
            key = (state.system, shape.operation, shape.collection, error_type)
        work = current_work.get()
        if work is not None:  # Work.add_query, inlined: this runs for every statement
            text = shape.text
            work.query_count += 1
            work.db_time += seconds
            counts = work.statements
            count = counts.get(text)
            if count is not None:
                counts[text] = count + 1
            elif len(counts) < work.max_statements:
                counts[text] = 1
            else:
                work.statements_dropped += 1
        # The current span straight from the context (trace.get_current_span() plus an ABC
        # isinstance check costs four more calls per statement).
        var = self._context_var
        parent: Span | None = (var.get() if var is not None else _current_context()).get(_SPAN_KEY)  # type: ignore[assignment]
        slow = seconds >= rt.slow_query_s
        if parent is None:
            rt.inst.db_duration.record(seconds, key)
            trace_id = 0
        elif work is not None and parent is work.span:
            # The request's own span: the Work read its ids at the start (span_id: sampled).
            trace_id = work.trace_id
            if work.span_id and parent.is_recording():
                rt.inst.db_duration.record(seconds, key, trace_id, work.span_id)
                self._span(work.context, shape, conn.engine, seconds, error_type, slow, executemany)
            else:
                rt.inst.db_duration.record(seconds, key)
        else:
            pctx = parent.get_span_context()
            trace_id = pctx.trace_id
            if pctx.trace_flags & _SAMPLED and parent.is_recording():
                rt.inst.db_duration.record(seconds, key, trace_id, pctx.span_id)
                self._span(pctx, shape, conn.engine, seconds, error_type, slow, executemany)
            else:
                rt.inst.db_duration.record(seconds, key)
        if slow:
            insight.slow_query(rt, work, shape, seconds, f"{trace_id:032x}" if trace_id else "")

    def _span(
        self,
        parent: SpanContext,
        shape: Shape,
        engine: Any,
        seconds: float,
        error_type: str,
        slow: bool,
        executemany: bool,
    ) -> None:
        info = self.info(engine)  # only statements with a span need their engine's details
        end_ns = time.time_ns()
        start_ns = end_ns - int(seconds * 1e9)
        if error_type or slow or executemany:
            attrs, name = self._span_attributes(info, shape, error_type, slow, executemany)
        else:  # the usual statement: its attributes are the same every time, build them once
            cached = info.spans.get(shape.text)
            if cached is None:
                cached = self._span_attributes(info, shape, "", False, False)
                if len(info.spans) >= _CACHED_STATEMENTS:
                    info.spans.clear()
                info.spans[shape.text] = cached
            attrs, name = cached
        status = _ERROR if error_type else None
        # Timed already and childless: hand the processors the ended span directly.
        if self.spans.finished(name, parent, SpanKind.CLIENT, attrs, start_ns, end_ns, status):
            return
        span = self.spans.start(name, None, SpanKind.CLIENT, lambda: attrs, start_ns)
        if status is not None:
            span.set_status(status)
        span.end(end_time=end_ns)

    def _span_attributes(
        self, info: _EngineInfo, shape: Shape, error_type: str, slow: bool, executemany: bool
    ) -> tuple[FrozenAttributes, str]:
        """A statement span's attributes (shared, read-only) and name."""
        attrs = dict(info.attributes)
        if shape.operation:
            attrs[n.A_DB_OPERATION] = shape.operation
        if shape.collection:
            attrs[n.A_DB_COLLECTION] = shape.collection
        if self.rt.capture_sql:
            attrs[n.A_DB_QUERY_TEXT] = shape.text
        if executemany:
            attrs["db.operation.batch.size"] = 2  # semconv: present (>= 2) for batches; exact size unknown
        if slow:
            attrs[n.A_PERF_SLOW] = True
        if error_type:
            attrs[n.A_ERROR_TYPE] = error_type
        return FrozenAttributes(attrs), f"{shape.operation} {shape.collection}".strip() or info.system

    def connect(self, conn: Any) -> None:
        try:
            engine = conn.engine
            self.info(engine)
            self.hook(engine.dialect)
        except Exception as exc:
            guard.internal_error("sqlalchemy.engine_connect", exc)

    def pool_points(self) -> list[tuple[float, Key]]:
        out: list[tuple[float, Key]] = []
        for pool, name in list(self.pools.items()):
            checkedout = getattr(pool, "checkedout", None)
            checkedin = getattr(pool, "checkedin", None)
            if checkedout is None or checkedin is None:
                continue
            out.append((float(checkedout()), (name, "used")))
            out.append((float(checkedin()), (name, "idle")))
        return out

    def pending_points(self) -> list[tuple[float, Key]]:
        waiting = [(getattr(pool, _PENDING, None), name) for pool, name in list(self.pools.items())]
        return [(float(len(inside)), (name,)) for inside, name in waiting if inside is not None]

    def checkout(self, original: Any) -> Any:
        """Wrap ``QueuePool._do_get``: count threads waiting for a connection, and timeouts."""
        listener = self

        def _do_get(pool: Any) -> Any:
            # A list on the pool, not a counter under a lock nor a WeakKeyDictionary entry:
            # this runs on every checkout, from many threads at once.
            inside = pool.__dict__.get(_PENDING)
            if inside is None:
                inside = pool.__dict__.setdefault(_PENDING, [])  # atomic: one list per pool
            inside.append(None)
            try:
                return original(pool)
            except Exception as exc:
                if type(exc).__name__ == "TimeoutError":  # sqlalchemy.exc.TimeoutError: pool exhausted
                    listener.timeouts.add(1, (listener.pools.get(pool, ""),))
                raise
            finally:
                inside.pop()

        setattr(_do_get, _MARK, original)
        return _do_get

    def pool_max(self) -> list[tuple[float, Key]]:
        out: list[tuple[float, Key]] = []
        for pool, name in list(self.pools.items()):
            size = getattr(pool, "size", None)
            overflow = getattr(pool, "_max_overflow", None)
            if size is None or overflow is None or overflow < 0:
                continue
            out.append((float(size() + overflow), (name,)))
        return out


def _timed_with_parameters(
    listener: SQLAlchemyListener,
    dialect: Any,
    state: _DialectState,
    original: Any,
    executemany: bool,
    where: str,
) -> Any:
    """``dialect.do_execute``/``do_executemany`` (``original``, unbound) timed and recorded."""

    def hooked(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        conn = context.root_connection if context is not None else None
        if conn is None or conn.__dict__.get("_has_events") is False:
            original(dialect, cursor, statement, parameters, context)
            return
        t0 = perf_counter()
        try:
            original(dialect, cursor, statement, parameters, context)
        except BaseException as exc:
            listener.failed(conn, statement, t0, exc, executemany, state)
            raise
        seconds = perf_counter() - t0
        try:
            listener._record(conn, statement, seconds, "", executemany, state)
        except Exception as exc:
            guard.internal_error(where, exc)

    return hooked


def _pool_name(engine: Any) -> str:
    url = engine.url
    where = f"{url.host}:{url.port}" if url.host else ""
    return f"{engine.dialect.name}://{where}/{url.database or ''}"[:200]


def instrument(runtime: Runtime) -> SQLAlchemyListener:
    """Attach the listeners once SQLAlchemy is imported; register the pool gauges now."""
    from otel_perf._core.imports import when_imported

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

    def attach(_module: Any) -> None:
        attach_listener(listener)
        from sqlalchemy.pool import QueuePool

        if getattr(QueuePool._do_get, _MARK, None) is None:
            _state["do_get"] = QueuePool._do_get
            QueuePool._do_get = listener.checkout(QueuePool._do_get)  # type: ignore[method-assign]

    when_imported("sqlalchemy", attach)
    return listener


_HOOKS = ("do_execute", "do_executemany", "do_execute_no_params")


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
            conn = original(engine, *args, **kwargs)
            active = _state.get("listener")
            if active is not None:
                known = engine.__dict__.get(_INFO)
                hooked = engine.dialect.__dict__.get(_HOOKED)
                if known is None or known[0] is not active or hooked is not active:
                    active.connect(conn)
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


def uninstrument() -> None:
    listener = _state.get("listener")
    if listener is None:
        return
    detach_listener(listener)
    original = _state.pop("do_get", None)
    if original is not None:
        from sqlalchemy.pool import QueuePool

        QueuePool._do_get = original  # type: ignore[method-assign]
