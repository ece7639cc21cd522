"""A database statement, for every driver: count it, time it, find what is wrong with it.

Every DB adapter (the SQLAlchemy dialect hooks, the DB-API and asyncpg drivers) times a
statement between two clock reads and hands it to :meth:`Statements.record` with the
:class:`DbTarget` it ran against.  Per statement, sampled or not:

* normalize it for the target's system (cached per target: a raw statement maps to its
  shape *and* its metric key in one dict lookup),
* add it to the current unit of work (query count, DB time, repeats for N+1),
* record ``db.client.operation.duration`` by system, operation, table and error type,
* flag it slow (a finding with the example trace id),
* and, when the enclosing span is sampled, emit a CLIENT span with explicit start/end
  times (no context attach needed: a statement has no children).  A statement outside
  any span (start-up code, a script) starts a root span the sampler decides on, unless
  instrumentation is suppressed where it runs (a request to an excluded URL): then it is
  neither traced nor measured.

Driver adapters time a cursor call through :meth:`Statements.run` / :meth:`Statements.run_async`
against a shared :meth:`Statements.target`.  A statement is recorded once whichever layers it
crosses: an outer layer that records it (SQLAlchemy's hooks) either opens its driver connections
inside :func:`outer_connection` (the driver adapters then leave them unwrapped, costing nothing per
statement) and hands any that were wrapped anyway to :func:`disown`, or runs the statement inside
:func:`outer_layer` (driver adapters pass it through).

The per-statement path is written for the number of Python calls and bytecodes it runs,
which is what it costs inside a busy app.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.context import get_current as _current_context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._analysis.redact import LogScrubber, database_error
from otel_perf._analysis.sql import Shape
from otel_perf._core import guard, semconv_dup
from otel_perf._core.spans import FrozenAttributes, SpanStarter, runtime_context_var
from otel_perf._core.suppression import suppressed
from otel_perf._core.work import Work, current_work

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime
    from otel_perf._metrics.instruments import Key

_SAMPLED = int(TraceFlags.SAMPLED)
#: Bound of a target's statement cache and of its span-attribute cache (each cleared whole
#: when full).
CACHED_STATEMENTS = 1024
#: Bound of the shared targets of driver adapters (one per database server and name).
MAX_TARGETS = 256
_ERROR = Status(StatusCode.ERROR)
#: the exception of the failed statement being recorded (set by Statements.failed only)
_FAILURE: ContextVar[BaseException | None] = ContextVar("otel_perf_statement_failure", default=None)
#: ``db.system.name`` (stable semconv) for driver / dialect names that differ from it.
_SYSTEMS = {
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "sqlite3": "sqlite",
    "mariadb": "mariadb",
}


#: True while an outer layer (SQLAlchemy's dialect hooks, Django's execute wrapper) records the
#: statement being run: a driver adapter under it (psycopg, sqlite3, ...) passes it through, so
#: a statement counts once whichever layers it crosses.  Outer layers that can tell their
#: driver connections apart at connect time (cheaper than a per-statement flag) may do that
#: instead; this flag is the general mechanism.
_OUTER: ContextVar[bool] = ContextVar("otel_perf_statement_outer", default=False)


#: The flag itself, for an outer layer's per-statement path: ``token = OUTER.set(True)`` before
#: running the statement and ``OUTER.reset(token)`` after do what :func:`outer_layer` does for
#: a fraction of a context manager's cost (Django's execute wrapper runs it per statement).
OUTER = _OUTER


def recorded_above() -> bool:
    """Whether the statement now running is recorded by an outer layer (drivers: pass it through)."""
    return _OUTER.get()


@contextmanager
def outer_layer() -> Iterator[None]:
    """Mark the statements run inside as recorded by the caller (an ORM's own hook)."""
    token = _OUTER.set(True)
    try:
        yield
    finally:
        _OUTER.reset(token)


#: True while an outer layer opens a driver connection for itself (SQLAlchemy's dialect
#: ``connect``): driver adapters then hand back the driver's own connection, unwrapped, so the
#: outer layer's statements pay nothing per statement for the driver adapter beneath it.
_OUTER_CONNECT: ContextVar[bool] = ContextVar("otel_perf_outer_connect", default=False)
#: Driver adapters' ``disown(obj) -> bool``: stop recording on a connection an outer layer took
#: over after it was made (one made where :func:`outer_connection` could not reach, such as a
#: driver that connects in its own thread: aiosqlite).
_DISOWNERS: list[Callable[[Any], bool]] = []


@contextmanager
def outer_connection() -> Iterator[None]:
    """Mark the driver connections opened inside as an outer layer's (it records their statements)."""
    token = _OUTER_CONNECT.set(True)
    try:
        yield
    finally:
        _OUTER_CONNECT.reset(token)


def connecting_for_outer_layer() -> bool:
    """Whether a driver connection being opened now is for an outer layer (drivers: do not wrap it)."""
    return _OUTER_CONNECT.get()


def register_disowner(disown_one: Callable[[Any], bool]) -> None:
    """A driver adapter's way to stop recording on one of its connections (see :func:`disown`)."""
    if disown_one not in _DISOWNERS:
        _DISOWNERS.append(disown_one)


def unregister_disowner(disown_one: Callable[[Any], bool]) -> None:
    if disown_one in _DISOWNERS:
        _DISOWNERS.remove(disown_one)


def disown(connection: Any) -> bool:
    """An outer layer records ``connection``'s statements: driver adapters under it stop.

    ``connection`` may be an adapter around the driver's connection (SQLAlchemy's async
    adapters, aiosqlite's thread): the objects it wraps are tried too.  Called once per
    connection, at connect time; never raises.  True when a driver adapter had it (and has
    let go of it).
    """
    if not _DISOWNERS:
        return False
    try:
        seen: list[Any] = []
        todo = [connection]
        while todo and len(seen) < 6:
            obj = todo.pop()
            if obj is None or any(obj is s for s in seen):
                continue
            seen.append(obj)
            if any(disown_one(obj) for disown_one in _DISOWNERS):
                return True
            for attribute in ("driver_connection", "_connection", "_conn"):
                try:
                    todo.append(getattr(obj, attribute, None))
                except Exception:  # a property that raises (aiosqlite: not connected)
                    continue
    except Exception as exc:
        guard.internal_error("statements.disown", exc)
    return False


def db_place(attributes: dict[str, Any]) -> tuple[str, str, int | None]:
    """``db.namespace``, ``server.address`` and ``server.port`` of a target's span attributes,
    as the last three values of its ``db.client.operation.duration`` key ("" / None: unknown,
    left out of the point)."""
    return (
        str(attributes.get(n.A_DB_NAMESPACE, "")),
        str(attributes.get(n.A_SERVER_ADDRESS, "")),
        attributes.get("server.port"),
    )


def db_system(name: str) -> str:
    """``db.system.name`` for a SQLAlchemy dialect or driver family name."""
    return _SYSTEMS.get(name, name)


#: A cursor ``rowcount`` at or over this is a driver's "unknown" (2**64-1 from PyMySQL's unbuffered
#: cursors), not a row count.
_MAX_ROWCOUNT = 2**63


class DbTarget:
    """One database a statement runs against (an engine, a driver connection's server).

    Holds what every statement of it needs: ``db.system.name``, the span attributes that
    say which database it is, the raw-statement cache and the cached span shapes.  Adapters
    create one per engine or per (driver, server, database) and keep it.
    """

    __slots__ = ("attributes", "place", "spans", "statements", "system")

    def __init__(
        self, system: str, namespace: str = "", host: str = "", port: int | None = None
    ) -> None:
        self.system = system
        attrs: dict[str, Any] = {n.A_DB_SYSTEM: system}
        if namespace:
            attrs["db.namespace"] = namespace[-256:]
        if host:
            attrs[n.A_SERVER_ADDRESS] = host[:256]
            if port:
                attrs["server.port"] = int(port)
        #: the span attributes every statement of this target carries
        self.attributes = attrs
        #: the end of its ``db.client.operation.duration`` key: namespace, address, port
        self.place = db_place(attrs)
        #: raw statement -> (shape, metric key); bounded, cleared whole when full
        self.statements: dict[str, tuple[Shape, Key]] = {}
        #: normalized statement -> its span's attributes and name (the usual case: not slow,
        #: not failed, not a batch); bounded like ``statements``
        self.spans: dict[str, tuple[FrozenAttributes, str]] = {}


def refused(span: Span, scrubber: LogScrubber, failure: BaseException | None) -> None:
    """What a database refused, on its span: ERROR with ``Type: message`` as the description and
    the ``exception`` event, as the official instrumentations set them, the text scrubbed
    (:func:`~otel_perf._analysis.redact.database_error`); the status alone without ``failure``
    or when its text cannot be read."""
    if failure is None:
        span.set_status(_ERROR)
        return
    try:
        event = database_error(scrubber, failure)
    except Exception as error:  # an exception whose str() fails
        guard.internal_error("statements.exception", error)
        span.set_status(_ERROR)
        return
    description = f"{event['exception.type']}: {event['exception.message']}"
    span.set_status(Status(StatusCode.ERROR, description[:1024]))
    span.add_event("exception", event)


class Statements:
    """The statement recorder of one runtime, shared by every DB adapter."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.spans = SpanStarter(runtime.tracer)
        self._context_var = runtime_context_var()
        self._targets: dict[tuple[str, str, str, int | None], DbTarget] = {}

    def target(self, system: str, namespace: str = "", host: str = "", port: int | None = None) -> DbTarget:
        """The shared :class:`DbTarget` of one database (driver adapters: one per connection's server)."""
        key = (system, namespace, host, port)
        found = self._targets.get(key)
        if found is None:
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            found = self._targets[key] = DbTarget(system, namespace, host, port)
        return found

    def run(
        self,
        target: DbTarget,
        statement: Any,
        batch: int,
        call: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """``call(*args, **kwargs)`` (a driver's execute) timed and recorded as ``statement``; its result.

        Passes the call through untouched when an outer layer records it already.
        """
        if _OUTER.get():
            return call(*args, **kwargs)
        t0 = perf_counter()
        try:
            result = call(*args, **kwargs)
        except BaseException as exc:
            self.failed(target, statement_text(statement), t0, exc, batch)
            raise
        seconds = perf_counter() - t0
        try:
            key = self.record(target, statement_text(statement), seconds, "", batch)
            if key is not None:
                self._returned_rows(call, key)
        except Exception as exc:
            guard.internal_error("statements.run", exc)
        return result

    async def run_async(
        self,
        target: DbTarget,
        statement: Any,
        batch: int,
        call: Callable[..., Awaitable[Any]],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """:meth:`run` for a coroutine function (asyncpg, psycopg's async cursors)."""
        if _OUTER.get():
            return await call(*args, **kwargs)
        t0 = perf_counter()
        try:
            result = await call(*args, **kwargs)
        except BaseException as exc:
            self.failed(target, statement_text(statement), t0, exc, batch)
            raise
        seconds = perf_counter() - t0
        try:
            key = self.record(target, statement_text(statement), seconds, "", batch)
            if key is not None:
                self._returned_rows(call, key)
        except Exception as exc:
            guard.internal_error("statements.run_async", exc)
        return result

    def _returned_rows(self, call: Callable[..., Any], key: Key) -> None:
        """``db.client.response.returned_rows`` of a statement a DB-API cursor ran (``call`` is its
        bound ``execute``): its ``rowcount`` when the driver knows it (not -1), under the duration's
        key, as the official DB-API instrumentation records it.  A call bound to no cursor has none
        (asyncpg's, a script the sqlite3 adapter runs unbound), nor has a count no database returns
        (PyMySQL's unbuffered cursors report 2**64-1)."""
        rows = getattr(getattr(call, "__self__", None), "rowcount", None)
        if type(rows) is int and 0 <= rows < _MAX_ROWCOUNT:
            self.rt.inst.returned_rows.record(rows, key)

    def failed(self, target: DbTarget, statement: str, t0: float, exc: BaseException, batch: int) -> None:
        """Record a statement the database refused (or that was interrupted); never raises.

        Its span (when sampled) gets the ``exception`` event and a status description, as the
        official instrumentations' do, the text scrubbed as exported logs are (no statement
        literal, no key value): the exception reaches the span code through :data:`_FAILURE`,
        so the path every statement takes carries no argument for it.
        """
        try:
            error_type = type(exc).__qualname__ or "Error"
            token = _FAILURE.set(exc)
            try:
                self.record(target, statement, perf_counter() - t0, error_type, batch)
            finally:
                _FAILURE.reset(token)
        except Exception as error:
            guard.internal_error("statements.failed", error)

    def _fail(self, span: Span) -> None:
        """A failed statement's span: ERROR with a description, and its ``exception`` event."""
        refused(span, self.rt.scrubber, _FAILURE.get())

    def record(
        self, target: DbTarget, statement: str, seconds: float, error_type: str, batch: int
    ) -> Key | None:
        """One statement that ran for ``seconds``; ``batch`` is the executemany size (0: single).

        The key it was recorded under in ``db.client.operation.duration``; None when it was not
        recorded (instrumentation suppressed here)."""
        rt = self.rt
        statements = target.statements
        entry = statements.get(statement)
        if entry is None:
            # A statement the database refused is read the cautious way: on PostgreSQL
            # ``WHERE api_key = "sk_live_..."`` fails (no such column) with a value in it.
            shape = rt.shapes.shape(statement, "" if error_type else target.system)
            entry = (shape, (target.system, shape.operation, shape.collection, "", *target.place))
            if len(statements) >= CACHED_STATEMENTS:
                statements.clear()
            statements[statement] = entry
        shape, key = entry
        if error_type:
            key = (target.system, shape.operation, shape.collection, error_type, *target.place)
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
        if parent is None:  # the root span's path reports its slow finding itself
            return key if self._root(target, shape, key, seconds, error_type, slow, batch, work) else None
        if work is not None and parent is work.span:
            # The request's own span: the Work read its ids at the start (span_id: sampled).
            trace_id = work.trace_id
            if work.span_id and parent.is_recording():
                rt.inst.db_duration.record(seconds, key, trace_id, work.span_id)
                self._span(work.context, target, shape, seconds, error_type, slow, batch)
            else:
                rt.inst.db_duration.record(seconds, key)
        else:
            pctx = parent.get_span_context()
            trace_id = pctx.trace_id
            if pctx.trace_flags & _SAMPLED and parent.is_recording():
                rt.inst.db_duration.record(seconds, key, trace_id, pctx.span_id)
                self._span(pctx, target, shape, seconds, error_type, slow, batch)
            else:
                rt.inst.db_duration.record(seconds, key)
        if slow:
            insight.slow_query(rt, work, shape, seconds, f"{trace_id:032x}" if trace_id else "")
        return key

    def _root(
        self,
        target: DbTarget,
        shape: Shape,
        key: Key,
        seconds: float,
        error_type: str,
        slow: bool,
        batch: int,
        work: Work | None,
    ) -> bool:
        """A statement outside any span (start-up, scripts): a root span if the sampler keeps it.

        Nothing is recorded where instrumentation is suppressed (a request to an excluded URL:
        :func:`~otel_perf._core.suppression.untraced`).  A slow one's finding is logged in the
        root span's context, so its exported record names the trace, as its text does.
        """
        var = self._context_var
        if suppressed(var.get() if var is not None else _current_context()):
            return False
        attrs, name = self._attributes(target, shape, error_type, slow, batch)
        end_ns = time.time_ns()
        span = self.spans.start(name, None, SpanKind.CLIENT, None, end_ns - int(seconds * 1e9))
        ctx = span.get_span_context()
        if not span.is_recording():
            self.rt.inst.db_duration.record(seconds, key)
            if slow:
                insight.slow_query(self.rt, work, shape, seconds, "")
            return True
        self.spans.set_attributes(span, attrs)
        if error_type:
            self._fail(span)
        span.end(end_time=end_ns)
        self.rt.inst.db_duration.record(seconds, key, ctx.trace_id, ctx.span_id)
        if slow:
            token = context.attach(trace.set_span_in_context(span))
            try:
                insight.slow_query(self.rt, work, shape, seconds, f"{ctx.trace_id:032x}")
            finally:
                context.detach(token)
        return True

    def _span(
        self,
        parent: SpanContext,
        target: DbTarget,
        shape: Shape,
        seconds: float,
        error_type: str,
        slow: bool,
        batch: int,
    ) -> None:
        end_ns = time.time_ns()
        start_ns = end_ns - int(seconds * 1e9)
        attrs, name = self._attributes(target, shape, error_type, slow, batch)
        # Timed already and childless: hand the processors the ended span directly.
        if not error_type and self.spans.finished(name, parent, SpanKind.CLIENT, attrs, start_ns, end_ns):
            return
        span = self.spans.start(name, None, SpanKind.CLIENT, lambda: attrs, start_ns)
        if error_type:
            self._fail(span)
        span.end(end_time=end_ns)

    def _attributes(
        self, target: DbTarget, shape: Shape, error_type: str, slow: bool, batch: int
    ) -> tuple[FrozenAttributes, str]:
        """A statement span's attributes (shared, read-only) and name; the usual ones cached."""
        if error_type or slow or batch:
            return self._build(target, shape, error_type, slow, batch)
        cached = target.spans.get(shape.text)
        if cached is None:
            cached = self._build(target, shape, "", False, 0)
            if len(target.spans) >= CACHED_STATEMENTS:
                target.spans.clear()
            target.spans[shape.text] = cached
        return cached

    def _build(
        self, target: DbTarget, shape: Shape, error_type: str, slow: bool, batch: int
    ) -> tuple[FrozenAttributes, str]:
        attrs = dict(target.attributes)
        if shape.operation:
            attrs[n.A_DB_OPERATION] = shape.operation
        if shape.collection:
            attrs[n.A_DB_COLLECTION] = shape.collection
        if self.rt.capture_sql:
            attrs[n.A_DB_QUERY_TEXT] = shape.text
        if batch >= 2:  # semconv: only batches of two or more carry a size
            attrs["db.operation.batch.size"] = batch
        if slow:
            attrs[n.A_PERF_SLOW] = True
        if error_type:
            attrs[n.A_ERROR_TYPE] = error_type
        if self.rt.old_db:  # database/dup: the old names too
            attrs = semconv_dup.with_old_db(attrs)
        return FrozenAttributes(attrs), f"{shape.operation} {shape.collection}".strip() or target.system


def batch_size(parameters: Any) -> int:
    """The number of parameter sets an ``executemany`` ran; 0 when it is no batch or unknown.

    Semconv: only operations of two or more are batches (``db.operation.batch.size`` is never 1).
    """
    try:
        size = len(parameters)
    except TypeError:  # a generator: its length is unknown
        return 0
    return size if size >= 2 else 0


def statement_text(statement: Any) -> str:
    """A driver's statement as text: ``str`` as it is, ``bytes`` decoded; anything else (psycopg's
    ``sql.Composed``, SQLAlchemy constructs) through its ``as_string()`` or ``str()``."""
    if type(statement) is str:
        return statement
    if isinstance(statement, (bytes, bytearray, memoryview)):
        return bytes(statement).decode("utf-8", "replace")
    as_string = getattr(statement, "as_string", None)
    if as_string is not None:
        try:
            return str(as_string())
        except Exception:  # psycopg < 3.2 needs a connection: fall back to str()
            pass
    try:
        return str(statement)
    except Exception:
        return ""
