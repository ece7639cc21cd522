"""``otel_perf.measure``, ``counter`` and ``histogram``: what auto-instrumentation cannot see.

``measure(name)`` gives a span, a duration histogram (``perf.operation.duration``, whose count
is the number of runs) and an error counter (``perf.operation.errors``) per named operation,
as decorator or context manager, sync or async.  Its ``attributes`` go on the span; those
named in ``dimensions`` also become attributes of both metrics ("tasks created per minute by
status and priority"), bounded by ``OTEL_PERF_MAX_DIMENSION_VALUES`` values each
(:mod:`otel_perf._metrics.dimensions`).  Outside a request the block is its own unit of work:
its SQL statements are counted and N+1 patterns found exactly as for a request.

``counter(name)`` and ``histogram(name)`` are metrics of your own values ("events processed
per sync") with the same bounded dimensions, recorded by our pre-aggregating instruments and
exported with the rest.  Without the launcher (no runtime) all of them do nothing but run the
code.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Status, StatusCode

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._core import guard, runtime
from otel_perf._core.work import Work, current_work
from otel_perf._metrics.dimensions import Dimensions
from otel_perf._metrics.instruments import DIMENSIONS, DURATION_BOUNDS, Counter, Histogram, Registry

_P = ParamSpec("_P")
_R = TypeVar("_R")
MAX_NAME = 200
AttributeValue = str | int | float | bool
logger = logging.getLogger("otel_perf")

#: Bucket bounds of a histogram of your own values (the OpenTelemetry SDK's default).
VALUE_BOUNDS: tuple[float, ...] = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
#: A metric name, as the OpenTelemetry API accepts it.
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]{0,254}$")
_dimensions: weakref.WeakKeyDictionary[Registry, Dimensions] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _dims(rt: runtime.Runtime) -> Dimensions:
    found = _dimensions.get(rt.registry)
    if found is None:
        with _lock:
            found = _dimensions.get(rt.registry)
            if found is None:
                limit = int(rt.config.number("OTEL_PERF_MAX_DIMENSION_VALUES"))
                found = _dimensions[rt.registry] = Dimensions(rt.registry, limit)
    return found


def _exemplar() -> tuple[int, int]:
    """(trace id, span id) of the current span when it is sampled, else zeros."""
    ctx = trace.get_current_span().get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.trace_flags.sampled else (0, 0)


class measure:
    """Measure a named operation: ``@measure("tasks.create")`` or ``with measure("tasks.create") as m:``.

    ``attributes`` go on the span; the keys named in ``dimensions`` also become attributes of
    ``perf.operation.duration`` and ``perf.operation.errors``.  Inside the block,
    ``m.set_attribute(key, value)`` adds one known only later (``status`` of the created task).
    """

    __slots__ = ("_state", "attributes", "dimensions", "name")

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        dimensions: Sequence[str] = (),
    ) -> None:
        self.name = str(name)[:MAX_NAME] or "operation"
        self.attributes = dict(attributes or {})
        self.dimensions = tuple(str(d) for d in dimensions)
        self._state: list[list[Any]] = []

    def __call__(self, fn: Callable[_P, _R]) -> Callable[_P, _R]:
        name, attributes, dimensions = self.name, self.attributes, self.dimensions
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                async with measure(name, attributes, dimensions=dimensions):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with measure(name, attributes, dimensions=dimensions):
                return fn(*args, **kwargs)

        return wrapper

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Set an attribute of the running block: on its span, and on its metrics for a dimension."""
        if not self._state or not self._state[-1]:
            return
        state = self._state[-1]
        try:
            state[5][key] = value
            span = state[1]
            if span.is_recording():
                span.set_attribute(key, value)
        except Exception as exc:
            guard.internal_error("measure.set_attribute", exc)

    def __enter__(self) -> measure:
        rt = runtime.get()
        if rt is None:
            self._state.append([])
            return self
        try:
            span = rt.tracer.start_span(self.name, attributes={n.A_OPERATION: self.name, **self.attributes})
            ctx_token = context.attach(trace.set_span_in_context(span))
            work_token = None
            if current_work.get() is None:
                work = Work("operation", self.name, span, rt.max_statements)
                work_token = current_work.set(work)
            values = dict(self.attributes) if self.dimensions else {}
            self._state.append([rt, span, ctx_token, work_token, perf_counter(), values])
        except Exception as exc:
            guard.internal_error("measure.enter", exc)
            self._state.append([])
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        state = self._state.pop() if self._state else []
        if not state:
            return
        rt, span, ctx_token, work_token, start, values = state
        seconds = perf_counter() - start
        try:
            error_type = exc_type.__qualname__ if exc_type is not None else ""
            if work_token is not None:
                work = current_work.get()
                current_work.reset(work_token)
                if work is not None:
                    work.done = True
                    _finish_unit(rt, work, span)
            if self.dimensions:
                key: tuple[Any, ...] = (
                    self.name, error_type, _dims(rt).key(n.OPERATION_DURATION, self.dimensions, values)
                )
            else:
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


# -- metrics of your own values ---------------------------------------------------------------


class _UserMetric:
    """What ``counter()`` and ``histogram()`` return: records into one of our instruments, bounded."""

    __slots__ = ("_warned", "dimensions", "instrument", "name", "rt")

    def __init__(
        self, name: str, dimensions: tuple[str, ...], rt: runtime.Runtime | None, instrument: Any
    ) -> None:
        self.name = name
        self.dimensions = dimensions
        self.rt = rt
        self.instrument = instrument
        self._warned = False

    def _misuse(self, message: str) -> None:
        """A wrong call of the app's: one warning per metric, and the app goes on."""
        if not self._warned:
            self._warned = True
            logger.warning("otel-perf: metric %r: %s", self.name, message)

    def _key(self, attributes: Mapping[str, Any] | None, more: Mapping[str, Any]) -> tuple[Any, ...] | None:
        rt = self.rt
        if rt is None or self.instrument is None:
            return None
        values = {**(attributes or {}), **more}
        unknown = [k for k in values if k not in self.dimensions]
        if unknown:
            self._misuse(f"attribute(s) {', '.join(map(repr, unknown))} are not among its dimensions "
                         f"{list(self.dimensions)} and are left out (name them in dimensions=... where the "
                         "metric is created)")  # fmt: skip
        return (_dims(rt).key(self.name, self.dimensions, values),)


class UserCounter(_UserMetric):
    """A counter of your own (``otel_perf.counter``): ``.add(amount=1, attributes=None, **attributes)``."""

    __slots__ = ()

    def add(self, amount: float = 1, attributes: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Add ``amount`` (not negative) to the series of these dimension values."""
        try:
            key = self._key(attributes, more)
            if key is None:
                return
            if not isinstance(amount, int | float) or amount < 0:
                self._misuse(f"add({amount!r}) ignored: a counter only grows (use a number >= 0)")
                return
            self.instrument.add(amount, key)
        except Exception as exc:
            guard.internal_error("counter.add", exc)


class UserHistogram(_UserMetric):
    """A histogram of your own values (``otel_perf.histogram``): ``.record(value, attributes, **more)``."""

    __slots__ = ()

    def record(self, value: float, attributes: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Record one value in the series of these dimension values."""
        try:
            key = self._key(attributes, more)
            if key is None:
                return
            if not isinstance(value, int | float) or math.isnan(value):
                self._misuse(f"record({value!r}) ignored: a histogram records numbers")
                return
            trace_id, span_id = _exemplar()
            self.instrument.record(float(value), key, trace_id, span_id)
        except Exception as exc:
            guard.internal_error("histogram.record", exc)


def _user_metric(
    kind: str,
    name: str,
    unit: str,
    description: str,
    dimensions: Iterable[str],
    bounds: Sequence[float] | None,
) -> Any:
    dims = tuple(str(d) for d in dimensions)
    cls = UserCounter if kind == "counter" else UserHistogram
    rt = runtime.get()
    if rt is None:
        return cls(name, dims, None, None)
    if not _METRIC_NAME.match(name):
        logger.warning("otel-perf: %s name %r is not a valid metric name (a letter, then letters, digits and "
                       "_ . - /, at most 255); nothing is recorded for it.", kind, name)  # fmt: skip
        return cls(name, dims, None, None)
    with _lock:
        existing = rt.registry.get(name)
        wanted = Counter if kind == "counter" else Histogram
        if existing is not None:
            if isinstance(existing, wanted) and existing.attribute_names == (DIMENSIONS,):
                return cls(name, dims, rt, existing)  # the same metric, asked for again
            logger.warning("otel-perf: metric %r exists already (another kind, or one of ours); nothing is "
                           "recorded for this %s. Give it another name.", name, kind)  # fmt: skip
            return cls(name, dims, None, None)
        if kind == "counter":
            instrument: Any = rt.registry.counter(name, unit, description, (DIMENSIONS,))
        else:
            chosen = bounds if bounds is not None else (DURATION_BOUNDS if unit == "s" else VALUE_BOUNDS)
            instrument = rt.registry.histogram(name, unit, description, (DIMENSIONS,), chosen)
    return cls(name, dims, rt, instrument)


def counter(
    name: str, *, unit: str = "1", description: str = "", dimensions: Iterable[str] = ()
) -> UserCounter:
    """A counter of your own, exported with the rest.

    ``tasks = counter("tasks.created", dimensions=["status"])``, then ``tasks.add(1, status="done")``.
    Attributes not named in ``dimensions`` are left out; each dimension keeps at most
    ``OTEL_PERF_MAX_DIMENSION_VALUES`` values (then ``_OTHER``).
    """
    result: UserCounter = _user_metric("counter", name, unit, description, dimensions, None)
    return result


def histogram(
    name: str,
    *,
    unit: str = "",
    description: str = "",
    dimensions: Iterable[str] = (),
    bounds: Sequence[float] | None = None,
) -> UserHistogram:
    """A histogram of your own values, exported with the rest.

    ``events = histogram("sync.events", unit="{event}", dimensions=["provider"])``, then
    ``events.record(42, provider="google")``.  Buckets: ``bounds``, else the SDK's default
    (0 to 10000), or request-duration buckets for ``unit="s"``.
    """
    result: UserHistogram = _user_metric("histogram", name, unit, description, dimensions, bounds)
    return result
