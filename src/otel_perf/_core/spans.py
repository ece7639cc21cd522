"""Starting a span for the price of the sampler's decision.

The SDK's ``Tracer.start_span`` costs 6-12 µs even when the sampler drops the span (context
lookups, a ``SamplingResult``, span-limit and tracer-config checks), and a server span is
started for every request.  For the SDK's own samplers (``always_on``/``always_off``,
``traceidratio`` and the ``parentbased_*`` compositions) with the SDK's random id generator,
:class:`SpanStarter` takes the same decision on the same inputs and, for a dropped span,
builds the very ``NonRecordingSpan`` the SDK would have built (same trace id rules, same
flags, same trace state).  A sampled span still comes from the SDK tracer, so processors and
exporters see ordinary SDK spans: the trace id we drew for the decision is handed to the
SDK through :class:`PrimableIdGenerator`, so the decision and the span agree.

A recorded span costs the SDK ~25 µs more: ``Tracer.start_span`` runs the sampler again
and every attribute goes through the SDK's validation.  :class:`LeanSpans` builds the
SDK's own span object (``opentelemetry.sdk.trace._Span``, so every method, processor and
exporter behaves as usual) with the fields ``Span.__init__`` would set, and puts
attributes that are already valid (str keys; str, bool, int or float values; no length
limit configured) into the span's ``BoundedAttributes`` without re-validating them.  It
checks at startup that this SDK's span has exactly the fields it sets, and stands down
otherwise.

A span that is over when it is made (a SQL statement, timed before we knew it needed a
span) need not be a live span at all: :meth:`SpanStarter.finished` takes the sampling
decision and hands processors' ``on_end`` the ``ReadableSpan`` that ending a live span would
have produced.  Nothing can observe the live span in between (a statement has no children
and nobody holds it), so only ``on_start`` is skipped; ours does nothing, and a pipeline
with any other processor takes the live-span path.

Anything else (a custom sampler or id generator, SDK self-metrics on, a disabled tracer, an
SDK whose internals moved) takes the SDK path unchanged.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.context import get_current as _current_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, Tracer
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import INVALID_SPAN_CONTEXT as _INVALID
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from otel_perf._core.probes import forced_off

try:
    from opentelemetry.sdk.trace import _Span
except ImportError:  # pragma: no cover - an SDK without it: no lean spans
    _Span = None  # type: ignore[assignment,misc]

#: parent span context (None for a root) and trace id -> sampled?
Decide = Callable[[SpanContext | None, int], bool]

_RANDOM_BIT = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_FLAGS = {f: TraceFlags(f) for f in (0, _RANDOM_BIT, 1, 1 | _RANDOM_BIT)}
_TRUSTED_VALUES = (str, bool, int, float)
_TRACE_ID_LIMIT = (1 << 64) - 1
_getrandbits = random.getrandbits
_new_tuple = tuple.__new__
_new_object = object.__new__


class FrozenAttributes(dict[str, Any]):
    """Span attributes built once and shared by every span with the same shape.

    A SQL statement's span attributes repeat for each execution of the statement; built
    once, they are validated once per span builder (``trusted_by``) and encoded once per
    encoder (``encoded_by``/``encoded``) instead of once per span.  Read-only: anything
    that needs to change them copies them first, as the SDK's span does.
    """

    __slots__ = ("encoded", "encoded_by", "trusted_by")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trusted_by: object = None
        self.encoded_by: object = None
        self.encoded = b""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("FrozenAttributes are shared between spans: copy them to change them")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return dict(self)  # the values are str, int, float or bool: nothing deeper to copy

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class ValidAttributes(dict[str, Any]):
    """Span attributes built by our own code: non-empty str keys, str/bool/int/float values only.

    What the SDK's attribute validation would keep exactly as they are, so the lean span builder
    takes them without checking each one again (limits on count and length still apply).
    Builders of such a dict are responsible for the value types (coerce with ``int()``/``str()``).
    """

    __slots__ = ()


def runtime_context_var() -> ContextVar[Context] | None:
    """The ContextVar behind the API's default runtime context, or None for any other.

    Attaching through it directly is what ``context.attach`` does, minus three Python
    calls; another runtime context (``OTEL_PYTHON_CONTEXT``) keeps the API path.
    """
    from opentelemetry import context as api
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    if forced_off("api-context-var"):
        return None
    runtime = getattr(api, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var
    return None


def _direct_construction_works() -> bool:
    """Whether SpanContext is the 6-tuple and NonRecordingSpan the one-field object we build directly."""
    try:
        flags = TraceFlags(1)
        made = SpanContext(3, 4, False, flags, None)
        if made != _new_tuple(SpanContext, (3, 4, False, flags, DEFAULT_TRACE_STATE, True)):
            return False
        return vars(NonRecordingSpan(made)) == {"_context": made}
    except Exception:
        return False


_DIRECT = not forced_off("sdk-span-layout") and _direct_construction_works()
#: SpanContext is the tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid):
#: hot paths may index it (each of its properties is a Python call).
CONTEXT_IS_TUPLE = _DIRECT


def _context_in_field() -> frozenset[type]:
    """Span types whose ``get_span_context()`` returns their ``_context`` field (checked on probes)."""
    found: set[type] = set()
    if forced_off("sdk-span-context-field"):
        return frozenset()
    ctx = SpanContext(5, 6, False, TraceFlags(1))
    probes: list[Any] = [NonRecordingSpan(ctx)]
    if _Span is not None:
        with contextlib.suppress(Exception):  # an SDK whose span takes other arguments
            # An explicit resource: the default one would parse OTEL_RESOURCE_ATTRIBUTES at import
            # (and warn about it) before the bootstrap has checked it.
            probes.append(_Span("probe", ctx, resource=Resource({})))
    for span in probes:
        if vars(span).get("_context") is ctx and span.get_span_context() is ctx:
            found.add(type(span))
    return frozenset(found)


#: hot paths may read ``span._context`` of these instead of calling ``get_span_context()``
CONTEXT_IN_FIELD = _context_in_field()


class PrimableIdGenerator(RandomIdGenerator):
    """The SDK's random id generator, whose next trace id on this thread can be handed in."""

    def __init__(self) -> None:
        self._local = threading.local()

    def prime(self, trace_id: int) -> None:
        self._local.trace_id = trace_id

    def generate_trace_id(self) -> int:
        local = self._local
        trace_id: int = getattr(local, "trace_id", 0)
        if trace_id:
            local.trace_id = 0
            return trace_id
        return super().generate_trace_id()


def _always(parent: SpanContext | None, trace_id: int) -> bool:
    return True


def _never(parent: SpanContext | None, trace_id: int) -> bool:
    return False


def compile_sampler(sampler: Any) -> Decide | None:
    """The decision function equivalent to ``sampler``, or None when we do not know it."""
    kind = type(sampler)
    if kind is sdk_sampling.StaticSampler:
        decision = getattr(sampler, "_decision", None)
        if decision is sdk_sampling.Decision.RECORD_AND_SAMPLE:
            return _always
        if decision is sdk_sampling.Decision.DROP:
            return _never
        return None
    if isinstance(sampler, sdk_sampling.TraceIdRatioBased) and (
        kind.should_sample is sdk_sampling.TraceIdRatioBased.should_sample
    ):
        bound = int(sampler.bound)
        if bound <= 0:
            return _never
        if bound > _TRACE_ID_LIMIT:
            return _always

        def ratio(parent: SpanContext | None, trace_id: int) -> bool:
            return trace_id & _TRACE_ID_LIMIT < bound

        return ratio
    if (
        isinstance(sampler, sdk_sampling.ParentBased)
        and kind.should_sample is sdk_sampling.ParentBased.should_sample
    ):
        parts = [
            compile_sampler(getattr(sampler, name, None))
            for name in (
                "_root",
                "_remote_parent_sampled",
                "_remote_parent_not_sampled",
                "_local_parent_sampled",
                "_local_parent_not_sampled",
            )
        ]
        if any(p is None for p in parts):
            return None
        root, remote_yes, remote_no, local_yes, local_no = (p for p in parts if p is not None)

        def parent_based(parent: SpanContext | None, trace_id: int) -> bool:
            if parent is None:
                return root(None, trace_id)
            if type(parent) is SpanContext and _DIRECT:  # its fields, not its (Python) properties
                remote, sampled = parent[2], parent[3] & 1
            else:
                remote, sampled = parent.is_remote, parent.trace_flags.sampled
            if remote:
                return (remote_yes if sampled else remote_no)(parent, trace_id)
            return (local_yes if sampled else local_no)(parent, trace_id)

        return parent_based
    return None


class SpanStarter:
    """``start(name, parent_context, kind, attributes)`` with the SDK's semantics, cheaper when dropped."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.decide: Decide | None = None
        #: root spans are sampled when ``trace_id & (2**64 - 1) < root_bound`` (None: ask ``decide``)
        self.root_bound: int | None = None
        self.ids: PrimableIdGenerator | None = None
        #: the lean builder of recording spans (None: the SDK's path for every span)
        self.lean: LeanSpans | None = None
        self.random_bit = 0
        self._is_enabled: Callable[[], bool] = _enabled
        self._context_var = runtime_context_var()
        if type(tracer) is not Tracer:
            return
        if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
            return  # the SDK counts started spans itself; let it
        ids = getattr(tracer, "id_generator", None)
        if type(ids) is not PrimableIdGenerator:
            return
        self.ids = ids
        # IdGenerator.is_trace_id_random() (and the RANDOM_TRACE_ID flag) came with SDK 1.42;
        # before, no trace id is flagged random.
        is_random = getattr(ids, "is_trace_id_random", None)
        self.random_bit = _RANDOM_BIT if is_random is not None and is_random() else 0
        self._is_enabled = getattr(tracer, "_is_enabled", _enabled)
        sampler = getattr(tracer, "sampler", None)
        self.decide = None if forced_off("sdk-sampler") else compile_sampler(sampler)
        root = getattr(sampler, "_root", None) if isinstance(sampler, sdk_sampling.ParentBased) else sampler
        self.root_bound = _root_bound(root) if self.decide is not None else None
        self.lean = LeanSpans.for_tracer(tracer) if self.decide is not None else None

    @property
    def fast(self) -> bool:
        return self.decide is not None

    def start(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Callable[..., Mapping[str, Any]] | None = None,
        start_time: int | None = None,
        args: tuple[Any, ...] = (),
    ) -> trace.Span:
        """Start a span; ``attributes(*args)`` is called only if the span will record."""
        decide = self.decide
        if decide is None or not self._is_enabled():
            return self._sdk(name, context, kind, attributes, start_time, args)
        # No span in the context (a request's usual start) is a root: skip the API's lookup
        # chain and its ABC isinstance check for that case.
        var = self._context_var
        holder = (
            context if context is not None else var.get() if var is not None else _current_context()
        ).get(_SPAN_KEY)
        parent = _INVALID if holder is None else trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
            sampled = decide(parent, trace_id)
            flags = parent.trace_flags & _RANDOM_BIT
            state = parent.trace_state
            parent_context: SpanContext | None = parent
        else:
            trace_id = _getrandbits(128)
            while not trace_id:
                trace_id = _getrandbits(128)
            bound = self.root_bound
            sampled = (trace_id & _TRACE_ID_LIMIT < bound) if bound is not None else decide(None, trace_id)
            flags = self.random_bit
            state = None
            parent_context = None
        if sampled:
            lean = self.lean
            if lean is None:
                if parent_context is None:
                    assert self.ids is not None
                    self.ids.prime(trace_id)
                return self._sdk(name, context, kind, attributes, start_time, args)
            span_id = _getrandbits(64)
            while not span_id:
                span_id = _getrandbits(64)
            sampled_flags = _FLAGS[flags | 1]
            if _DIRECT:  # what SpanContext(...) builds: both ids are valid (as below)
                fields = (trace_id, span_id, False, sampled_flags, state or DEFAULT_TRACE_STATE, True)
                ctx = _new_tuple(SpanContext, fields)
            else:
                ctx = SpanContext(trace_id, span_id, False, sampled_flags, state)
            return lean.start(
                name,
                context,
                ctx,
                parent_context,
                kind,
                attributes(*args) if attributes is not None else None,
                start_time,
            )
        span_id = _getrandbits(64)
        while not span_id:
            span_id = _getrandbits(64)
        if _DIRECT:
            # What SpanContext(...) and NonRecordingSpan(...) build, without their Python-level
            # constructors (the ids are valid by construction); checked at import.
            span = _new_object(NonRecordingSpan)
            span._context = _new_tuple(
                SpanContext, (trace_id, span_id, False, _FLAGS[flags], state or DEFAULT_TRACE_STATE, True)
            )
            return span
        return NonRecordingSpan(SpanContext(trace_id, span_id, False, _FLAGS[flags], state))

    def _sdk(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Callable[..., Mapping[str, Any]] | None,
        start_time: int | None,
        args: tuple[Any, ...] = (),
    ) -> trace.Span:
        return self.tracer.start_span(
            name, context, kind, attributes(*args) if attributes is not None else None, start_time=start_time
        )

    def set_attributes(self, span: trace.Span, attributes: Mapping[str, Any]) -> None:
        """``span.set_attributes(attributes)``, without re-validating values that are valid already."""
        lean = self.lean
        if lean is None:
            span.set_attributes(attributes)
        else:
            lean.set_attributes(span, attributes)

    def end(self, span: trace.Span) -> None:
        """``span.end()``, without building a ``ReadableSpan`` when our processor takes its fields."""
        lean = self.lean
        if lean is None:
            span.end()
        else:
            lean.end(span)

    def finished(
        self,
        name: str,
        parent: SpanContext,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
        end_time: int,
        status: Status | None = None,
    ) -> bool:
        """Record a span of ``parent``'s trace that is already over; False: use start()/end() instead.

        ``attributes`` is handed over (the caller must not touch it afterwards).
        """
        lean = self.lean
        decide = self.decide
        if lean is None or decide is None or not lean.on_end_only or not self._is_enabled():
            return False
        direct = _DIRECT and type(parent) is SpanContext and parent[5]  # a valid parent, as a tuple
        if direct:
            trace_id, parent_flags, state = parent[0], parent[3], parent[4]
        else:
            trace_id, parent_flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        if decide(parent, trace_id):
            span_id = _getrandbits(64)
            while not span_id:
                span_id = _getrandbits(64)
            flags = _FLAGS[(parent_flags & _RANDOM_BIT) | 1]
            ctx = (
                _new_tuple(SpanContext, (trace_id, span_id, False, flags, state, True))
                if direct  # what SpanContext(...) builds: both ids are valid
                else SpanContext(trace_id, span_id, False, flags, state)
            )
            lean.finished(name, ctx, parent, kind, attributes, start_time, end_time, status)
        return True


def _enabled() -> bool:
    return True


def _on_start_is_noop(processor: Any) -> bool:
    """Whether ``on_start`` of ``processor`` (and of any it fans out to or wraps) does nothing.

    Known no-ops: the SDK's batch and simple processors and the base class; our drop
    counter forwards to the processor it wraps.
    """
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if type(processor) is SynchronousMultiSpanProcessor:
        return all(_on_start_is_noop(p) for p in processor._span_processors)
    if type(processor).on_start in (
        SpanProcessor.on_start,
        BatchSpanProcessor.on_start,
        SimpleSpanProcessor.on_start,
    ):
        return True
    inner = getattr(processor, "inner", None)
    if getattr(type(processor), "forwards_on_start", False) and inner is not None:
        return _on_start_is_noop(inner)
    return False


def _fields_sink(processor: Any) -> tuple[Any, Callable[..., bool] | None]:
    """``(processors, on_end_fields)`` when ``processor`` fans out to one processor that has it."""
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    if type(processor) is not SynchronousMultiSpanProcessor:
        return None, None
    processors = processor._span_processors
    if len(processors) != 1:
        return None, None
    sink = getattr(processors[0], "on_end_fields", None)
    return (processors, sink) if callable(sink) else (None, None)


def _root_bound(sampler: Any) -> int | None:
    """Root decisions of the SDK's static and ratio samplers as one comparison bound."""
    decide = compile_sampler(sampler)
    if decide is _always:
        return _TRACE_ID_LIMIT + 1
    if decide is _never:
        return 0
    if decide is not None and isinstance(sampler, sdk_sampling.TraceIdRatioBased):
        return int(sampler.bound)
    return None


def _span_end_is_known() -> bool:
    """Whether the SDK's ``Span.end`` does the steps :meth:`LeanSpans.end` repeats, no more."""
    if _Span is None or forced_off("sdk-lean-end"):
        return False
    code = getattr(_Span.end, "__code__", None)
    return code is not None and set(code.co_names) == _SPAN_END_NAMES


#: The globals and attributes ``Span.end`` reads on SDK 1.43-1.45.
_SPAN_END_NAMES = frozenset(
    {
        "_lock", "_start_time", "RuntimeError", "_end_time", "logger", "warning", "time_ns",
        "_attributes", "_immutable", "_record_end_metrics", "_span_processor", "_on_ending",
        "on_end", "_readable_span",
    }
)  # fmt: skip

#: Every field ``Span.__init__`` sets on the SDK releases this was written for.
_SPAN_FIELDS = frozenset(
    {
        "_name",
        "_context",
        "_kind",
        "_instrumentation_info",
        "_instrumentation_scope",
        "_parent",
        "_start_time",
        "_end_time",
        "_attributes",
        "_events",
        "_links",
        "_resource",
        "_status",
        "_sampler",
        "_trace_config",
        "_record_exception",
        "_set_status_on_exception",
        "_span_processor",
        "_limits",
        "_lock",
        "_record_end_metrics",
    }
)
_LEAN_END = _span_end_is_known()
#: the ``Span.end`` probed; one patched in later (by a user or another library) is called instead
_PROBED_END = getattr(_Span, "end", None)


class LeanSpans:
    """Builds recording SDK spans for one tracer without ``Tracer.start_span``'s overhead."""

    def __init__(self, tracer: Tracer, constants: dict[str, Any]) -> None:
        self.tracer = tracer
        self._constants = constants
        limits = tracer._span_limits
        self._processor = tracer.span_processor
        #: what ReadableSpan(...) sets that is the same for every span of this tracer
        self._readable_constants = {
            "_instrumentation_info": constants["_instrumentation_info"],
            "_instrumentation_scope": constants["_instrumentation_scope"],
            "_resource": constants["_resource"],
            "_events": (),
            "_links": (),
        }
        #: whether every processor's on_start is a known no-op (then finished spans may skip it)
        self.on_end_only = _on_start_is_noop(self._processor)
        #: the processors' tuple when it is a lone processor taking ended spans by their fields
        #: (ours, encoding them for its exporter); rechecked per span, processors can be added
        self._direct_for, self._direct = _fields_sink(self._processor)
        #: on_start may be skipped while the processors are still that lone one (its on_start does nothing)
        self._skip_on_start = self.on_end_only and self._direct_for is not None
        self._max_attributes = limits.max_span_attributes
        self._max_value_len = limits.max_span_attribute_length
        self._max_events = limits.max_events
        self._max_links = limits.max_links
        #: the processors' ``_on_ending`` (a no-op for ours; None: the SDK has none)
        self._on_ending: Callable[[Any], None] | None = getattr(self._processor, "_on_ending", None)
        #: whether :meth:`end` may do what ``Span.end`` does (its steps are the ones we know)
        self.lean_end = _LEAN_END and self._on_ending is not None and _Span.end is _PROBED_END
        self._scope = self._readable_constants["_instrumentation_scope"]

    @classmethod
    def for_tracer(cls, tracer: Tracer) -> LeanSpans | None:
        """The builder, if this SDK's span is laid out as expected (checked on a probe span)."""
        if _Span is None or forced_off("sdk-lean-spans"):
            return None
        try:
            metrics = tracer._tracer_metrics.start_span(None, sdk_sampling.Decision.RECORD_AND_SAMPLE)
            probe = _Span(
                name="probe",
                context=SpanContext(1, 1, False, TraceFlags(1)),
                sampler=tracer.sampler,
                resource=tracer.resource,
                span_processor=SpanProcessor(),
                instrumentation_info=tracer.instrumentation_info,
                limits=tracer._span_limits,
                instrumentation_scope=tracer._instrumentation_scope,
                record_end_metrics=metrics,
            )
        except Exception:  # an SDK whose span takes other arguments
            return None
        fields = vars(probe)
        if set(fields) != _SPAN_FIELDS or not isinstance(fields["_attributes"], BoundedAttributes):
            return None
        constants = {
            name: fields[name]
            for name in (
                "_instrumentation_info",
                "_instrumentation_scope",
                "_resource",
                "_status",
                "_sampler",
                "_trace_config",
                "_record_exception",
                "_set_status_on_exception",
                "_limits",
                "_record_end_metrics",
                "_end_time",
            )
        }
        constants["_span_processor"] = tracer.span_processor
        return cls(tracer, constants)

    def start(
        self,
        name: str,
        context: Context | None,
        span_context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        start_time: int | None = None,
    ) -> trace.Span:
        """What ``Tracer.start_span`` builds for a sampled span with these ids (and calls ``on_start``)."""
        span: Any = _Span.__new__(_Span)  # type: ignore[no-untyped-call]
        fields = span.__dict__
        fields.update(self._constants)
        fields["_name"] = name
        fields["_context"] = span_context
        fields["_kind"] = kind
        fields["_parent"] = parent
        fields["_lock"] = threading.Lock()
        fields["_attributes"] = self.attributes(attributes)
        fields["_events"] = BoundedList(self._max_events)
        fields["_links"] = BoundedList(self._max_links)
        fields["_start_time"] = start_time if start_time is not None else time_ns()
        processor = self._processor
        if not self._skip_on_start or getattr(processor, "_span_processors", None) is not self._direct_for:
            processor.on_start(span, parent_context=context)
        started: trace.Span = span
        return started

    def finished(
        self,
        name: str,
        span_context: SpanContext,
        parent: SpanContext,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
        end_time: int,
        status: Status | None,
    ) -> None:
        """What ending a live span with these fields hands the processors' ``on_end``."""
        direct = self._direct
        if (
            direct is not None
            and getattr(self._processor, "_span_processors", None) is self._direct_for
            and self._trusted(attributes, 0)  # the SDK would keep them as they are
            and direct(
                self._readable_constants["_resource"],
                self._readable_constants["_instrumentation_scope"],
                span_context,
                parent,
                name,
                kind,
                start_time,
                end_time,
                attributes,
                status if status is not None else self._constants["_status"],
            )
        ):
            return
        span: Any = _new_object(ReadableSpan)
        fields = span.__dict__
        fields.update(self._readable_constants)
        fields["_name"] = name
        fields["_context"] = span_context
        fields["_kind"] = kind
        fields["_parent"] = parent
        fields["_start_time"] = start_time
        fields["_end_time"] = end_time
        fields["_attributes"] = self.attributes(attributes, immutable=True)
        fields["_status"] = status if status is not None else self._constants["_status"]
        self._processor.on_end(span)

    def end(self, span: Any) -> None:
        """``span.end()`` for a span :meth:`start` built; its fields go straight to the lone
        processor's ``on_end_fields`` (ours, encoding it) when it has no events, links or
        dropped attributes: no ``ReadableSpan`` is built and nothing is validated again.

        The same steps as the SDK's ``Span.end`` (checked at import against its code): end
        time and immutable attributes under the span's lock, the SDK's end-of-span metrics,
        the processors' ``_on_ending``, then ``on_end``.
        """
        direct = self._direct
        if (
            direct is None
            or not self.lean_end
            or type(span) is not _Span
            or span._span_processor is not self._processor
            or getattr(self._processor, "_span_processors", None) is not self._direct_for
            # a span of our tracer (spans of others may need on_end's URL redaction), sampled
            or span._instrumentation_scope is not self._scope
            or not (span._context[3] if CONTEXT_IS_TUPLE else span._context.trace_flags) & 1  # type: ignore[index,union-attr]
        ):
            span.end()
            return
        attributes: Any = span._attributes
        events: Any = span._events
        links: Any = span._links
        with span._lock:
            if span._start_time is None or span._end_time is not None:
                lean = None  # Span.end raises or warns: let it
            else:
                end_time = span._end_time = time_ns()
                attributes._immutable = True
                # Nothing can be added once the end time is set: decided under the lock.
                lean = (
                    type(attributes) is BoundedAttributes
                    and not attributes.dropped
                    and type(events) is BoundedList
                    and not events
                    and not events.dropped
                    and type(links) is BoundedList
                    and not links
                    and not links.dropped
                )
        if lean is None:
            span.end()
            return
        record = span._record_end_metrics
        if record:
            record()
        self._on_ending(span)  # type: ignore[misc]
        if lean and direct(
            span._resource,
            span._instrumentation_scope,
            span._context,
            span._parent,
            span._name,
            span._kind,
            span._start_time,
            end_time,
            attributes._dict,
            span._status,
        ):
            return
        self._processor.on_end(span._readable_span())

    def attributes(self, attributes: Mapping[str, Any] | None, immutable: bool = False) -> BoundedAttributes:
        bounded = BoundedAttributes(
            self._max_attributes, None, immutable=False, max_value_len=self._max_value_len
        )
        if attributes:
            if self._trusted(attributes, 0):
                bounded._dict.update(attributes)
            else:
                bounded._set_items(attributes)
        bounded._immutable = immutable
        return bounded

    def _trusted(self, attributes: Mapping[str, Any], present: int) -> bool:
        """Whether the SDK's validation would keep ``attributes`` exactly as they are."""
        frozen = type(attributes) is FrozenAttributes
        if frozen and not present and attributes.trusted_by is self:  # type: ignore[attr-defined]
            return True
        if self._max_value_len is not None:
            return False
        if self._max_attributes is not None and present + len(attributes) > self._max_attributes:
            return False
        if type(attributes) is ValidAttributes:
            return True
        for key, value in attributes.items():
            if type(key) is not str or not key:
                return False
            if type(value) not in _TRUSTED_VALUES and not (
                # A tuple of strings (captured header values): what validation keeps as is.
                type(value) is tuple and all(type(item) is str for item in value)
            ):
                return False
        if frozen and not present:
            attributes.trusted_by = self  # type: ignore[attr-defined]
        return True

    def set_attributes(self, span: Any, attributes: Mapping[str, Any]) -> None:
        """``span.set_attributes(attributes)``, skipping re-validation of already valid values."""
        bounded = getattr(span, "_attributes", None)
        if type(span) is not _Span or type(bounded) is not BoundedAttributes:
            span.set_attributes(attributes)
            return
        with span._lock:
            if (
                span._end_time is None
                and not bounded._immutable
                and self._trusted(attributes, len(bounded._dict))
            ):
                with bounded._lock:
                    data = bounded._dict
                    if data.keys().isdisjoint(attributes):
                        data.update(attributes)  # new keys go last, as setting them one by one does
                    else:
                        for key, value in attributes.items():
                            data.pop(key, None)
                            data[key] = value
                return
        span.set_attributes(attributes)
