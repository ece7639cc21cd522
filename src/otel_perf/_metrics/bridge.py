"""From our pre-aggregated instruments to standard SDK metric data, as each exporter wants it.

The Python SDK has no metric-producer hook, so :class:`MergingExporter` wraps the
configured ``MetricExporter`` and appends our instruments' points, as one extra
``ScopeMetrics`` under the same resource, to every ``MetricsData`` the SDK reader hands
it.

What the SDK does for its own instruments per reader, :class:`Streams` does for ours per
exporter: the exporter's temporality preference (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``
and the exporter's own ``preferred_temporality``: DELTA counters and histograms are the
difference from what *this* exporter sent last, started at its previous collection; up-down
counters and gauges follow the same mapping as the SDK's), its default histogram aggregation
(explicit buckets, or base-2 exponential), the exemplar filter
(``OTEL_METRICS_EXEMPLAR_FILTER``) and the metric Views (rename, drop, keep or drop
attributes, other buckets, exponential, sum).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.view import Aggregation, ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_perf._metrics import instruments as fast
from otel_perf._metrics.exponential import DEFAULT_MAX_SCALE, DEFAULT_MAX_SIZE, ExpSnapshot
from otel_perf._metrics.views import OUR_METER, ViewRule, effective_aggregation, matching, our_type

SCOPE_NAME = OUR_METER
_CUMULATIVE = AggregationTemporality.CUMULATIVE
_DELTA = AggregationTemporality.DELTA
#: our instrument type -> the SDK instrument class whose temporality it takes
_SDK_CLASS: dict[str, Any] = {
    "histogram": sdk_metrics.Histogram,
    "counter": sdk_metrics.Counter,
    "up_down_counter": sdk_metrics.UpDownCounter,
    "gauge": getattr(sdk_metrics, "_Gauge", sdk_metrics.ObservableGauge),
    "observable_gauge": sdk_metrics.ObservableGauge,
}


def _attributes(names: tuple[str, ...], key: fast.Key) -> dict[str, Any]:
    if key == fast.OVERFLOW_KEY:
        return {"otel.metric.overflow": True}
    dims = fast.DIMENSIONS
    out = {n: v for n, v in zip(names, key, strict=False) if v is not None and v != "" and n != dims}
    if names and names[-1] == dims and len(key) == len(names) and isinstance(key[-1], tuple):
        for pair in key[-1]:  # the dimensions a user named: (name, value) pairs
            if isinstance(pair, tuple) and len(pair) == 2 and pair[1] is not None and pair[1] != "":
                out.setdefault(str(pair[0]), pair[1])
    return out


@dataclass(frozen=True)
class _Stream:
    """One exported stream of one instrument (a View's, or the default)."""

    name: str
    description: str
    rule: ViewRule | None
    aggregation: str  # default, sum, explicit_bucket_histogram, base2_exponential_bucket_histogram


class Streams:
    """Our instruments as one exporter (or the Prometheus reader) sees them.

    ``temporality`` and ``aggregation`` are the exporter's preferences keyed by SDK instrument
    class (``MetricExporter._preferred_temporality`` / ``_preferred_aggregation``); missing
    means cumulative and explicit buckets.  Attaches itself to ``registry``, which tells it
    about new instruments and about resets (a forked worker).
    """

    def __init__(
        self,
        registry: fast.Registry,
        temporality: Mapping[type, AggregationTemporality] | None = None,
        aggregation: Mapping[type, Aggregation] | None = None,
        exemplar_filter: str = "trace_based",
        views: Sequence[ViewRule] = (),
        *,
        attach: bool = True,
    ) -> None:
        self.registry = registry
        self.temporality = dict(temporality or {})
        exp = (aggregation or {}).get(sdk_metrics.Histogram)
        #: (max_size, max_scale) when this exporter's default histogram aggregation is exponential
        self.default_exponential: tuple[int, int] | None = (
            (
                int(getattr(exp, "_max_size", DEFAULT_MAX_SIZE)),
                int(getattr(exp, "_max_scale", DEFAULT_MAX_SCALE)),
            )
            if isinstance(exp, ExponentialBucketHistogramAggregation)
            else None
        )
        self.exemplar_filter = exemplar_filter
        self.views = tuple(views)
        self._streams: dict[str, list[_Stream]] = {}
        self._delta: dict[str, bool] = {}
        self._slots: dict[str, int] = {}
        self._last: dict[str, dict[fast.Key, Any]] = {}
        self._last_collect_ns = registry.start_time_ns
        if attach:
            registry.attach(self)

    # -- set-up ------------------------------------------------------------------------------

    def temporality_of(self, kind: str) -> AggregationTemporality:
        return self.temporality.get(_SDK_CLASS[kind], _CUMULATIVE)

    def prepare(self, inst: fast.Instrument) -> None:
        """Decide this instrument's streams; ask it for what they need at record time."""
        kind = our_type(inst)
        rules = matching(self.views, inst)
        streams: list[_Stream] = []
        choices: list[ViewRule | None] = list(rules) if rules else [None]
        for rule in choices:
            if rule is not None and rule.aggregation == "drop":
                continue
            agg = effective_aggregation(rule, kind)
            if kind == "histogram" and agg == "default":
                agg = "base2_exponential_bucket_histogram" if self.default_exponential else "explicit"
            streams.append(
                _Stream(
                    (rule.name if rule and rule.name else inst.name),
                    (rule.description if rule and rule.description is not None else inst.description),
                    rule,
                    agg,
                )
            )
        self._streams[inst.name] = streams
        delta = kind not in ("gauge", "observable_gauge") and self.temporality_of(kind) is _DELTA
        self._delta[inst.name] = delta
        if not isinstance(inst, fast.Histogram) or not streams:
            return
        bounds = next(
            (
                r.boundaries
                for r in rules
                if r.aggregation == "explicit_bucket_histogram" and r.boundaries is not None
            ),
            None,
        )
        if bounds is not None and tuple(sorted(set(bounds))) != inst.bounds:
            inst.rebound(bounds)
        exponential = None
        for stream in streams:
            if stream.aggregation == "base2_exponential_bucket_histogram":
                chosen = stream.rule
                exponential = (
                    (chosen.max_size, chosen.max_scale)
                    if chosen is not None and chosen.aggregation == stream.aggregation
                    else self.default_exponential
                )
                break
        needs_window = delta and any(s.aggregation != "sum" for s in streams)
        slot = inst.configure(
            exponential=exponential,
            add_window=needs_window,
            exemplar_filter=(None if self.exemplar_filter == "trace_based" else self.exemplar_filter),
        )
        if slot >= 0:
            self._slots[inst.name] = slot

    def reset(self) -> None:
        """Forget what was exported (the instruments were emptied: a forked worker)."""
        self._last.clear()
        self._last_collect_ns = self.registry.start_time_ns

    # -- collection --------------------------------------------------------------------------

    def collect(self, now_ns: int | None = None) -> list[Metric]:
        """Every stream's points now, in this exporter's temporality."""
        now = now_ns or time.time_ns()
        previous = self._last_collect_ns
        self._last_collect_ns = now
        out: list[Metric] = []
        for inst in self.registry.instruments():
            streams = self._streams.get(inst.name)
            if streams is None:
                self.prepare(inst)
                streams = self._streams[inst.name]
            if not streams:
                continue
            delta = self._delta[inst.name]
            start = previous if delta else self.registry.start_time_ns
            temporality = _DELTA if delta else _CUMULATIVE
            if isinstance(inst, fast.Histogram):
                series = inst.series(self._slots.get(inst.name, -1))
                if delta:
                    series = self._histogram_deltas(inst.name, series, previous)
                for stream in streams:
                    metric = self._histogram_metric(inst, stream, series, start, now, temporality, delta)
                    if metric is not None:
                        out.append(metric)
                continue
            values = inst.values()
            if delta:
                values = self._deltas(inst.name, values)
            for stream in streams:
                points = [
                    NumberDataPoint(attrs, start, now, v)
                    for attrs, v in _group_numbers(inst, stream.rule, values, isinstance(inst, fast.Counter))
                ]
                if not points:
                    continue
                data: Any
                if isinstance(inst, fast.Counter):
                    data = Sum(points, temporality, inst.monotonic)
                else:
                    data = Gauge(points)
                out.append(Metric(stream.name, stream.description, inst.unit, data))
        return out

    def _deltas(self, name: str, values: dict[fast.Key, float]) -> dict[fast.Key, float]:
        last = self._last.setdefault(name, {})
        out: dict[fast.Key, float] = {}
        for key, value in values.items():
            diff = value - last.get(key, 0)
            last[key] = value
            if diff:
                out[key] = diff
        return out

    def _histogram_deltas(
        self, name: str, series: list[fast.HistogramSeries], since_ns: int
    ) -> list[fast.HistogramSeries]:
        last = self._last.setdefault(name, {})
        out: list[fast.HistogramSeries] = []
        for s in series:
            before: fast.HistogramSeries | None = last.get(s.key)
            last[s.key] = s
            if before is None:
                count, total, buckets, exp = s.count, s.sum, s.bucket_counts, s.exp
            else:
                count = s.count - before.count
                total = s.sum - before.sum
                buckets = tuple(a - b for a, b in zip(s.bucket_counts, before.bucket_counts, strict=False))
                exp = s.exp.minus(before.exp) if s.exp is not None and before.exp is not None else s.exp
            if count <= 0:
                continue
            exemplars = {i: e for i, e in s.exemplars.items() if e[1] > since_ns}
            out.append(
                fast.HistogramSeries(s.key, count, total, s.window_min, s.window_max, buckets, exemplars, exp)
            )
        return out

    def _histogram_metric(
        self,
        inst: fast.Histogram,
        stream: _Stream,
        series: list[fast.HistogramSeries],
        start: int,
        now: int,
        temporality: AggregationTemporality,
        delta: bool,
    ) -> Metric | None:
        groups = _group_histograms(inst, stream.rule, series)
        if not groups:
            return None
        min_max = stream.rule is None or stream.rule.record_min_max
        keep_exemplars = self.exemplar_filter != "always_off"
        if stream.aggregation == "sum":
            points = [NumberDataPoint(attrs, start, now, s.sum) for attrs, s in groups]
            return Metric(stream.name, stream.description, inst.unit, Sum(points, temporality, True))
        if stream.aggregation == "base2_exponential_bucket_histogram":
            from opentelemetry.sdk.metrics.export import (
                Buckets,
                ExponentialHistogram,
                ExponentialHistogramDataPoint,
            )

            exp_points = []
            for attrs, s in groups:
                snap = s.exp or ExpSnapshot(DEFAULT_MAX_SCALE, 0, 0, (), 0, ())
                low, high = _min_max(s, min_max)
                exp_points.append(ExponentialHistogramDataPoint(
                    attributes=attrs, start_time_unix_nano=start, time_unix_nano=now,
                    count=s.count, sum=s.sum, scale=snap.scale, zero_count=snap.zero_count,
                    positive=Buckets(snap.positive_offset, list(snap.positive)),
                    negative=Buckets(snap.negative_offset, list(snap.negative)),
                    flags=0, min=low, max=high,
                    exemplars=_exemplars(s) if keep_exemplars else [],
                ))  # fmt: skip
            return Metric(
                stream.name, stream.description, inst.unit, ExponentialHistogram(exp_points, temporality)
            )
        points_h = []
        for attrs, s in groups:
            low, high = _min_max(s, min_max)
            points_h.append(HistogramDataPoint(
                attributes=attrs, start_time_unix_nano=start, time_unix_nano=now,
                count=s.count, sum=s.sum, bucket_counts=s.bucket_counts, explicit_bounds=inst.bounds,
                min=low, max=high, exemplars=_exemplars(s) if keep_exemplars else [],
            ))  # fmt: skip
        return Metric(stream.name, stream.description, inst.unit, Histogram(points_h, temporality))


def _min_max(s: fast.HistogramSeries, recorded: bool) -> tuple[float, float]:
    """min and max of a point; +inf/-inf when a View says record_min_max: false (as the SDK writes)."""
    if not recorded:
        return float("inf"), float("-inf")
    return (s.min, s.max) if s.count else (0.0, 0.0)


def _exemplars(s: fast.HistogramSeries) -> list[Exemplar]:
    return [
        Exemplar({}, value, ts, span_id or None, trace_id or None)
        for _, (value, ts, trace_id, span_id) in sorted(s.exemplars.items())
    ]


def _filtered(inst: fast.Instrument, rule: ViewRule | None, key: fast.Key) -> dict[str, Any]:
    attrs = _attributes(inst.attribute_names, key)
    if rule is None or not rule.filters_attributes or key == fast.OVERFLOW_KEY:
        return attrs
    return {k: v for k, v in attrs.items() if rule.keeps(k)}


def _group_numbers(
    inst: fast.Instrument, rule: ViewRule | None, values: dict[fast.Key, float], add: bool
) -> list[tuple[dict[str, Any], float]]:
    if rule is None or not rule.filters_attributes:
        return [(_attributes(inst.attribute_names, k), v) for k, v in values.items()]
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], float]] = {}
    for key, value in values.items():
        attrs = _filtered(inst, rule, key)
        group = tuple(sorted(attrs.items()))
        seen = groups.get(group)
        groups[group] = (attrs, seen[1] + value if seen is not None and add else value)
    return list(groups.values())


def _group_histograms(
    inst: fast.Histogram, rule: ViewRule | None, series: list[fast.HistogramSeries]
) -> list[tuple[dict[str, Any], fast.HistogramSeries]]:
    if rule is None or not rule.filters_attributes:
        return [(_attributes(inst.attribute_names, s.key), s) for s in series]
    groups: dict[tuple[Any, ...], tuple[dict[str, Any], fast.HistogramSeries]] = {}
    for s in series:
        attrs = _filtered(inst, rule, s.key)
        group = tuple(sorted(attrs.items()))
        seen = groups.get(group)
        groups[group] = (attrs, s if seen is None else _merge(seen[1], s))
    return list(groups.values())


def _merge(a: fast.HistogramSeries, b: fast.HistogramSeries) -> fast.HistogramSeries:
    exemplars = dict(a.exemplars)
    for index, ex in b.exemplars.items():
        if index not in exemplars or ex[1] > exemplars[index][1]:
            exemplars[index] = ex
    exp = a.exp.plus(b.exp) if a.exp is not None and b.exp is not None else a.exp or b.exp
    return fast.HistogramSeries(
        a.key,
        a.count + b.count,
        a.sum + b.sum,
        min(a.min, b.min),
        max(a.max, b.max),
        tuple(x + y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=False)),
        exemplars,
        exp,
        min(a.window_min, b.window_min),
        max(a.window_max, b.window_max),
    )


def to_metrics(registry: fast.Registry, now_ns: int | None = None) -> list[Metric]:
    """Every instrument's current state as cumulative SDK ``Metric`` objects (no Views)."""
    return Streams(registry, attach=False).collect(now_ns)


def merge(metrics_data: MetricsData | None, resource: Resource, ours: Sequence[Metric]) -> MetricsData:
    """Return ``metrics_data`` with ``ours`` added as one scope under ``resource``."""
    from otel_perf import __version__

    scope = ScopeMetrics(InstrumentationScope(SCOPE_NAME, __version__), list(ours), "")
    resource_metrics = list(metrics_data.resource_metrics) if metrics_data else []
    for i, rm in enumerate(resource_metrics):
        if rm.resource == resource:
            resource_metrics[i] = ResourceMetrics(rm.resource, [*rm.scope_metrics, scope], rm.schema_url)
            break
    else:
        resource_metrics.append(ResourceMetrics(resource, [scope], ""))
    return MetricsData(resource_metrics)


class MergingExporter(MetricExporter):
    """Wraps an SDK metric exporter; adds our instruments, as that exporter wants them, to every export."""

    def __init__(
        self,
        inner: MetricExporter,
        registry: fast.Registry,
        resource: Resource,
        *,
        exemplar_filter: str = "trace_based",
        views: Sequence[ViewRule] = (),
    ) -> None:
        super().__init__(
            preferred_temporality=dict(inner._preferred_temporality or {}),
            preferred_aggregation=dict[type, Aggregation](inner._preferred_aggregation or {}),
        )
        self._inner = inner
        self._registry = registry
        self._resource = resource
        self.streams = Streams(
            registry, inner._preferred_temporality, inner._preferred_aggregation, exemplar_filter, views
        )

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = merge(metrics_data, self._resource, self.streams.collect())
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
