"""A command to a key-value store (Redis and its kin), for every client adapter.

Per command, sampled or not: ``db.client.operation.duration`` by ``db.system.name`` and
``db.operation.name`` (the command; names outside a known set collapse into ``OTHER`` so a
client sending odd names cannot grow the series), and, when the enclosing span is sampled,
a CLIENT span with explicit start/end times.  A command outside any span gets no span of its
own (only its duration point): a job broker polling Redis (Celery's, kombu's) would otherwise
fill the traces with one-command traces.  Where instrumentation is suppressed (a request to an
excluded URL) a command outside any span is not recorded at all.  A command is not a SQL
statement: it does not count in the unit of work's queries (they would distort queries per
request), but the request's span, when sampled, carries ``perf.redis.command_count`` and
``perf.redis.duration`` (seconds).  Cache reads among the commands are classified hit or miss
by the adapter and go to :mod:`otel_perf._core.caches`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry.context import get_current as _current_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_perf import _names as n
from otel_perf._core import semconv_dup
from otel_perf._core.spans import FrozenAttributes, SpanStarter, runtime_context_var
from otel_perf._core.statements import db_place, refused
from otel_perf._core.suppression import suppressed
from otel_perf._core.work import current_work

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

_SAMPLED = int(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
#: Bound of a target's cached span attributes (one entry per command name, batch kind and
#: argument count).
CACHED_SHAPES = 512
#: ``db.query.text`` of a command cut at this length, as the official instrumentation cuts it.
MAX_QUERY_TEXT = 1000


def command_text(operation: str, arguments: int) -> str:
    """A command's ``db.query.text``: its name and a ``?`` for each argument (``SET ? ? ? ?``),
    as the official Redis instrumentation writes it; never a key or value."""
    return operation + " ?" * (arguments - 1)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_QUERY_TEXT else text[: MAX_QUERY_TEXT - 3] + "..."


class CommandTarget:
    """One key-value server and database a client talks to (what every command's span says)."""

    __slots__ = ("attributes", "name", "place", "spans", "system")

    def __init__(
        self, system: str, host: str = "", port: int | None = None, namespace: str = "", transport: str = ""
    ) -> None:
        self.system = system
        attrs: dict[str, Any] = {n.A_DB_SYSTEM: system}
        if namespace:
            attrs["db.namespace"] = namespace[:256]
        if host:
            attrs[n.A_SERVER_ADDRESS] = host[:256]
            if port:
                attrs["server.port"] = int(port)
        if transport:  # "tcp" or "unix"
            attrs["network.transport"] = transport
        self.attributes = attrs
        #: the end of its ``db.client.operation.duration`` key: namespace, address, port
        self.place = db_place(attrs)
        #: the cache name its reads are counted under: ``host:port/db``
        self.name = f"{host}:{port}/{namespace}" if host else (namespace or system)
        #: (operation, batch, arguments) -> span attributes and name, built once
        self.spans: dict[tuple[str, int, int], tuple[FrozenAttributes, str]] = {}


class Commands:
    """The command recorder of one runtime, shared by the key-value client adapters."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.spans = SpanStarter(runtime.tracer)
        self._context_var = runtime_context_var()

    def record(
        self,
        target: CommandTarget,
        operation: str,
        seconds: float,
        error_type: str,
        batch: int = 0,
        arguments: int = 0,
        text: Callable[[], str] | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """One command (or one pipeline of ``batch`` commands) that took ``seconds``.

        ``arguments``: how many words the command had, its name included (0: not known); its
        span then says ``db.query.text`` with each argument a ``?`` (``SET ? ? ? ?``) and
        ``db.redis.args_length``, as the official Redis instrumentation's do.  ``text()``: a
        pipeline's ``db.query.text`` (its commands, one per line), read only for a recorded span.
        ``failure``: the error the server answered; a recorded span gets its ``exception`` event
        and status description, as the official instrumentation's does (quoted strings as ``?``).
        """
        rt = self.rt
        key = (target.system, operation, "", error_type, *target.place)
        var = self._context_var
        parent: Span | None = (var.get() if var is not None else _current_context()).get(_SPAN_KEY)  # type: ignore[assignment]
        end_ns = time.time_ns()
        start_ns = end_ns - int(seconds * 1e9)
        if parent is None:  # no root span: a broker's or a cache's own polling would flood traces
            if not suppressed(var.get() if var is not None else _current_context()):  # excluded request
                rt.inst.db_duration.record(seconds, key)
            return
        pctx = parent.get_span_context()
        if not (pctx.trace_flags & _SAMPLED and parent.is_recording()):
            rt.inst.db_duration.record(seconds, key)
            return
        rt.inst.db_duration.record(seconds, key, pctx.trace_id, pctx.span_id)
        shared, name = self._attributes(target, operation, batch, arguments)
        attrs = self._with_error(shared, error_type)
        if text is not None:
            attrs = {**attrs, n.A_DB_QUERY_TEXT: _cut(text())}
            if rt.old_db:
                attrs = semconv_dup.with_old_db(attrs)
        status = _ERROR if error_type else None
        if failure is not None or not self.spans.finished(
            name, pctx, SpanKind.CLIENT, attrs, start_ns, end_ns, status
        ):
            span = self.spans.start(name, None, SpanKind.CLIENT, lambda: attrs, start_ns)
            if failure is not None:
                refused(span, self.rt.scrubber, failure)
            elif status is not None:
                span.set_status(status)
            span.end(end_time=end_ns)
        work = current_work.get()
        if work is not None and work.span.is_recording():
            self._add_to_unit(work.span, seconds)

    @staticmethod
    def _add_to_unit(span: Any, seconds: float) -> None:
        """Count the command on the unit's span (sampled units only: it is a span attribute)."""
        attributes = getattr(span, "attributes", None) or {}
        count = attributes.get(n.A_PERF_REDIS_COUNT, 0)
        total = attributes.get(n.A_PERF_REDIS_DURATION, 0.0)
        span.set_attribute(n.A_PERF_REDIS_COUNT, int(count) + 1)
        span.set_attribute(n.A_PERF_REDIS_DURATION, float(total) + seconds)

    @staticmethod
    def _with_error(attrs: FrozenAttributes, error_type: str) -> dict[str, Any]:
        if not error_type:
            return attrs
        out = dict(attrs)
        out[n.A_ERROR_TYPE] = error_type
        return out

    def _attributes(
        self, target: CommandTarget, operation: str, batch: int, arguments: int
    ) -> tuple[FrozenAttributes, str]:
        shape = (operation, batch, arguments)
        cached = target.spans.get(shape)
        if cached is None:
            attrs = dict(target.attributes)
            attrs[n.A_DB_OPERATION] = operation
            if batch >= 2:
                attrs["db.operation.batch.size"] = batch
            if arguments:
                attrs[n.A_DB_QUERY_TEXT] = _cut(command_text(operation, arguments))
                attrs["db.redis.args_length"] = arguments
            if self.rt.old_db:  # database/dup: the old names too
                attrs = semconv_dup.with_old_db(attrs)
            cached = (FrozenAttributes(attrs), operation)
            if len(target.spans) >= CACHED_SHAPES:
                target.spans.clear()
            target.spans[shape] = cached
        return cached
