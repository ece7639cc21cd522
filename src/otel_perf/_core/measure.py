"""``otel_perf.measure``: what auto-instrumentation cannot see.

A span, a duration histogram (``perf.operation.duration``, whose count is the number of
runs) and an error counter (``perf.operation.errors``) per named operation, as decorator
or context manager, sync or async.  Outside a request the block is its own unit of work:
its SQL statements are counted and N+1 patterns found exactly as for a request.  Without
the launcher (no runtime) it does nothing but run the code.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._core import guard, runtime
from otel_perf._core.work import Work, current_work

_P = ParamSpec("_P")
_R = TypeVar("_R")
MAX_NAME = 200


class measure:
    """Measure a named operation: ``@measure("tasks.create")`` or ``with measure("tasks.create"):``."""

    __slots__ = ("_state", "attributes", "name")

    def __init__(self, name: str, attributes: dict[str, str | int | float | bool] | None = None) -> None:
        self.name = str(name)[:MAX_NAME] or "operation"
        self.attributes = dict(attributes or {})
        self._state: list[tuple[Any, ...]] = []

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        name, attributes = self.name, self.attributes
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                async with measure(name, attributes):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with measure(name, attributes):
                return fn(*args, **kwargs)

        return wrapper

    def __enter__(self) -> measure:
        rt = runtime.get()
        if rt is None:
            self._state.append(())
            return self
        try:
            span = rt.tracer.start_span(self.name, attributes={n.A_OPERATION: self.name, **self.attributes})
            ctx_token = context.attach(trace.set_span_in_context(span))
            work_token = None
            if current_work.get() is None:
                work = Work("operation", self.name, span, rt.max_statements)
                work_token = current_work.set(work)
            self._state.append((rt, span, ctx_token, work_token, perf_counter()))
        except Exception as exc:
            guard.internal_error("measure.enter", exc)
            self._state.append(())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        state = self._state.pop() if self._state else ()
        if not state:
            return
        rt, span, ctx_token, work_token, start = state
        seconds = perf_counter() - start
        try:
            error_type = exc_type.__qualname__ if exc_type is not None else ""
            if work_token is not None:
                work = current_work.get()
                current_work.reset(work_token)
                if work is not None:
                    _finish_unit(rt, work, span)
            key = (self.name, error_type)
            ctx = span.get_span_context()
            sampled = ctx.trace_flags.sampled
            rt.inst.operation_duration.record(
                seconds, key, ctx.trace_id if sampled else 0, ctx.span_id if sampled else 0
            )
            if exc_type is not None:
                rt.inst.operation_errors.add(1, key)
                if span.is_recording():
                    span.set_attribute(n.A_ERROR_TYPE, error_type)
                    span.set_status(Status(StatusCode.ERROR))
        except Exception as err:
            guard.internal_error("measure.exit", err)
        finally:
            context.detach(ctx_token)
            span.end()

    async def __aenter__(self) -> measure:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def _finish_unit(rt: runtime.Runtime, work: Work, span: trace.Span) -> None:
    """A top-level measured block is a unit of work: same N+1 rule as a request."""
    if span.is_recording():
        span.set_attribute(n.A_PERF_QUERY_COUNT, work.query_count)
        span.set_attribute(n.A_PERF_DB_DURATION, work.db_time)
    if work.query_count >= rt.n_plus_one_threshold:
        insight.n_plus_one(rt, work, work.name, "", work.name, f"operation {work.name}")
