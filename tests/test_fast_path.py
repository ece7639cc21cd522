"""The overhead fast path keeps behaviour identical to the stock SDK path it replaces.

* :class:`SpanStarter` takes the SDK sampler's decision itself: same ids, flags, trace
  state and recording-or-not as ``Tracer.start_span`` for every standard sampler and kind
  of parent (the random module is seeded identically for both sides).
* :class:`SpanEncoder` writes the same ``ExportTraceServiceRequest`` bytes as the SDK's
  OTLP encoder for spans with every attribute type, events, links, statuses, parents,
  trace state, several resources and scopes.
* The lean OTLP transport is only used where it cannot differ from the default one.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from otel_perf._core.spans import PrimableIdGenerator, SpanStarter, compile_sampler
from otel_perf._export import otlp_spans
from otel_perf._export.otlp_spans import SpanEncoder

pytestmark = pytest.mark.matrix

SAMPLERS = {
    "always_on": sampling.ALWAYS_ON,
    "always_off": sampling.ALWAYS_OFF,
    "ratio_0": sampling.TraceIdRatioBased(0.0),
    "ratio_0.1": sampling.TraceIdRatioBased(0.1),
    "ratio_0.5": sampling.TraceIdRatioBased(0.5),
    "ratio_1": sampling.TraceIdRatioBased(1.0),
    "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_ratio": sampling.ParentBased(sampling.TraceIdRatioBased(0.3)),
    "parentbased_env_class": sampling.ParentBasedTraceIdRatio(0.3),
    "parentbased_inverted": sampling.ParentBased(
        sampling.TraceIdRatioBased(0.5),
        remote_parent_sampled=sampling.ALWAYS_OFF,
        remote_parent_not_sampled=sampling.ALWAYS_ON,
        local_parent_sampled=sampling.TraceIdRatioBased(0.5),
        local_parent_not_sampled=sampling.ALWAYS_ON,
    ),
}
PARENTS: dict[str, SpanContext | None] = {
    "root": None,
    "remote_sampled": SpanContext(0xA1, 0xB1, True, TraceFlags(0x03), TraceState([("k", "v")])),
    "remote_unsampled": SpanContext(0xA2, 0xB2, True, TraceFlags(0x02), TraceState([("x", "1")])),
    "remote_unsampled_norandom": SpanContext(0xA3, 0xB3, True, TraceFlags(0x00)),
    "local_sampled": SpanContext(0xA4 << 70, 0xB4, False, TraceFlags(0x01)),
    "local_unsampled": SpanContext(0xFFFF << 64, 0xB5, False, TraceFlags(0x00)),
}


def _tracer(sampler: sampling.Sampler) -> Any:
    provider = TracerProvider(sampler=sampler, id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    return provider.get_tracer("test")


@pytest.mark.parametrize("sampler_name", sorted(SAMPLERS))
@pytest.mark.parametrize("parent_name", sorted(PARENTS))
def test_span_starter_matches_the_sdk(sampler_name: str, parent_name: str) -> None:
    sampler = SAMPLERS[sampler_name]
    starter = SpanStarter(_tracer(sampler))
    assert starter.fast, "every standard sampler has a fast path"
    parent = PARENTS[parent_name]
    context = set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
    for seed in range(40):
        random.seed(seed)
        ours = starter.start("GET", context, SpanKind.SERVER, lambda: {"a": 1})
        random.seed(seed)
        stock = _tracer(sampler).start_span("GET", context, SpanKind.SERVER, {"a": 1})
        assert ours.get_span_context() == stock.get_span_context(), seed
        assert ours.is_recording() == stock.is_recording()
        assert type(ours) is type(stock)
        if stock.is_recording():
            assert _fields(ours) == _fields(stock)


def _fields(span: Any) -> dict[str, Any]:
    """A recorded span's state, comparable across two spans (locks and start times differ)."""
    out: dict[str, Any] = {}
    for name, value in vars(span).items():
        if name in ("_lock", "_start_time"):
            continue
        shown = value
        if hasattr(value, "_dict"):  # BoundedAttributes
            shown = (
                list(value._dict.items()),
                value.maxlen,
                value.dropped,
                value.max_value_len,
                value._immutable,
            )
        elif hasattr(value, "_dq"):  # BoundedList
            shown = (list(value._dq), value._dq.maxlen, value.dropped)
        elif name == "_span_processor":
            shown = type(value)
        elif name == "_limits":
            shown = vars(value)
        elif name == "_status":
            shown = (value.status_code, value.description)
        out[name] = shown
    return out


def test_lean_spans_are_sdk_spans_with_the_same_state_and_lifecycle() -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    class Recording(SpanProcessor):
        def __init__(self) -> None:
            self.started: list[Any] = []
            self.ended: list[ReadableSpan] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.started.append(span)

        def on_end(self, span: ReadableSpan) -> None:
            self.ended.append(span)

    spans: dict[str, list[ReadableSpan]] = {}
    for side in ("ours", "stock"):
        provider = TracerProvider(
            sampler=sampling.ALWAYS_ON, id_generator=PrimableIdGenerator(), shutdown_on_exit=False
        )
        processor = Recording()
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("lib", "1.0")
        random.seed(7)
        if side == "ours":
            starter = SpanStarter(tracer)
            assert starter.lean is not None
            span = starter.start("GET", None, SpanKind.SERVER, lambda: {"http.request.method": "GET", "n": 1})
            starter.lean.set_attributes(
                span, {"http.route": "/x", "http.response.status_code": 200, "d": 0.5}
            )
        else:
            span = tracer.start_span("GET", None, SpanKind.SERVER, {"http.request.method": "GET", "n": 1})
            span.set_attributes({"http.route": "/x", "http.response.status_code": 200, "d": 0.5})
        assert processor.started == [span]
        span.add_event("e", {"k": "v"})
        span.set_status(Status(StatusCode.ERROR, "x"))
        span.update_name("GET /x")
        span.end()
        spans[side] = processor.ended
    ours, stock = spans["ours"], spans["stock"]
    assert len(ours) == len(stock) == 1
    ours_fields, stock_fields = _fields(ours[0]), _fields(stock[0])
    for fields in (ours_fields, stock_fields):
        fields.pop("_end_time")
        fields["_events"] = [(e.name, dict(e.attributes or {})) for e in fields["_events"][0]]
    assert ours_fields == stock_fields


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _public(span: ReadableSpan) -> tuple[Any, ...]:
    """Everything an exporter can read from a span."""
    return (
        span.name,
        span.context,
        span.parent,
        span.kind,
        dict(span.attributes or {}),
        list(span.events),
        list(span.links),
        (span.status.status_code, span.status.description),
        span.start_time,
        span.end_time,
        span.resource,
        span.instrumentation_scope,
        span.dropped_attributes,
        span.dropped_events,
        span.dropped_links,
    )


@pytest.mark.parametrize(
    "sampler_name", ["always_on", "parentbased_ratio", "ratio_0.5", "parentbased_inverted"]
)
@pytest.mark.parametrize("parent_name", ["local_sampled", "local_unsampled", "remote_sampled"])
@pytest.mark.parametrize("error", [False, True])
def test_finished_spans_are_what_ending_a_started_span_exports(
    sampler_name: str, parent_name: str, error: bool
) -> None:
    """A statement's span handed over already ended exports exactly what start()+end() would."""
    parent = PARENTS[parent_name]
    assert parent is not None
    exported: dict[str, list[ReadableSpan]] = {}
    for side in ("ours", "stock"):
        provider = TracerProvider(
            sampler=SAMPLERS[sampler_name], id_generator=PrimableIdGenerator(), shutdown_on_exit=False
        )
        collect = _Collect()
        provider.add_span_processor(SimpleSpanProcessor(collect))
        tracer = provider.get_tracer("lib", "1.0")
        attrs = {"db.system.name": "sqlite", "db.operation.name": "SELECT", "n": 3, "slow": True}
        status = Status(StatusCode.ERROR) if error else None
        random.seed(11)
        if side == "ours":
            starter = SpanStarter(tracer)
            assert starter.finished("SELECT t", parent, SpanKind.CLIENT, dict(attrs), 1_000, 5_000, status)
        else:
            context = set_span_in_context(NonRecordingSpan(parent))
            span = tracer.start_span("SELECT t", context, SpanKind.CLIENT, dict(attrs), start_time=1_000)
            if status is not None:
                span.set_status(status)
            span.end(end_time=5_000)
        exported[side] = collect.spans
    assert [_public(s) for s in exported["ours"]] == [_public(s) for s in exported["stock"]]
    assert encode_spans(exported["ours"]) == encode_spans(exported["stock"])
    assert SpanEncoder().encode(exported["ours"]) == SpanEncoder().encode(exported["stock"])


def _encoding_pipeline(provider: TracerProvider) -> tuple[Any, list[Any], SpanEncoder]:
    """Our production span pipeline (drop counter, batch queue, pre-encoding) into a list."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_perf._metrics.instruments import Registry
    from otel_perf._setup.providers import DropCountingProcessor, Health

    kept: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    encoder = SpanEncoder()
    processor = DropCountingProcessor(
        BatchSpanProcessor(Keep(), schedule_delay_millis=60_000), Health(Registry(), 60.0), 100, encoder
    )
    provider.add_span_processor(processor)
    return processor, kept, encoder


@pytest.mark.parametrize("sampler_name", ["always_on", "parentbased_ratio", "parentbased_inverted"])
@pytest.mark.parametrize("parent_name", ["local_sampled", "local_unsampled", "remote_sampled"])
@pytest.mark.parametrize("error", [False, True])
def test_finished_spans_encoded_from_their_fields_are_the_sdk_bytes(
    sampler_name: str, parent_name: str, error: bool
) -> None:
    """Our pipeline encodes a finished span without building it: the bytes of start()+end()."""
    parent = PARENTS[parent_name]
    assert parent is not None
    attrs = {"db.system.name": "sqlite", "db.operation.name": "SELECT", "n": 3, "slow": True, "d": 0.5}
    status = Status(StatusCode.ERROR) if error else None
    provider = TracerProvider(
        sampler=SAMPLERS[sampler_name], id_generator=PrimableIdGenerator(), shutdown_on_exit=False
    )
    processor, kept, encoder = _encoding_pipeline(provider)
    ended: list[Any] = []
    processor.on_end = ended.append  # the SDK span path: must not be taken
    tracer = provider.get_tracer("lib", "1.0")
    random.seed(11)
    starter = SpanStarter(tracer)
    assert starter.finished("SELECT t", parent, SpanKind.CLIENT, dict(attrs), 1_000, 5_000, status)
    assert processor.force_flush()
    assert ended == []

    stock_provider = TracerProvider(
        sampler=SAMPLERS[sampler_name], id_generator=PrimableIdGenerator(), shutdown_on_exit=False
    )
    collect = _Collect()
    stock_provider.add_span_processor(SimpleSpanProcessor(collect))
    random.seed(11)
    context = set_span_in_context(NonRecordingSpan(parent))
    span = stock_provider.get_tracer("lib", "1.0").start_span(
        "SELECT t", context, SpanKind.CLIENT, dict(attrs), start_time=1_000
    )
    if status is not None:
        span.set_status(status)
    span.end(end_time=5_000)
    assert len(kept) == len(collect.spans)
    assert all(type(item) is bytes for item in kept)
    assert encoder.encode(kept) == encode_spans(collect.spans).SerializeToString()
    provider.shutdown()


def _without_end_times(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest.FromString(data)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.end_time_unix_nano = 0
    return request


@pytest.mark.parametrize("case", ["plain", "event", "error", "dropped attribute", "lean end off"])
def test_live_spans_ended_lean_are_the_sdk_bytes(case: str) -> None:
    """A live span of ours ended through SpanStarter.end: the bytes the SDK's Span.end gives;
    straight from its fields when nothing needs a ReadableSpan, through one otherwise."""
    limits = SpanLimits(max_span_attributes=3) if case == "dropped attribute" else SpanLimits()
    exported: dict[str, bytes] = {}
    start_attrs = {"http.request.method": "GET", "url.path": "/x"}
    for side in ("ours", "stock"):
        provider = TracerProvider(
            sampler=sampling.ALWAYS_ON, id_generator=PrimableIdGenerator(), shutdown_on_exit=False,
            span_limits=limits,
        )  # fmt: skip
        processor, kept, encoder = _encoding_pipeline(provider)
        ended: list[Any] = []
        on_end = processor.on_end
        processor.on_end = lambda span, ended=ended, on_end=on_end: (  # type: ignore[method-assign]
            ended.append(span),
            on_end(span),
        )
        tracer = provider.get_tracer("lib", "1.0")
        random.seed(5)
        end_attrs = {"http.route": "/x", "http.response.status_code": 200, "d": 0.5}
        if side == "ours":
            starter = SpanStarter(tracer)
            assert starter.lean is not None and starter.lean.lean_end
            if case == "lean end off":
                starter.lean.lean_end = False
            span = starter.start("GET", None, SpanKind.SERVER, lambda: dict(start_attrs), 1_000)
            starter.set_attributes(span, end_attrs)
        else:
            span = tracer.start_span("GET", None, SpanKind.SERVER, dict(start_attrs), start_time=1_000)
            span.set_attributes(end_attrs)
        span.update_name("GET /x")
        if case == "event":
            span.add_event("exception", {"exception.type": "ValueError"}, timestamp=2_000)
        if case == "error":
            span.set_status(Status(StatusCode.ERROR, "boom"))
        if side == "ours":
            starter.end(span)
            # the SDK's path only for what a ReadableSpan must carry (or with the probe off)
            assert len(ended) == (case in ("event", "dropped attribute", "lean end off"))
        else:
            span.end()
        assert not span.is_recording()
        assert processor.force_flush()
        assert len(kept) == 1
        exported[side] = encoder.encode(kept)
        provider.shutdown()
    assert _without_end_times(exported["ours"]) == _without_end_times(exported["stock"])


def test_a_lean_end_after_the_end_is_the_sdk_warning(caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    processor, kept, _ = _encoding_pipeline(provider)
    starter = SpanStarter(provider.get_tracer("lib", "1.0"))
    span = starter.start("GET", None, SpanKind.SERVER)
    starter.end(span)
    starter.end(span)
    assert "Calling end() on an ended span." in caplog.text
    assert processor.force_flush()
    assert len(kept) == 1
    provider.shutdown()


def test_a_lean_end_takes_the_sdk_steps(caplog: pytest.LogCaptureFixture) -> None:
    """End-of-span metrics and the processors' _on_ending run, the attributes freeze."""
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    processor, kept, encoder = _encoding_pipeline(provider)
    steps: list[str] = []
    multi = provider._active_span_processor
    on_ending = multi._on_ending
    multi._on_ending = lambda span: (steps.append("on_ending"), on_ending(span))  # type: ignore[method-assign]
    ended: list[Any] = []
    processor.on_end = ended.append
    starter = SpanStarter(provider.get_tracer("lib", "1.0"))
    span: Any = starter.start("GET", None, SpanKind.SERVER, lambda: {"a": 1})
    span._record_end_metrics = lambda: steps.append("metrics")
    starter.end(span)
    assert steps == ["metrics", "on_ending"]
    assert ended == []  # straight from the fields
    span.set_attribute("late", 1)
    assert "Setting attribute on ended span." in caplog.text
    with pytest.raises(TypeError):  # frozen, as Span.end leaves them
        span._attributes["late"] = 1
    assert processor.force_flush()
    (sent,) = ExportTraceServiceRequest.FromString(encoder.encode(kept)).resource_spans[0].scope_spans
    assert [kv.key for kv in sent.spans[0].attributes] == ["a"]
    provider.shutdown()


def test_spans_of_other_tracers_and_unsampled_ones_end_through_the_sdk() -> None:
    """Only our tracer's sampled spans skip on_end: another tracer's keeps its own scope (and
    on_end's URL redaction), a recorded but unsampled one is not exported."""
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    processor, kept, encoder = _encoding_pipeline(provider)
    ended: list[Any] = []
    on_end = processor.on_end
    processor.on_end = lambda span: (ended.append(span.name), on_end(span))  # type: ignore[method-assign]
    starter = SpanStarter(provider.get_tracer("otel_perf", "1.0"))
    ours = starter.start("ours", None, SpanKind.SERVER)
    unsampled: Any = starter.start("unsampled", None, SpanKind.SERVER)
    sampled = unsampled.get_span_context()  # as a sampler deciding RECORD_ONLY leaves it:
    unsampled._context = SpanContext(sampled.trace_id, sampled.span_id, False, TraceFlags(0))
    theirs = provider.get_tracer("someone.else").start_span("theirs")
    assert starter.lean is not None and type(theirs) is type(ours)
    for span in (ours, unsampled, theirs):
        starter.end(span)
    assert ended == ["unsampled", "theirs"]
    assert processor.force_flush()
    request = ExportTraceServiceRequest.FromString(encoder.encode(kept))
    scopes = {
        scope.scope.name: [span.name for span in scope.spans]
        for resource in request.resource_spans
        for scope in resource.scope_spans
    }
    assert scopes == {"otel_perf": ["ours"], "someone.else": ["theirs"]}
    provider.shutdown()


def test_set_attributes_orders_keys_as_the_sdk_does() -> None:
    """New keys appended in one update; a key set again moves last, as the SDK's set does."""
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    _encoding_pipeline(provider)
    tracer = provider.get_tracer("lib")
    starter = SpanStarter(tracer)
    ours: Any = starter.start("x", None, SpanKind.SERVER, lambda: {"a": 1, "b": 2})
    stock: Any = tracer.start_span("x", None, SpanKind.SERVER, {"a": 1, "b": 2})
    for attributes in ({"c": 3, "d": 4}, {"a": 5, "e": 6}):
        starter.set_attributes(ours, attributes)
        stock.set_attributes(attributes)
    assert list(ours.attributes.items()) == list(stock.attributes.items())
    assert list(ours.attributes) == ["b", "c", "d", "a", "e"]
    provider.shutdown()


def test_live_spans_reach_a_processor_added_later() -> None:
    """on_start is skipped only while our lone processor (a no-op on_start) is the only one."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Watch(SpanProcessor):
        def __init__(self) -> None:
            self.started: list[Any] = []
            self.ended: list[Any] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.started.append(span)

        def on_end(self, span: Any) -> None:
            self.ended.append(span)

    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    processor, kept, _ = _encoding_pipeline(provider)
    starter = SpanStarter(provider.get_tracer("lib", "1.0"))  # built while ours is alone
    watch = Watch()
    provider.add_span_processor(watch)
    span = starter.start("GET", None, SpanKind.SERVER, lambda: {"a": 1})
    starter.end(span)
    assert watch.started == [span]
    assert [s.name for s in watch.ended] == ["GET"]
    assert processor.force_flush()
    assert len(kept) == 1
    provider.shutdown()


def test_finished_spans_reach_a_processor_added_later() -> None:
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    processor, kept, _ = _encoding_pipeline(provider)
    tracer = provider.get_tracer("lib", "1.0")
    starter = SpanStarter(tracer)  # built while ours is the only processor
    collect = _Collect()
    provider.add_span_processor(SimpleSpanProcessor(collect))
    parent = PARENTS["local_sampled"]
    assert parent is not None
    assert starter.finished("SELECT t", parent, SpanKind.CLIENT, {"a": 1}, 1_000, 5_000)
    assert processor.force_flush()
    assert [s.name for s in collect.spans] == ["SELECT t"]
    assert len(kept) == 1
    provider.shutdown()


def test_finished_spans_with_attributes_the_sdk_would_change_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = TracerProvider(
        id_generator=PrimableIdGenerator(),
        shutdown_on_exit=False,
        span_limits=SpanLimits(max_span_attributes=1),
    )
    processor, kept, encoder = _encoding_pipeline(provider)
    ended: list[Any] = []
    on_end = processor.on_end
    monkeypatch.setattr(processor, "on_end", lambda span: (ended.append(span), on_end(span)))
    parent = PARENTS["local_sampled"]
    assert parent is not None
    starter = SpanStarter(provider.get_tracer("lib", "1.0"))
    assert starter.finished("SELECT t", parent, SpanKind.CLIENT, {"a": 1, "b": 2}, 1_000, 5_000)
    assert processor.force_flush()
    assert len(ended) == 1 and ended[0].dropped_attributes == 1  # built by the SDK's rules
    assert encoder.encode(kept) == encode_spans(ended).SerializeToString()
    provider.shutdown()


def test_finished_spans_take_the_live_path_when_a_processor_watches_starts() -> None:
    from opentelemetry.sdk.trace import SpanProcessor

    class Watching(SpanProcessor):
        def __init__(self) -> None:
            self.started: list[Any] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            self.started.append(span)

    provider = TracerProvider(
        sampler=sampling.ALWAYS_ON, id_generator=PrimableIdGenerator(), shutdown_on_exit=False
    )
    provider.add_span_processor(Watching())
    starter = SpanStarter(provider.get_tracer("lib"))
    parent = PARENTS["local_sampled"]
    assert parent is not None
    assert not starter.finished("SELECT t", parent, SpanKind.CLIENT, {}, 1, 2)


def test_lean_attributes_fall_back_to_sdk_validation_when_needed() -> None:
    provider = TracerProvider(
        sampler=sampling.ALWAYS_ON,
        id_generator=PrimableIdGenerator(),
        shutdown_on_exit=False,
        span_limits=SpanLimits(max_span_attributes=3, max_span_attribute_length=4),
    )
    starter = SpanStarter(provider.get_tracer("lib"))
    assert starter.lean is not None
    span: Any = starter.start(
        "GET", None, SpanKind.SERVER, lambda: {"a": "long value", "b": [1, 2], "c": 1, "d": 2}
    )
    stock: Any = provider.get_tracer("lib").start_span(
        "GET", None, SpanKind.SERVER, {"a": "long value", "b": [1, 2], "c": 1, "d": 2}
    )
    assert dict(span.attributes) == dict(stock.attributes) == {"b": (1, 2), "c": 1, "d": 2}
    starter.lean.set_attributes(span, {"e": "abcdefgh"})
    stock.set_attributes({"e": "abcdefgh"})
    assert dict(span.attributes) == dict(stock.attributes)
    assert span.dropped_attributes == stock.dropped_attributes
    span.end()
    starter.lean.set_attributes(span, {"late": 1})  # ended: the SDK's warning path, nothing set
    assert "late" not in span.attributes


def test_captured_header_tuples_take_the_lean_path_as_the_sdk_would_store_them() -> None:
    provider = TracerProvider(
        sampler=sampling.ALWAYS_ON, id_generator=PrimableIdGenerator(), shutdown_on_exit=False
    )
    starter = SpanStarter(provider.get_tracer("lib"))
    lean = starter.lean
    assert lean is not None
    headers = {"http.request.header.accept": ("application/json", "text/html"), "x": 1}
    assert lean._trusted(headers, 0)  # a tuple of strings is kept as is by validation
    assert not lean._trusted({"h": ["a list"]}, 0)  # the SDK turns lists into tuples
    assert not lean._trusted({"h": ("a", 1)}, 0)  # mixed types: the SDK's rules decide
    span: Any = starter.start("GET", None, SpanKind.SERVER, lambda: dict(headers))
    stock: Any = provider.get_tracer("lib").start_span("GET", None, SpanKind.SERVER, dict(headers))
    assert dict(span.attributes) == dict(stock.attributes) == headers
    lean.set_attributes(span, {"http.response.header.content_type": ("text/plain",)})
    stock.set_attributes({"http.response.header.content_type": ("text/plain",)})
    assert dict(span.attributes) == dict(stock.attributes)


def test_unknown_samplers_and_generators_take_the_sdk_path() -> None:
    class Custom(sampling.Sampler):
        def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
            return sampling.SamplingResult(sampling.Decision.RECORD_ONLY)

        def get_description(self) -> str:
            return "custom"

    assert compile_sampler(Custom()) is None
    assert compile_sampler(sampling.ParentBased(Custom())) is None
    assert not SpanStarter(_tracer(Custom())).fast
    plain = TracerProvider(sampler=sampling.ALWAYS_ON, shutdown_on_exit=False).get_tracer("t")
    assert not SpanStarter(plain).fast
    span = SpanStarter(_tracer(Custom())).start("x", None, SpanKind.SERVER)
    assert span.is_recording() and not span.get_span_context().trace_flags.sampled


def test_the_attribute_callback_runs_only_for_recorded_spans() -> None:
    calls: list[int] = []
    starter = SpanStarter(_tracer(sampling.ALWAYS_OFF))
    starter.start("x", None, SpanKind.SERVER, lambda: calls.append(1) or {})  # type: ignore[func-returns-value]
    assert calls == []


# --- the encoder --------------------------------------------------------------------------------


def _varied_spans() -> list[ReadableSpan]:
    collect = _Collect()
    resources = (
        Resource.create({"service.name": "a", "n": 3, "f": 1.5, "b": True}),
        Resource.create({"service.name": "b"}, schema_url="https://opentelemetry.io/schemas/1.2.0"),
        Resource.create({"service.name": "a", "n": 3, "f": 1.5, "b": True}),  # equal to the first
    )
    for resource in resources:
        provider = TracerProvider(
            resource=resource,
            shutdown_on_exit=False,
            span_limits=SpanLimits(max_span_attributes=14, max_events=2, max_links=1),
        )
        provider.add_span_processor(SimpleSpanProcessor(collect))
        for name, version, schema, attrs in (
            ("t1", "1.0", None, None),
            ("t2", None, "https://s/1", {"x": "y"}),
            ("t1", "1.0", None, None),
        ):
            tracer = provider.get_tracer(name, version, schema_url=schema, attributes=attrs)
            span = tracer.start_span(
                "GET /x",
                kind=SpanKind.SERVER,
                attributes={
                    "s": "é☃",
                    "i": -5,
                    "big": 2**62,
                    "z": 0,
                    "fl": 0.0,
                    "bt": False,
                    "bs": b"\x00\x01",
                    "arr": ["a", "b"],
                    "ia": [1, 2, -3],
                    "fa": (1.0, 2.5),
                    "ba": [True, False],
                    "empty": "",
                    "long": "x" * 300,
                    "huge": 2**70,
                },
            )
            span.set_attribute("over_the_limit", 1)
            for i in range(3):
                span.add_event(f"ev{i}", {"k": "v", "n": i})
            span.set_status(Status(StatusCode.ERROR, "boom"))
            span.end()
            remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1), TraceState([("k", "v"), ("a", "b")]))
            child = tracer.start_span(
                "child",
                context=set_span_in_context(NonRecordingSpan(remote)),
                kind=SpanKind.CLIENT,
                links=[Link(SpanContext(1, 2, True), {"l": 1}), Link(SpanContext(3, 4, False))],
            )
            child.set_status(Status(StatusCode.OK))
            child.end()
            with tracer.start_as_current_span("inner"):
                tracer.start_span("leaf", kind=SpanKind.PRODUCER).end()
            tracer.start_span("").end()
            tracer.start_span("consumer", kind=SpanKind.CONSUMER).end()
            unset = tracer.start_span("unset")
            unset.set_status(Status(StatusCode.UNSET))
            unset.end()
    return collect.spans


@pytest.fixture(scope="module")
def spans() -> list[ReadableSpan]:
    return _varied_spans()


def test_encoder_writes_the_sdk_bytes(spans: list[ReadableSpan]) -> None:
    stock = encode_spans(spans).SerializeToString()
    ours = SpanEncoder().encode(spans)
    assert ExportTraceServiceRequest.FromString(ours) == ExportTraceServiceRequest.FromString(stock)
    assert ours == stock


def test_encoder_caches_do_not_change_the_output(spans: list[ReadableSpan]) -> None:
    encoder = SpanEncoder()
    first = encoder.encode(spans)
    assert encoder.encode(spans) == first
    assert encoder.encode(list(reversed(spans))) == encode_spans(list(reversed(spans))).SerializeToString()


def test_encoder_bounds_its_pair_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_spans, "MAX_CACHED_PAIRS", 8)
    encoder = SpanEncoder()
    for i in range(50):
        encoder.attributes(b"\x4a", {"url.path": f"/items/{i}"})
    cached = encoder._pairs[b"\x4a"]
    assert 0 < sum(len(values) for values in cached.values()) <= 8
    for i in range(50):  # float keys are bounded too
        encoder.attributes(b"\x4a", {f"key.{i}": 0.5})
    assert 0 < len(encoder._float_keys[b"\x4a"]) <= 8


def test_encoder_cache_keeps_fields_and_types_apart() -> None:
    """A pair seen as an event's attribute, then as a span's, is written with each field's
    tag; True, 1 and 1.0 (equal in Python) are written as bool, int and double."""
    from opentelemetry.sdk.trace import Event
    from opentelemetry.trace import SpanContext, TraceFlags

    def span(name: str, attributes: dict[str, object], events: tuple[Event, ...] = ()) -> ReadableSpan:
        return ReadableSpan(
            name=name,
            context=SpanContext(1, 2, False, TraceFlags(1)),
            attributes=attributes,
            events=events,
            start_time=1,
            end_time=2,
        )

    varied = [
        span("event", {}, (Event("exception", {"exception.type": "ValueError", "n": 1}, timestamp=1),)),
        span("attrs", {"exception.type": "ValueError", "n": 1}),
        span("bool", {"n": True}),
        span("float", {"n": 1.0}),
        span("int", {"n": 1}),
        span("mixed", {"a": "x", "n": 1.5, "b": True, "c": ("x", "y"), "d": 7}),
        span("mixed again", {"a": "x", "n": 2.5, "b": True, "c": ("x", "y"), "d": 7}),
    ]
    encoder = SpanEncoder()
    for _ in range(2):  # cold caches, then warm ones
        ours = encoder.encode(varied)
        assert ExportTraceServiceRequest.FromString(ours) == ExportTraceServiceRequest.FromString(
            encode_spans(varied).SerializeToString()
        )
        assert ours == encode_spans(varied).SerializeToString()


def test_encoder_bounds_its_name_cache(spans: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_spans, "MAX_CACHED_PAIRS", 2)
    encoder = SpanEncoder()
    assert len({s.name for s in spans if s.name}) > 2
    assert encoder.encode(spans) == encode_spans(spans).SerializeToString()
    assert 0 < len(encoder._names) <= 2


def test_encoder_handles_spans_that_are_not_sdk_readable_spans(spans: list[ReadableSpan]) -> None:
    class Wrapped:
        def __init__(self, span: ReadableSpan) -> None:
            self._span = span

        def __getattr__(self, name: str) -> Any:
            return getattr(self._span, name)

    wrapped = [Wrapped(s) for s in spans]
    assert SpanEncoder().encode(wrapped) == encode_spans(spans).SerializeToString()


def test_spans_encoded_as_they_end_write_the_sdk_bytes(spans: list[ReadableSpan]) -> None:
    import gc

    encoder = SpanEncoder()
    pre = [encoder.pre_encode(s) for s in spans]
    assert all(type(p) is bytes for p in pre)
    assert not any(gc.is_tracked(p) for p in pre)  # what keeps queued spans out of the collections
    stock = encode_spans(spans).SerializeToString()
    assert encoder.encode(pre) == stock
    mixed = [p if i % 2 else s for i, (p, s) in enumerate(zip(pre, spans, strict=True))]
    assert encoder.encode(mixed) == stock
    assert SpanEncoder().encode(spans) == stock  # a fresh encoder's cache state changes nothing


def test_spans_of_groups_past_the_limit_stay_sdk_spans(
    spans: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp_spans, "MAX_GROUPS", 2)
    encoder = SpanEncoder()
    pre = [encoder.pre_encode(s) for s in spans]

    def group(span: ReadableSpan) -> tuple[int, int]:
        return id(span.resource), id(span.instrumentation_scope)

    assert len({group(s) for s in spans}) > 2
    assert sum(p is None for p in pre) > 0
    assert len({group(s) for s, p in zip(spans, pre, strict=True) if p}) == 2
    items = [p if p is not None else s for p, s in zip(pre, spans, strict=True)]
    assert encoder.encode(items) == encode_spans(spans).SerializeToString()


def test_the_batch_processor_queues_encoded_spans_and_exports_the_sdk_bytes() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_perf._metrics.instruments import Registry
    from otel_perf._setup.providers import CountingSpanExporter, DropCountingProcessor, Health

    class Keep(SpanExporter):
        def __init__(self) -> None:
            self.batches: list[list[Any]] = []

        def export(self, spans: Any) -> SpanExportResult:
            self.batches.append(list(spans))
            return SpanExportResult.SUCCESS

    reference, kept = _Collect(), Keep()
    health = Health(Registry(), 60.0)
    encoder = SpanEncoder()
    processor = DropCountingProcessor(
        BatchSpanProcessor(CountingSpanExporter(kept, health), schedule_delay_millis=60_000),
        health,
        100,
        encoder,
    )
    # Half the roots are recorded but not sampled: the batch processor must still drop those.
    provider = TracerProvider(
        resource=Resource.create({"service.name": "svc"}),
        sampler=sampling.ParentBased(_RecordEveryOther()),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(reference))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t", "1")
    for i in range(6):
        with tracer.start_as_current_span(f"GET /r{i}", kind=SpanKind.SERVER, attributes={"i": i}):
            tracer.start_span("SELECT t", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"}).end()
    assert processor.force_flush()
    exported = [span for batch in kept.batches for span in batch]
    sampled = reference.spans  # the simple processor, like the batch one, keeps sampled spans only
    assert len(sampled) == 6
    assert all(type(span) is bytes for span in exported)
    assert encoder.encode(exported) == encode_spans(sampled).SerializeToString()
    assert health.exported.values()[("traces",)] == 6
    provider.shutdown()


class _RecordEveryOther(sampling.Sampler):
    """Records every root span, samples every other one (RECORD_ONLY for the rest)."""

    def __init__(self) -> None:
        self.n = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> sampling.SamplingResult:
        self.n += 1
        decision = sampling.Decision.RECORD_AND_SAMPLE if self.n % 2 else sampling.Decision.RECORD_ONLY
        return sampling.SamplingResult(decision)

    def get_description(self) -> str:
        return "record every other"


# --- span attributes shared between a statement's spans -------------------------------------


def test_shared_span_attributes_are_read_only_and_copy_as_plain_dicts() -> None:
    import copy
    import pickle

    from otel_perf._core.spans import FrozenAttributes

    frozen = FrozenAttributes({"db.system.name": "sqlite", "n": 3})
    for change in (
        lambda: frozen.__setitem__("x", 1),
        lambda: frozen.update(x=1),
        lambda: frozen.pop("n"),
        frozen.clear,
        lambda: frozen.setdefault("x", 1),
    ):
        with pytest.raises(TypeError, match="copy them to change them"):
            change()
    assert frozen == {"db.system.name": "sqlite", "n": 3}
    for twin in (copy.copy(frozen), copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen)), dict(frozen)):
        assert type(twin) is dict and twin == frozen
        twin["x"] = 1  # the copy is the caller's own


def test_shared_span_attributes_are_encoded_once_to_the_same_bytes() -> None:
    from otel_perf._core.spans import FrozenAttributes

    attrs = {"db.system.name": "sqlite", "db.operation.name": "SELECT", "n": 3, "ok": True, "d": 0.5}
    frozen = FrozenAttributes(attrs)
    encoder = SpanEncoder()
    first = encoder.attributes(b"\x4a", frozen)
    assert first == encoder.attributes(b"\x4a", dict(attrs))
    assert encoder.attributes(b"\x4a", frozen) is first  # kept on the attributes, not re-encoded
    assert SpanEncoder().attributes(b"\x4a", frozen) == first  # another encoder encodes for itself
    # any other field (events, links) is encoded every time
    assert encoder.attributes(b"\x1a", frozen) == encoder.attributes(b"\x1a", dict(attrs))


def test_finished_spans_with_shared_attributes_are_the_sdk_bytes() -> None:
    """The same read-only attributes handed to several finished spans: each is encoded as the SDK would."""
    from otel_perf._core.spans import FrozenAttributes

    parent = PARENTS["local_sampled"]
    assert parent is not None
    frozen = FrozenAttributes({"db.system.name": "sqlite", "db.operation.name": "SELECT", "n": 3})
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    processor, kept, encoder = _encoding_pipeline(provider)
    starter = SpanStarter(provider.get_tracer("lib", "1.0"))
    random.seed(5)
    for start in (1_000, 2_000, 3_000):
        assert starter.finished("SELECT t", parent, SpanKind.CLIENT, frozen, start, start + 500)
    assert processor.force_flush()

    stock_provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    collect = _Collect()
    stock_provider.add_span_processor(SimpleSpanProcessor(collect))
    random.seed(5)
    context = set_span_in_context(NonRecordingSpan(parent))
    for start in (1_000, 2_000, 3_000):
        span = stock_provider.get_tracer("lib", "1.0").start_span(
            "SELECT t", context, SpanKind.CLIENT, dict(frozen), start_time=start
        )
        span.end(end_time=start + 500)
    assert len(kept) == 3
    assert encoder.encode(kept) == encode_spans(collect.spans).SerializeToString()
    assert frozen == {"db.system.name": "sqlite", "db.operation.name": "SELECT", "n": 3}
    provider.shutdown()


@pytest.mark.sqlalchemy
def test_statement_spans_share_attributes_without_carrying_one_executions_flags() -> None:
    """A statement's usual span attributes are built once; a slow or failed run gets its own."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from opentelemetry.sdk.resources import Resource as SdkResource

    from otel_perf._config import load
    from otel_perf._core.runtime import Runtime, build_instruments
    from otel_perf._integrations import sqlalchemy as ours_sa
    from otel_perf._metrics.instruments import Registry

    collect = _Collect()
    provider = TracerProvider(id_generator=PrimableIdGenerator(), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(collect))
    tracer = provider.get_tracer("otel_perf")
    registry = Registry()
    rt = Runtime(load({}), tracer, registry, build_instruments(registry), SdkResource.create({}))
    listener = ours_sa.SQLAlchemyListener(rt)
    ours_sa.attach_listener(listener)
    try:
        engine = sqlalchemy.create_engine("sqlite://")
        select = sqlalchemy.text("SELECT 1 AS one")
        with engine.connect() as conn, tracer.start_as_current_span("request"):
            conn.execute(select)  # usual
            rt.slow_query_s = 0.0
            conn.execute(select)  # slow
            rt.slow_query_s = 10.0
            conn.execute(select)  # usual again
            with pytest.raises(sqlalchemy.exc.OperationalError):
                conn.execute(sqlalchemy.text("SELECT 1 AS one FROM no_such_table"))
            conn.execute(select)  # usual again
        engine.dispose()  # Python 3.13 warns about an SQLite connection left to the collector
    finally:
        ours_sa.detach_listener(listener)
        provider.shutdown()
    statements = [s for s in collect.spans if s.kind == SpanKind.CLIENT]
    assert len(statements) == 5
    usual = [dict(statements[i].attributes or {}) for i in (0, 2, 4)]
    assert usual[0] == usual[1] == usual[2]
    assert "perf.slow" not in usual[0] and "error.type" not in usual[0]
    assert usual[0]["db.query.text"] == "SELECT ? AS one"
    assert dict(statements[1].attributes or {}) == {**usual[0], "perf.slow": True}
    failed = dict(statements[3].attributes or {})
    assert failed["error.type"] == "OperationalError"
    assert statements[3].status.status_code == StatusCode.ERROR
    assert all(s.status.status_code == StatusCode.UNSET for s in statements[:3])


@pytest.mark.sqlalchemy
def test_hooked_engines_connect_past_the_wrapper_until_the_listener_detaches() -> None:
    """After an engine's first connect, Engine.connect is SQLAlchemy's own for it; statements
    are still recorded, a new listener still instruments it, and detaching restores it."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.engine import Engine

    from otel_perf._config import load
    from otel_perf._core.runtime import Runtime, build_instruments
    from otel_perf._integrations import sqlalchemy as ours_sa
    from otel_perf._metrics.instruments import Registry

    def statements_recorded(rt: Runtime) -> int:
        return sum(s.count for s in rt.inst.db_duration.series() if s.key[1] == "SELECT")

    def runtime() -> Runtime:
        registry = Registry()
        tracer = TracerProvider(shutdown_on_exit=False).get_tracer("otel_perf")
        return Runtime(load({}), tracer, registry, build_instruments(registry), Resource.create({}))

    original = Engine.connect
    engine = sqlalchemy.create_engine("sqlite://")
    first, second = runtime(), runtime()
    listener = ours_sa.SQLAlchemyListener(first)
    ours_sa.attach_listener(listener)
    try:
        wrapper = Engine.connect
        assert wrapper is not original
        for _ in range(3):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        assert engine.__dict__["connect"].__func__ is original  # the class's wrapper is skipped
        assert statements_recorded(first) == 3
    finally:
        ours_sa.detach_listener(listener)
    assert "connect" not in engine.__dict__
    assert Engine.connect is original

    listener = ours_sa.SQLAlchemyListener(second)
    ours_sa.attach_listener(listener)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert statements_recorded(second) == 1
        assert statements_recorded(first) == 3
        # A listener replaced without being detached gives its engines back as well.
        third = ours_sa.SQLAlchemyListener(runtime())
        ours_sa.attach_listener(third)
        assert "connect" not in engine.__dict__
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert statements_recorded(third.rt) == 1
        ours_sa.detach_listener(third)
    finally:
        ours_sa.detach_listener(listener)
        engine.dispose()
    assert "connect" not in engine.__dict__


def test_fastapi_telemetry_lookups_return_at_once_while_native_telemetry_is_off() -> None:
    """Switching FastAPI's native telemetry off also skips its per-request lookups (routing
    asks the OpenTelemetry context four times per request); undone on uninstrument."""
    fastapi = pytest.importorskip("fastapi")
    api = pytest.importorskip("fastapi.telemetry._api")
    import asyncio

    from fastapi import routing
    from opentelemetry import context as otel_context

    from otel_perf._integrations import starlette as ours_starlette

    original = api._operation
    assert routing._operation is original
    assert routing.get_telemetry_data is api.get_telemetry_data

    def dependency() -> int:
        return 41

    app = fastapi.FastAPI()

    @app.get("/answer")
    def answer(value: int = fastapi.Depends(dependency)) -> dict[str, int]:
        return {"answer": value + 1}

    ours_starlette._disable_fastapi_native_telemetry(app)
    try:
        assert routing._operation is not original
        # Even a context that holds FastAPI's request telemetry is no longer consulted.
        tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
        held = api._RequestTelemetry(span=None, span_method="GET", tracer=tracer)
        token = otel_context.attach(otel_context.set_value(api._REQUEST_TELEMETRY_KEY, held))
        try:
            assert original(name="endpoint") is not api._NO_OPERATION
            assert routing._operation(name="endpoint", function=answer) is api._NO_OPERATION
            assert api.get_telemetry_data() is held.data is not None
            assert routing.get_telemetry_data() is None
        finally:
            otel_context.detach(token)
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/answer", "raw_path": b"/answer", "query_string": b"",
                 "root_path": "", "headers": [], "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 2)}  # fmt: skip
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 200 and sent[1]["body"] == b'{"answer":42}'
    finally:
        ours_starlette.uninstall()
    assert routing._operation is original
    assert routing.get_telemetry_data is api.get_telemetry_data


def test_route_templates_of_plain_starlette_apps_without_scope_route() -> None:
    """Starlette before 1.8 sets no scope["route"]: the template is found by matching the routes."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from otel_perf._integrations.starlette import route_template

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    inner = [Route("/users/{user_id:int}", hello)]
    app = Starlette(routes=[Route("/items/{item_id}", hello), Mount("/admin", routes=inner)])

    def scope(path: str) -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": path, "root_path": "", "router": app.router}

    assert route_template(scope("/items/7")) == "/items/{item_id}"
    assert route_template(scope("/admin/users/3")) == "/admin/users/{user_id}"
    assert route_template(scope("/nowhere")) == ""
