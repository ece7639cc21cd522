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

Anything else (a custom sampler or id generator, SDK self-metrics on, a disabled tracer, an
SDK whose internals moved) takes the SDK path unchanged.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Tracer
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

#: parent span context (None for a root) and trace id -> sampled?
Decide = Callable[[SpanContext | None, int], bool]

_RANDOM_BIT = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
_FLAGS = {f: TraceFlags(f) for f in (0, _RANDOM_BIT)}
_TRACE_ID_LIMIT = (1 << 64) - 1
_getrandbits = random.getrandbits


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
            if parent.is_remote:
                return (remote_yes if parent.trace_flags.sampled else remote_no)(parent, trace_id)
            return (local_yes if parent.trace_flags.sampled else local_no)(parent, trace_id)

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
        self.random_bit = 0
        self._is_enabled: Callable[[], bool] = _enabled
        if type(tracer) is not Tracer:
            return
        if os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true":
            return  # the SDK counts started spans itself; let it
        ids = getattr(tracer, "id_generator", None)
        if type(ids) is not PrimableIdGenerator:
            return
        self.ids = ids
        self.random_bit = _RANDOM_BIT if ids.is_trace_id_random() else 0
        self._is_enabled = getattr(tracer, "_is_enabled", _enabled)
        sampler = getattr(tracer, "sampler", None)
        self.decide = compile_sampler(sampler)
        root = getattr(sampler, "_root", None) if isinstance(sampler, sdk_sampling.ParentBased) else sampler
        self.root_bound = _root_bound(root) if self.decide is not None else None

    @property
    def fast(self) -> bool:
        return self.decide is not None

    def start(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Callable[[], Mapping[str, Any]] | None = None,
    ) -> trace.Span:
        """Start a span; ``attributes`` is called only if the span will record."""
        decide = self.decide
        if decide is None or not self._is_enabled():
            return self._sdk(name, context, kind, attributes)
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
            if decide(parent, trace_id):
                return self._sdk(name, context, kind, attributes)
            flags = _FLAGS[parent.trace_flags & _RANDOM_BIT]
            state = parent.trace_state
        else:
            trace_id = _getrandbits(128)
            while not trace_id:
                trace_id = _getrandbits(128)
            bound = self.root_bound
            if (trace_id & _TRACE_ID_LIMIT < bound) if bound is not None else decide(None, trace_id):
                assert self.ids is not None
                self.ids.prime(trace_id)
                return self._sdk(name, context, kind, attributes)
            flags = _FLAGS[self.random_bit]
            state = None
        span_id = _getrandbits(64)
        while not span_id:
            span_id = _getrandbits(64)
        return NonRecordingSpan(SpanContext(trace_id, span_id, False, flags, state))

    def _sdk(
        self,
        name: str,
        context: Context | None,
        kind: SpanKind,
        attributes: Callable[[], Mapping[str, Any]] | None,
    ) -> trace.Span:
        return self.tracer.start_span(name, context, kind, attributes() if attributes is not None else None)


def _enabled() -> bool:
    return True


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
