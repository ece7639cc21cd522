"""From our pre-aggregated instruments to standard SDK metric data.

The Python SDK has no metric-producer hook, so :class:`MergingExporter` wraps the
configured ``MetricExporter`` and appends our instruments' points, as one extra
``ScopeMetrics`` under the same resource, to every ``MetricsData`` the SDK reader hands
it.  Our points are cumulative (the SDK's default temporality for OTLP and Prometheus).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

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
from opentelemetry.sdk.metrics.view import Aggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_perf._metrics import instruments as fast

SCOPE_NAME = "otel_perf"


def _attributes(names: tuple[str, ...], key: fast.Key) -> dict[str, Any]:
    if key == fast.OVERFLOW_KEY:
        return {"otel.metric.overflow": True}
    return {n: v for n, v in zip(names, key, strict=False) if v is not None and v != ""}


def to_metrics(registry: fast.Registry, now_ns: int | None = None) -> list[Metric]:
    """Convert every instrument's current state to SDK ``Metric`` objects."""
    now = now_ns or time.time_ns()
    start = registry.start_time_ns
    out: list[Metric] = []
    for inst in registry.instruments():
        data: Any
        if isinstance(inst, fast.Histogram):
            points_h = []
            for s in inst.series():
                exemplars = [
                    Exemplar({}, value, ts, span_id, trace_id)
                    for _, (value, ts, trace_id, span_id) in sorted(s.exemplars.items())
                ]
                points_h.append(
                    HistogramDataPoint(
                        attributes=_attributes(inst.attribute_names, s.key),
                        start_time_unix_nano=start,
                        time_unix_nano=now,
                        count=s.count,
                        sum=s.sum,
                        bucket_counts=s.bucket_counts,
                        explicit_bounds=inst.bounds,
                        min=s.min if s.count else 0.0,
                        max=s.max if s.count else 0.0,
                        exemplars=exemplars,
                    )
                )
            if not points_h:
                continue
            data = Histogram(points_h, AggregationTemporality.CUMULATIVE)
        elif isinstance(inst, fast.Counter):
            points = [
                NumberDataPoint(_attributes(inst.attribute_names, k), start, now, v)
                for k, v in inst.values().items()
            ]
            if not points:
                continue
            data = Sum(points, AggregationTemporality.CUMULATIVE, inst.monotonic)
        else:
            points = [
                NumberDataPoint(_attributes(inst.attribute_names, k), start, now, v)
                for k, v in inst.values().items()
            ]
            if not points:
                continue
            data = Gauge(points)
        out.append(Metric(inst.name, inst.description, inst.unit, data))
    return out


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
    """Wraps an SDK metric exporter; adds our instruments to everything it exports."""

    def __init__(self, inner: MetricExporter, registry: fast.Registry, resource: Resource) -> None:
        super().__init__(
            preferred_temporality=dict(inner._preferred_temporality or {}),
            preferred_aggregation=dict[type, Aggregation](inner._preferred_aggregation or {}),
        )
        self._inner = inner
        self._registry = registry
        self._resource = resource

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = merge(metrics_data, self._resource, to_metrics(self._registry))
        return self._inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)
