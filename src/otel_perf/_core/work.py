"""The unit of work being measured: one HTTP request, one background job, or one ``measure()`` block.

A :class:`Work` lives in a context variable for as long as its request or block runs, so
every statement recorder (even in a threadpool worker: Starlette copies the context) adds
its queries to the right unit.  It is deliberately a plain slotted object: the hot path
touches it a few times per request.  Framework adapters that learn the route only at the
end of a request subclass it to say where a request is while it runs (:meth:`Work.where`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, ClassVar

from opentelemetry.trace import Span, SpanContext, TraceFlags

from otel_perf._core.spans import CONTEXT_IN_FIELD, CONTEXT_IS_TUPLE

_SAMPLED = int(TraceFlags.SAMPLED)


class Work:
    """Per-unit counters that the findings are computed from at the end."""

    __slots__ = (
        "context",
        "db_time",
        "done",
        # Set only by the opt-in request extras (access log, user, tenant): never per request
        # while they are off, so they stay unset here (read with getattr and a default).
        "enduser",
        "kind",
        "max_statements",
        "method",
        "name",
        "query_count",
        "response_size",
        "scope",
        "span",
        "span_id",
        "statements",
        "statements_dropped",
        "tenant",
        "trace_id",
    )
    #: The framework whose unit this is ("django", ...; "" for any): findings word their advice for it.
    framework: ClassVar[str] = ""
    #: True once the unit has ended; unset before (so starting one costs nothing): read it with
    #: getattr and a default.  A task the unit started may outlive it with it in its context.
    done: bool

    def __init__(
        self, kind: str, name: str, span: Span, max_statements: int, method: str = "", scope: Any = None
    ) -> None:
        self.kind = kind  # "request" | "job" | "operation"
        self.name = name  # route template or operation name, filled at the end for requests
        self.method = method
        self.span = span
        ctx = span._context if type(span) in CONTEXT_IN_FIELD else span.get_span_context()  # type: ignore[attr-defined]
        #: the span's SpanContext, read once (statements and the traceresponse header need it)
        self.context: SpanContext = ctx
        if type(ctx) is SpanContext and CONTEXT_IS_TUPLE:  # its properties are Python calls: index it
            self.trace_id: int = ctx[0]
            # Only sampled spans make useful exemplars/links; unsampled still carry a trace id.
            self.span_id: int = ctx[1] if ctx[3] & _SAMPLED else 0
        else:
            self.trace_id = ctx.trace_id
            self.span_id = ctx.span_id if ctx.trace_flags & _SAMPLED else 0
        self.query_count = 0
        self.db_time = 0.0
        self.statements: dict[str, int] = {}
        self.statements_dropped = 0
        self.max_statements = max_statements
        self.scope: Any = scope

    def add_query(self, statement: str, seconds: float) -> None:
        self.query_count += 1
        self.db_time += seconds
        statements = self.statements
        n = statements.get(statement)
        if n is not None:
            statements[statement] = n + 1
        elif len(statements) < self.max_statements:
            statements[statement] = 1
        else:
            self.statements_dropped += 1

    def where(self) -> str:
        """Where this unit is, for a finding raised while it runs: the route or operation name."""
        return self.name or self.current_route()

    def current_route(self) -> str:
        """The route of a request still running (adapters that know it early override this)."""
        return ""

    def repeated(self, threshold: int) -> list[tuple[str, int]]:
        """Statements run at least ``threshold`` times in this unit (N+1 candidates)."""
        if self.query_count < threshold:
            return []
        return [(s, n) for s, n in self.statements.items() if n >= threshold]

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}" if self.trace_id else ""


current_work: ContextVar[Work | None] = ContextVar("otel_perf_work", default=None)
