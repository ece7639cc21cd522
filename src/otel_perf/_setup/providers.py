"""The SDK pipeline: resource, sampler, span/metric/log exporters, self-telemetry, shutdown.

Exporters are the standard ones chosen by ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` and
configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables (the SDK reads those); names
beyond ``otlp``/``console``/``none``/``prometheus``, samplers beyond the SDK's six, id
generators and propagators are the SDK's entry points (:mod:`otel_perf._setup.extensions`).
Our own instruments follow each metric exporter's temporality and histogram preferences,
the exemplar filter and the metric Views (:mod:`otel_perf._metrics.bridge`).  Each
is wrapped so what it exported, failed and dropped is counted (self-telemetry metrics
``perf.telemetry.*``), queues are bounded by ``OTEL_PERF_QUEUE_SIZE``, repeated exporter
warnings are rate-limited, and process exit waits at most ``OTEL_PERF_SHUTDOWN_TIMEOUT``
seconds even when the backend never answers.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otel_perf import _names as n
from otel_perf._analysis.redact import LogScrubber, redacted_url_attributes
from otel_perf._config import (
    RATIO_SAMPLERS,
    READ_BY_SDK_TOO,
    STATIC_SAMPLERS,
    Config,
    ConfigError,
    metric_views_path,
    sdk_problems,
)
from otel_perf._core import guard
from otel_perf._core.probes import forced_off
from otel_perf._core.spans import PrimableIdGenerator
from otel_perf._export.otlp_spans import SpanEncoder
from otel_perf._metrics.bridge import MergingExporter
from otel_perf._metrics.instruments import Counter, Registry
from otel_perf._metrics.views import ViewRule
from otel_perf._setup import extensions

logger = logging.getLogger("otel_perf")
SIGNALS = ("traces", "metrics", "logs")
_SAMPLED = int(TraceFlags.SAMPLED)


class Health:
    """Self-telemetry: exported / dropped / failed items and queue sizes per signal."""

    def __init__(self, registry: Registry, warn_interval: float) -> None:
        sig = (n.A_SIGNAL,)
        self.exported: Counter = registry.counter(
            n.TELEMETRY_EXPORTED, "{item}", "Telemetry items exported.", sig
        )
        self.dropped: Counter = registry.counter(
            n.TELEMETRY_DROPPED, "{item}", "Telemetry items dropped (queue full or export failed).", sig
        )
        self.failures: Counter = registry.counter(
            n.TELEMETRY_EXPORT_FAILURES, "{export}", "Export calls that failed.", sig
        )
        self.queues: dict[str, Callable[[], int]] = {}
        self.capacity: dict[str, int] = {}
        registry.gauge(n.TELEMETRY_QUEUE_SIZE, "{item}", "Items waiting for export.", sig, self._queue_points)
        registry.gauge(
            n.TELEMETRY_QUEUE_CAPACITY, "{item}", "Most items the export queue holds.", sig,
            lambda: [(float(v), (k,)) for k, v in self.capacity.items()],
        )
        self.warn_interval = warn_interval
        self._last_warning: dict[str, float] = {}
        self.last_error: dict[str, str] = {}

    def _queue_points(self) -> list[tuple[float, tuple[object, ...]]]:
        out: list[tuple[float, tuple[object, ...]]] = []
        for name, size in self.queues.items():
            try:
                out.append((float(size()), (name,)))
            except Exception:  # a processor without the queue we expect
                continue
        return out

    def failed(self, signal: str, items: int, reason: str) -> None:
        self.failures.add(1, (signal,))
        self.dropped.add(items, (signal,))
        self.last_error[signal] = reason[:300]
        now = time.monotonic()
        if now - self._last_warning.get(signal, -1e9) >= self.warn_interval:
            self._last_warning[signal] = now
            logger.warning(
                "otel-perf: exporting %s failed (%s); %d item(s) dropped. Check OTEL_EXPORTER_OTLP_ENDPOINT "
                "and the collector. Further failures are counted in perf.telemetry.export.failures and "
                "reported at most every %.0f s.", signal, reason[:300], items, self.warn_interval,
            )

    def snapshot(self) -> dict[str, dict[str, float]]:
        exported, dropped, failures = self.exported.values(), self.dropped.values(), self.failures.values()
        queues = {key: value for value, key in self._queue_points()}
        out: dict[str, dict[str, float]] = {}
        for name in SIGNALS:
            key = (name,)
            out[name] = {
                "exported": exported.get(key, 0),
                "dropped": dropped.get(key, 0),
                "export_failures": failures.get(key, 0),
                "queue_size": queues.get(key, 0),
                "queue_capacity": self.capacity.get(name, 0),
            }
        return out


class CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, health: Health) -> None:
        self.inner = inner
        self.health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            self.health.failed("traces", len(spans), f"{type(exc).__name__}: {exc}")
            return SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.health.exported.add(len(spans), ("traces",))
        else:
            self.health.failed("traces", len(spans), "the exporter reported failure")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


#: our tracer's instrumentation scope (``trace.get_tracer("otel_perf")`` in the bootstrap)
OUR_SCOPE = "otel_perf"


class UrlRedactor:
    """Redacts the URL attributes (and statement literals) of spans not made by us, as they end.

    Ours never carry credentials or a sensitive query parameter (the cores redact them as
    they set them).  An official instrumentation loaded beside ours, or the app's own
    spans, may: ``url.full``, ``url.query``, ``http.url`` and ``http.target`` (the last two
    are back with ``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup``) lose credentials and the
    values of ``OTEL_PERF_REDACT_QUERY_PARAMS``, and ``db.query.text``/``db.statement`` their
    literals (:func:`~otel_perf._analysis.redact.redacted_url_attributes`), whatever exporter
    follows.  Armed by the
    first tracer of another scope (:class:`ScopeWatchingTracerProvider`): until then a span
    pays one attribute check.
    """

    def __init__(self, names: frozenset[str], limit: int) -> None:
        self.names = names
        self.limit = limit
        self.processors: list[DropCountingProcessor] = []

    def arm(self) -> None:
        for processor in self.processors:
            processor.redact = self.span

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """``span``, or a copy with its URL attributes redacted (public SDK constructor)."""
        scope = span.instrumentation_scope
        if scope is not None and scope.name == OUR_SCOPE:
            return span
        attributes = span.attributes
        if not attributes:
            return span
        try:
            changed = redacted_url_attributes(attributes, self.names, self.limit)
            if not changed:
                return span
            bounded = BoundedAttributes(None, {**attributes, **changed}, immutable=True)
            bounded.dropped = span.dropped_attributes
            return ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=bounded,
                events=span.events,
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=scope,
            )
        except Exception as exc:
            guard.internal_error("traces.redact", exc)
            return span


class ScopeWatchingTracerProvider(TracerProvider):
    """The SDK's tracer provider; the first tracer of a scope other than ours arms the
    :class:`UrlRedactor` (an official instrumentation, or the app's own spans)."""

    redactor: UrlRedactor | None = None

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        redactor = self.redactor
        if redactor is not None and instrumenting_module_name != OUR_SCOPE:
            self.redactor = None
            redactor.arm()
        return super().get_tracer(instrumenting_module_name, *args, **kwargs)


class DropCountingProcessor(SpanProcessor):
    """Wraps the batch processor; counts spans the full queue pushes out.

    With ``encoder`` (the exporter's own :class:`SpanEncoder`), a sampled span is encoded
    as it ends and queued as bytes: the same CPU as encoding it in the export thread,
    but the span's objects die young instead of waiting in the queue for their batch,
    where the app's garbage collections would promote and walk them.
    """

    #: on_start only forwards to ``inner`` (fastspan may skip it when inner's is a no-op)
    forwards_on_start = True

    def __init__(
        self, inner: BatchSpanProcessor, health: Health, capacity: int, encoder: SpanEncoder | None = None
    ) -> None:
        self.inner = inner
        self.health = health
        self.capacity = capacity
        #: the batch queue's own emit, which pre-encoded spans (bytes) go to directly
        batch = None if forced_off("sdk-batch-queue") else getattr(inner, "_batch_processor", None)
        self._emit: Callable[[Any], None] | None = getattr(batch, "emit", None)
        self.encoder = encoder if self._emit is not None else None
        queue = getattr(getattr(inner, "_batch_processor", None), "_queue", None)
        self._queue: Any = queue
        health.capacity["traces"] = capacity
        if queue is not None:
            health.queues["traces"] = lambda: len(self._queue)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.inner.on_start(span, parent_context)

    #: set by :meth:`UrlRedactor.arm` once spans not made by us may exist
    redact: Callable[[ReadableSpan], ReadableSpan] | None = None

    def on_end(self, span: ReadableSpan) -> None:
        redact = self.redact
        if redact is not None:
            span = redact(span)
        queue = self._queue
        if queue is not None and len(queue) >= self.capacity:
            self.health.dropped.add(1, ("traces",))
        encoder, emit = self.encoder, self._emit
        if encoder is not None and emit is not None and type(span) is ReadableSpan:
            ctx = span._context
            if ctx is not None and ctx.trace_flags & _SAMPLED:
                try:
                    encoded = encoder.pre_encode(span)
                except Exception as exc:
                    guard.internal_error("traces.encode", exc)
                    encoded = None
                if encoded is not None:
                    emit(encoded)  # what inner.on_end does with a sampled span
                    return
        self.inner.on_end(span)

    def on_end_fields(
        self,
        resource: Any,
        scope: Any,
        ctx: SpanContext,
        parent: SpanContext | None,
        name: str,
        kind: SpanKind,
        start: int,
        end: int,
        attributes: Mapping[str, Any],
        status: Any,
    ) -> bool:
        """``on_end`` for a sampled span known only by its fields (see ``LeanSpans.finished``).

        False when this processor cannot take it so: the caller builds the SDK span instead.
        """
        encoder, emit = self.encoder, self._emit
        if encoder is None or emit is None:
            return False
        try:
            encoded = encoder.pre_encode_finished(
                resource, scope, ctx, parent, name, kind, start, end, attributes, status
            )
        except Exception as exc:
            guard.internal_error("traces.encode", exc)
            return False
        if encoded is None:
            return False
        queue = self._queue
        if queue is not None and len(queue) >= self.capacity:
            self.health.dropped.add(1, ("traces",))
        emit(encoded)
        return True

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _data_points(metrics_data: MetricsData) -> int:
    return sum(
        len(getattr(metric.data, "data_points", ()))
        for rm in metrics_data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


class _CountingMetricExporter(MetricExporter):
    """Counts the data points of every export (ours merged in) as exported or dropped.

    A failed export of cumulative series loses no totals (the next export carries them);
    ``dropped`` still counts its points, so a backend outage is visible in numbers.
    """

    def __init__(self, inner: MetricExporter, health: Health) -> None:
        super().__init__(
            preferred_temporality=dict(inner._preferred_temporality or {}),
            preferred_aggregation=dict(inner._preferred_aggregation or {}),
        )
        self.inner = inner
        self.health = health

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        points = _data_points(metrics_data)
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:
            self.health.failed("metrics", points, f"{type(exc).__name__}: {exc}")
            return MetricExportResult.FAILURE
        if result == MetricExportResult.SUCCESS:
            self.health.exported.add(points, ("metrics",))
        else:
            self.health.failed("metrics", points, "the exporter reported failure")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class CountingMergingExporter(MergingExporter):
    """Our instruments merged into every metric export, and every export counted."""

    def __init__(
        self,
        inner: MetricExporter,
        registry: Registry,
        resource: Resource,
        health: Health,
        *,
        exemplar_filter: str = "trace_based",
        views: Sequence[ViewRule] = (),
    ) -> None:
        counting = _CountingMetricExporter(inner, health)
        super().__init__(counting, registry, resource, exemplar_filter=exemplar_filter, views=views)
        self.health = health

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            return super().export(metrics_data, timeout_millis, **kwargs)
        except Exception as exc:  # merging our points failed: nothing was sent
            self.health.failures.add(1, ("metrics",))
            guard.internal_error("metrics.merge", exc)
            return MetricExportResult.FAILURE


class _RateLimitFilter(logging.Filter):
    """Let one record per (logger, message template) through per interval."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, str], float] = {}
        # Export threads fail together (every signal's batch at once): without the lock two
        # records of one logger could both pass between the look-up and the store.
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        with self._lock:
            now = time.monotonic()
            if now - self._last.get(key, -1e9) < self.interval:
                return False
            if len(self._last) > 500:
                self._last.clear()
            self._last[key] = now
            return True


_SDK_LOG_FILTER: list[_RateLimitFilter] = []


def rate_limit_sdk_logs(interval: float) -> None:
    """Exporters log every failed batch; keep one line per interval per message.

    Called again once the instrumentations are loaded, for the loggers they made: every
    logger shares the first call's filter.
    """
    if not _SDK_LOG_FILTER:
        _SDK_LOG_FILTER.append(_RateLimitFilter(interval))
    filt = _SDK_LOG_FILTER[0]
    names = [name for name in logging.Logger.manager.loggerDict if name.startswith("opentelemetry.")]
    for name in [*names, "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                 "opentelemetry.exporter.otlp.proto.http._log_exporter",
                 "opentelemetry.exporter.otlp.proto.grpc.exporter",
                 "opentelemetry.sdk._shared_internal", "opentelemetry.sdk.metrics._internal.export"]:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _RateLimitFilter) for f in lg.filters):
            lg.addFilter(filt)


def _settle_sdk_environment(config: Config) -> None:
    """Make the SDK see what we report: malformed variables it reads itself are replaced.

    Ours were reported by the bootstrap already; the SDK-only ones are reported here.  Under
    ``OTEL_PERF_STRICT=true`` a malformed SDK variable stops the start instead.
    """
    problems = sdk_problems()
    if problems and config.strict:
        raise ConfigError("; ".join(p.message() for p in problems))
    for problem in problems:
        logger.warning("otel-perf: %s", problem.message())
        os.environ.pop(problem.env, None)
    bad = {problem.env for problem in config.problems}
    for name in READ_BY_SDK_TOO:
        if name not in bad and config.sources.get(name) == "default":
            continue  # unset: the SDK's default is ours
        used = config.values[name]
        value = ",".join(used) if isinstance(used, tuple) else "" if used is None else str(used)
        if value:
            os.environ[name] = value  # normalized (the SDK compares some of these case-sensitively)
        else:
            os.environ.pop(name, None)


def build_resource(config: Config) -> Resource:
    from opentelemetry.sdk.resources import OTELResourceDetector

    from otel_perf import __version__

    attrs: dict[str, Any] = {
        "service.instance.id": str(uuid.uuid4()),
        "telemetry.distro.name": "otel-perf-instrument",
        "telemetry.distro.version": __version__,
        "process.pid": os.getpid(),
        "service.name": os.path.basename(sys.argv[0] or "python") or "python",
    }
    # What the user set wins: Resource.create puts the attributes it is given over those of
    # OTEL_RESOURCE_ATTRIBUTES (then OTEL_SERVICE_NAME over all), so ours are only defaults
    # for what OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES leave unsaid (service.name,
    # service.instance.id...). A malformed OTEL_RESOURCE_ATTRIBUTES is reported by the SDK.
    try:
        user = OTELResourceDetector().detect().attributes
    except Exception:  # the SDK reports it again below
        user = {}
    for key in user:
        attrs.pop(key, None)
    return Resource.create(attrs)


_BUILTIN_SAMPLERS = (*STATIC_SAMPLERS, *RATIO_SAMPLERS)


def build_sampler(config: Config) -> sdk_sampling.Sampler:
    name = config.text("OTEL_TRACES_SAMPLER")
    ratio = config.number("OTEL_TRACES_SAMPLER_ARG") if name in RATIO_SAMPLERS else 1.0
    if name not in _BUILTIN_SAMPLERS:
        sampler = _entry_point_sampler(config, name)
        if sampler is not None:
            return sampler
        name = "parentbased_always_on"
    if name == "always_on":
        return sdk_sampling.ALWAYS_ON
    if name == "always_off":
        return sdk_sampling.ALWAYS_OFF
    if name == "traceidratio":
        return sdk_sampling.TraceIdRatioBased(ratio)
    if name == "parentbased_always_off":
        return sdk_sampling.ParentBased(sdk_sampling.ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return sdk_sampling.ParentBased(sdk_sampling.TraceIdRatioBased(ratio))
    return sdk_sampling.ParentBased(sdk_sampling.ALWAYS_ON)


def _refuse_or_warn(config: Config, message: str) -> None:
    """A component named in a variable cannot be used: strict mode refuses, otherwise one warning."""
    if config.strict:
        raise ConfigError(message)
    logger.warning("otel-perf: %s", message)


def _entry_point_sampler(config: Config, name: str) -> sdk_sampling.Sampler | None:
    """The sampler an installed ``opentelemetry_traces_sampler`` entry point makes, as the SDK calls it."""
    try:
        factory = extensions.load(extensions.SAMPLER_GROUP, name)
        sampler = factory(os.environ.get("OTEL_TRACES_SAMPLER_ARG"))
        if not isinstance(sampler, sdk_sampling.Sampler):
            raise TypeError(f"it made {type(sampler).__name__}, not a Sampler")
    except Exception as exc:
        _refuse_or_warn(config, f"OTEL_TRACES_SAMPLER={name!r} cannot be used ({type(exc).__name__}: {exc}); "
                                "using 'parentbased_always_on' instead.")
        return None
    return sampler


def build_id_generator(config: Config) -> Any:
    """Ours (the SDK's random generator that the fast span path can prime) unless another is named."""
    name = config.text("OTEL_PYTHON_ID_GENERATOR")
    if name == "random":
        return PrimableIdGenerator()
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    try:
        cls = extensions.load(extensions.ID_GENERATOR_GROUP, name)
        if not (isinstance(cls, type) and issubclass(cls, IdGenerator)):
            raise TypeError(f"{cls!r} is not an IdGenerator")
        return cls()
    except Exception as exc:
        _refuse_or_warn(config, f"OTEL_PYTHON_ID_GENERATOR={name!r} cannot be used ({type(exc).__name__}: "
                                f"{exc}); using 'random' instead.")
        return PrimableIdGenerator()


def _plugin(config: Config, signal: str, name: str, base: type | tuple[type, ...]) -> Any:
    """An exporter from the ``opentelemetry_{signal}_exporter`` entry point ``name``, or None."""
    env = f"OTEL_{signal.upper()}_EXPORTER"
    try:
        cls = extensions.load(extensions.EXPORTER_GROUPS[signal], name)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            kinds = base if isinstance(base, tuple) else (base,)
            raise TypeError(f"{cls!r} is not a {' or '.join(k.__name__ for k in kinds)}")
        return cls()
    except Exception as exc:
        _refuse_or_warn(config, f"{env} names {name!r}, which cannot be used ({type(exc).__name__}: {exc}); "
                                f"{signal} go to the other exporters named there, if any.")
        return None


def _otlp_protocol(config: Config, signal: str) -> str:
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "").strip().lower()
    return specific if specific in ("grpc", "http/protobuf") else config.text("OTEL_EXPORTER_OTLP_PROTOCOL")


def _span_exporter(name: str, config: Config) -> SpanExporter | None:
    if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
        if name == "otlp_proto_grpc" or (name == "otlp" and _otlp_protocol(config, "traces") == "grpc"):
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpan

            return GrpcSpan()
        from otel_perf._export.otlp_http import span_exporter

        exporter: SpanExporter = span_exporter()  # the SDK's client, our encoder, no protobuf
        return exporter
    if name == "console":
        return ConsoleSpanExporter()
    if name == "none":
        return None
    plugin: SpanExporter | None = _plugin(config, "traces", name, SpanExporter)
    return plugin


def _metric_exporter(name: str, config: Config) -> MetricExporter | MetricReader | None:
    if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
        if name == "otlp_proto_grpc" or (name == "otlp" and _otlp_protocol(config, "metrics") == "grpc"):
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetric,
            )

            return GrpcMetric()
        from otel_perf._export.otlp_http import metric_exporter

        exporter_m: MetricExporter = metric_exporter()
        return exporter_m
    if name == "console":
        return ConsoleMetricExporter()
    if name == "none":
        return None
    plugin: MetricExporter | MetricReader | None = _plugin(
        config, "metrics", name, (MetricExporter, MetricReader)
    )
    return plugin


def _log_exporter(name: str, config: Config) -> Any:
    if name in ("otlp", "otlp_proto_http", "otlp_proto_grpc"):
        if name == "otlp_proto_grpc" or (name == "otlp" and _otlp_protocol(config, "logs") == "grpc"):
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLog

            return GrpcLog()
        from otel_perf._export.otlp_http import log_exporter

        return log_exporter()
    if name == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        return ConsoleLogRecordExporter()
    if name == "none":
        return None
    from opentelemetry.sdk._logs.export import LogRecordExporter

    return _plugin(config, "logs", name, LogRecordExporter)


class _CountingLogExporter:
    """Counts exported and failed log records (duck-typed: the SDK's exporter ABC moved between releases)."""

    def __init__(self, inner: Any, health: Health) -> None:
        self.inner = inner
        self.health = health

    def export(self, batch: Sequence[Any]) -> Any:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        try:
            result = self.inner.export(batch)
        except Exception as exc:
            self.health.failed("logs", len(batch), f"{type(exc).__name__}: {exc}")
            return LogRecordExportResult.FAILURE
        if result == LogRecordExportResult.SUCCESS:
            self.health.exported.add(len(batch), ("logs",))
        else:
            self.health.failed("logs", len(batch), "the exporter reported failure")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


@dataclass
class Pipeline:
    """The providers we built, for shutdown and tests."""

    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: Any = None
    log_handler: logging.Handler | None = None
    readers: list[MetricReader] = field(default_factory=list)
    #: every exporter built (their HTTP connections are dropped in forked children)
    exporters: list[Any] = field(default_factory=list)
    shutdown_hooks: list[Callable[[], None]] = field(default_factory=list)
    #: the exit report (OTEL_PERF_REPORT), printed once by :meth:`report_once`
    report: Callable[[], None] | None = None
    #: set in supervisor processes (gunicorn's arbiter, uvicorn's process manager and
    #: reloader): they serve no request, so they print no report
    supervisor: bool = False
    _done: bool = False
    #: a flush ran out of its time (the backend does not answer): the exit's shutdown does not
    #: wait the whole timeout again behind it
    _stuck: bool = False
    _reported: bool = False

    def report_once(self) -> None:
        """Print the exit report, once per process, and not in a supervisor."""
        if self._reported or self.supervisor or self.report is None:
            return
        self._reported = True
        try:
            self.report()
        except Exception:
            logger.debug("exit report failed", exc_info=True)

    def flush(self, timeout: float) -> None:
        """Export everything recorded so far within ``timeout`` seconds; keep running.

        For a server that stopped and whose process may die without ``atexit`` (uvicorn
        re-raises the SIGTERM it caught once its graceful shutdown is over).
        """
        if self._done:
            return

        def run() -> None:
            for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
                if provider is None:
                    continue
                try:
                    provider.force_flush(int(timeout * 1000))
                except Exception:
                    logger.debug("provider flush failed", exc_info=True)

        if not self._bounded(run, timeout, "otel-perf-flush"):
            self._stuck = True

    def shutdown(self, timeout: float) -> None:
        """Flush and stop everything within ``timeout`` seconds, whatever the backend does.

        After a flush that ran out of time (a server's, as it stopped) the backend is known not
        to answer: the exit waits at most a second more, and says nothing again.
        """
        if self._done:
            return
        self._done = True
        warn = True
        if self._stuck:
            timeout, warn = min(timeout, 1.0), False

        def run() -> None:
            for hook in self.shutdown_hooks:
                try:
                    hook()
                except Exception:
                    logger.debug("shutdown hook failed", exc_info=True)
            for stop in (self.tracer_provider.shutdown, self.meter_provider.shutdown,
                         getattr(self.logger_provider, "shutdown", None)):
                if stop is None:
                    continue
                try:
                    stop()
                except Exception:
                    logger.debug("provider shutdown failed", exc_info=True)

        self._bounded(run, timeout, "otel-perf-shutdown", warn)

    @staticmethod
    def _bounded(run: Callable[[], None], timeout: float, name: str, warn: bool = True) -> bool:
        """Run ``run`` for at most ``timeout`` seconds; whether it finished."""
        worker = threading.Thread(target=run, name=name, daemon=True)
        worker.start()
        worker.join(timeout)
        if not worker.is_alive():
            return True
        if warn:
            logger.warning(
                "otel-perf: telemetry flush did not finish within OTEL_PERF_SHUTDOWN_TIMEOUT=%.1fs; "
                "exiting anyway (unsent telemetry is dropped).", timeout,
            )
        return False


def build(config: Config, registry: Registry, health: Health) -> Pipeline:
    """Create and register the global providers."""
    from otel_perf._setup import fork

    fork.register()  # before the SDK objects below register theirs: ours must run first in a child
    _settle_sdk_environment(config)
    resource = build_resource(config)
    queue_size, batch_size = batch_sizes(config, "OTEL_BSP")
    # The primable id generator is the SDK's random one; it lets the ASGI middleware take the
    # sampler's decision before building a span (see _core/spans.py).  Another
    # (OTEL_PYTHON_ID_GENERATOR) makes spans take the SDK's path.
    tracer_provider = ScopeWatchingTracerProvider(
        resource=resource,
        sampler=build_sampler(config),
        shutdown_on_exit=False,
        id_generator=build_id_generator(config),
    )
    exporters: list[Any] = []
    # Imported here, after _settle_sdk_environment: the server core imports
    # opentelemetry.propagate, which reads OTEL_PROPAGATORS once, at import.
    from otel_perf._core.server import MAX_PATH_ATTR

    redactor = UrlRedactor(
        frozenset(x.lower() for x in config.items("OTEL_PERF_REDACT_QUERY_PARAMS")), MAX_PATH_ATTR
    )
    for name in config.items("OTEL_TRACES_EXPORTER"):
        exporter = _span_exporter(name, config)
        if exporter is None:
            continue
        exporters.append(exporter)
        batch = BatchSpanProcessor(CountingSpanExporter(exporter, health), max_queue_size=queue_size,
                                   max_export_batch_size=batch_size)
        # Our OTLP/HTTP exporter takes spans encoded as they end (see DropCountingProcessor).
        encoder = getattr(exporter, "_encoder", None)
        processor = DropCountingProcessor(
            batch, health, queue_size, encoder if isinstance(encoder, SpanEncoder) else None
        )
        redactor.processors.append(processor)
        tracer_provider.add_span_processor(processor)
    tracer_provider.redactor = redactor
    readers: list[MetricReader] = []
    interval = config.number("OTEL_METRIC_EXPORT_INTERVAL")
    exemplar_filter = config.text("OTEL_METRICS_EXEMPLAR_FILTER")
    views = load_metric_views(config)
    for name in config.items("OTEL_METRICS_EXPORTER"):
        if name == "prometheus":
            from otel_perf._export.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader(
                registry, resource, config.text("OTEL_EXPORTER_PROMETHEUS_HOST"),
                int(config.number("OTEL_EXPORTER_PROMETHEUS_PORT")),
                exemplar_filter=exemplar_filter, views=views,
            ))
            continue
        m_exporter = _metric_exporter(name, config)
        if isinstance(m_exporter, MetricReader):  # a pull exporter from an entry point
            logger.warning(
                "otel-perf: OTEL_METRICS_EXPORTER %r is a metric reader; it serves the SDK's instruments "
                "but not otel-perf's own (http.*, db.*, perf.*), which the SDK cannot hand to it. Use "
                "OTEL_METRICS_EXPORTER=prometheus (ours) or otlp for those.", name,
            )
            readers.append(m_exporter)
        elif m_exporter is not None:
            exporters.append(m_exporter)
            readers.append(PeriodicExportingMetricReader(
                CountingMergingExporter(m_exporter, registry, resource, health,
                                        exemplar_filter=exemplar_filter, views=views),
                export_interval_millis=interval,
            ))
    _say_what_cannot_apply(config, views, registry)
    health.capacity["metrics"] = 1
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False, views=_sdk_views(config, views)
    )
    trace_api.set_tracer_provider(tracer_provider)
    metrics_api.set_meter_provider(meter_provider)
    pipeline = Pipeline(resource, tracer_provider, meter_provider, readers=readers, exporters=exporters)
    log_names = [x for x in config.items("OTEL_LOGS_EXPORTER") if x != "none"]
    if log_names:
        _build_logs(config, pipeline, health, log_names)
    return pipeline


def batch_sizes(config: Config, prefix: str) -> tuple[int, int]:
    """(queue, batch) of a batch processor: ``{prefix}_MAX_QUEUE_SIZE`` / ``_MAX_EXPORT_BATCH_SIZE``
    when set (the standard variables win), else ``OTEL_PERF_QUEUE_SIZE`` and at most 512."""
    queue = config.values[f"{prefix}_MAX_QUEUE_SIZE"] or int(config.number("OTEL_PERF_QUEUE_SIZE"))
    batch = config.values[f"{prefix}_MAX_EXPORT_BATCH_SIZE"] or min(512, queue)
    return int(queue), int(min(batch, queue))


def load_metric_views(config: Config) -> list[ViewRule]:
    """The metric views of ``OTEL_PERF_METRIC_VIEWS`` (or ``OTEL_CONFIG_FILE``); a bad file is
    reported (refused under strict mode) and no views are used."""
    path, env = metric_views_path(config, os.environ)
    if not path:
        return []
    from otel_perf._metrics.views import load_views

    if env == "OTEL_CONFIG_FILE":
        logger.warning(
            "otel-perf: OTEL_CONFIG_FILE=%r: otel-perf builds its pipeline from the OTEL_* variables and "
            "applies only the file's meter_provider.views (to the SDK's instruments and its own); the "
            "rest of the file is not used.", path,
        )
    try:
        return load_views(path)
    except Exception as exc:
        if config.strict:
            raise ConfigError(f"{env}={path!r} cannot be used: {exc}") from exc
        logger.warning("otel-perf: %s=%r not used (no metric views): %s", env, path, exc)
        return []


def _sdk_views(config: Config, views: Sequence[ViewRule]) -> list[Any]:
    """The SDK ``View`` of each rule; one this SDK cannot build is named and left out."""
    out = []
    for rule in views:
        try:
            out.append(rule.sdk_view())
        except Exception as exc:
            _refuse_or_warn(config, f"metric view {rule.where} cannot be given to the SDK "
                                    f"({type(exc).__name__}: {exc}); the SDK's instruments ignore it.")
    return out


def _say_what_cannot_apply(config: Config, views: Sequence[ViewRule], registry: Registry) -> None:
    """Once at startup: metric settings and views that cannot do what they say somewhere."""
    from otel_perf._metrics.views import notes

    lines = notes(views, registry)
    if "prometheus" in config.items("OTEL_METRICS_EXPORTER"):
        for env, default in (
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative"),
            ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "explicit_bucket_histogram"),
        ):
            if config.text(env) != default:
                lines.append(f"{env}={config.text(env)} applies to OTLP exports; the Prometheus endpoint "
                             f"serves {default.replace('_', ' ')}s, as Prometheus expects")
        if any(v.aggregation == "base2_exponential_bucket_histogram" for v in views):
            lines.append("a view asks for exponential histograms, which the Prometheus text formats cannot "
                         "carry; the Prometheus endpoint leaves those streams out")
    for line in lines:
        logger.warning("otel-perf: metric views/settings: %s.", line)


def _build_logs(config: Config, pipeline: Pipeline, health: Health, names: list[str]) -> None:
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    # With our logging row off, the official LoggingInstrumentor loads (and its package): no
    # saving in running the handler's module alone then.
    row_off = {"logging", "*"} & set(config.items("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))
    handler_class = official_log_handler(alone=not row_off)
    provider = LoggerProvider(resource=pipeline.resource, shutdown_on_exit=False)
    queue_size, batch_size = batch_sizes(config, "OTEL_BLRP")
    for name in names:
        exporter = _log_exporter(name, config)
        if exporter is None:
            continue
        pipeline.exporters.append(exporter)
        processor = BatchLogRecordProcessor(
            _CountingLogExporter(exporter, health),  # type: ignore[arg-type]
            max_queue_size=queue_size,
            max_export_batch_size=batch_size,
        )
        scrubber = LogScrubber(config.items("OTEL_PERF_REDACT_QUERY_PARAMS"))
        provider.add_log_record_processor(_drop_counting_logs(processor, health, queue_size, scrubber))
    set_logger_provider(provider)
    pipeline.logger_provider = provider
    level = logging.getLevelName(config.text("OTEL_PYTHON_LOG_HANDLER_LEVEL").upper())
    options: dict[str, Any] = {"level": level if isinstance(level, int) else logging.NOTSET}
    if log_code_attributes(config):
        options["log_code_attributes"] = True
    pipeline.log_handler = handler_class(logger_provider=provider, **options)


def log_code_attributes(config: Config) -> bool:
    """Whether exported log records carry ``code.file.path``, ``code.function.name`` and
    ``code.line.number``: as ``OTEL_PYTHON_LOG_CODE_ATTRIBUTES`` says, and while it is unset, as
    stock ``opentelemetry-instrument`` does: the SDK's own handler, which
    ``OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true`` switches on, always adds them."""
    if config.sources.get("OTEL_PYTHON_LOG_CODE_ATTRIBUTES", "default") != "default":
        return config.flag("OTEL_PYTHON_LOG_CODE_ATTRIBUTES")
    return config.flag("OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED")


#: the official handler's module, and the name it is loaded under when loaded alone
_HANDLER_MODULE = "opentelemetry.instrumentation.logging.handler"


def official_log_handler(alone: bool = True) -> Callable[..., logging.Handler]:
    """The official ``LoggingHandler`` class (opentelemetry-instrumentation-logging).

    Importing it the usual way runs its package's ``__init__`` first, whose ``LoggingInstrumentor``
    brings ``BaseInstrumentor`` and with it ``packaging``, ``wrapt`` and a dozen semantic-convention
    modules, none of which the handler uses (with the process metrics read by us and the HTTP
    suppression test below, 1.6 MB of RSS left out of a process that loads no official
    instrumentation; any official instrumentation brings them back).  So its module file is
    executed on its own, under its own name, unless the package is imported already; it is the
    same code.  Probe ``instrumentation-logging-handler-alone``: when
    the file is not where the package says, does not define a ``logging.Handler`` subclass named
    ``LoggingHandler``, or fails to run, the usual import is the fallback (every contrib release we
    declare, 0.64b0 on, has the handler module).  Run once per process: later calls get the
    same class.  It is not registered in ``sys.modules``: an app that imports the package later
    gets the package's own copy of the module, as without us (the handler's class is then not
    the one ours is an instance of; nothing in the package compares them).
    """
    probe = "instrumentation-logging-handler-alone"
    if alone and sys.modules.get(_HANDLER_MODULE) is None and not forced_off(probe):
        handler = _handler_alone()
        if handler is not None:
            return handler
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    return LoggingHandler


@functools.cache  # the module runs once per process
def _handler_alone() -> Callable[..., logging.Handler] | None:
    import importlib.util

    try:
        package = importlib.util.find_spec("opentelemetry.instrumentation.logging")  # not executed
        locations = list(package.submodule_search_locations or ()) if package is not None else []
        path = os.path.join(locations[0], "handler.py") if locations else ""
        if not os.path.isfile(path):
            return None
        spec = importlib.util.spec_from_file_location(_HANDLER_MODULE, path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)  # not in sys.modules: the package keeps its own
        spec.loader.exec_module(module)
        handler = getattr(module, "LoggingHandler", None)
    except Exception:  # a layout we do not know: the usual import
        return None
    if isinstance(handler, type) and issubclass(handler, logging.Handler):
        return handler
    return None


def _drop_counting_logs(processor: Any, health: Health, capacity: int, scrubber: LogScrubber) -> Any:
    """Wrap a batch log processor: scrub each record; count records the full queue pushes out."""
    from opentelemetry.sdk._logs import LogRecordProcessor

    queue: Any = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
    health.capacity["logs"] = capacity
    if queue is not None:  # an SDK without the queue we know: failures are still counted
        health.queues["logs"] = lambda: len(queue)

    class ScrubbingDropCountingLogProcessor(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            try:
                scrubber.record(log_record)
            except Exception as exc:
                guard.internal_error("logs.scrub", exc)
                return  # unscrubbed text must not leave the process
            if queue is not None and len(queue) >= capacity:
                health.dropped.add(1, ("logs",))
            processor.on_emit(log_record)

        def emit(self, log_record: Any) -> None:  # SDKs before on_emit
            self.on_emit(log_record)

        def shutdown(self) -> None:
            processor.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(processor.force_flush(timeout_millis))

    return ScrubbingDropCountingLogProcessor()


def register_exit(pipeline: Pipeline, timeout: float) -> None:
    """Flush (and print the report) once at exit, including exit by SIGTERM.

    uvicorn and others re-raise SIGTERM after their graceful shutdown with the handler that
    was installed before them; with the default handler the process dies without running
    ``atexit``, losing the last batch of telemetry.  So when nothing handles SIGTERM yet we
    install a handler that flushes within the timeout and then dies by SIGTERM as before.
    """
    done = threading.Event()

    def at_exit() -> None:
        if done.is_set():
            return
        done.set()
        pipeline.report_once()
        pipeline.shutdown(timeout)

    atexit.register(at_exit)

    def on_sigterm(signum: int, _frame: Any) -> None:
        at_exit()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    try:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: atexit still covers normal exits
        pass
