"""Our instruments follow each exporter's metric settings: temporality, histogram aggregation,
exemplar filter and Views (``otel_perf._metrics.bridge.Streams``), in-process."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    Histogram,
    Metric,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

from otel_perf._analysis.stats import percentile
from otel_perf._metrics.bridge import Streams
from otel_perf._metrics.exponential import ExpBuckets
from otel_perf._metrics.instruments import Registry
from otel_perf._metrics.views import ViewsError, load_views, parse_views

DELTA = AggregationTemporality.DELTA
CUMULATIVE = AggregationTemporality.CUMULATIVE
#: the SDK's mapping for OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta
DELTA_PREFERENCE = {
    sdk_metrics.Counter: DELTA,
    sdk_metrics.UpDownCounter: CUMULATIVE,
    sdk_metrics.Histogram: DELTA,
    sdk_metrics.ObservableCounter: DELTA,
    sdk_metrics.ObservableUpDownCounter: CUMULATIVE,
    sdk_metrics.ObservableGauge: CUMULATIVE,
}


def _registry() -> Registry:
    registry = Registry()
    registry.histogram("http.server.request.duration", "s", "d", ("http.route", "http.response.status_code"))
    registry.counter("perf.slow_requests", "{request}", "d", ("http.route",))
    registry.counter("perf.active", "{request}", "d", ("http.route",), monotonic=False)
    return registry


def _by_name(metrics: list[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


def test_delta_gives_differences_since_this_exporters_last_export() -> None:
    registry = _registry()
    h = registry.get("http.server.request.duration")
    c = registry.get("perf.slow_requests")
    up = registry.get("perf.active")
    delta = Streams(registry, DELTA_PREFERENCE)
    cumulative = Streams(registry)  # a second exporter, default preference
    h.record(0.02, ("/a", 200))  # type: ignore[union-attr]
    h.record(0.3, ("/a", 200))  # type: ignore[union-attr]
    c.add(2, ("/a",))  # type: ignore[union-attr]
    up.add(5, ("/a",))  # type: ignore[union-attr]
    first = _by_name(delta.collect(1_000))
    assert first["http.server.request.duration"].data.aggregation_temporality is DELTA
    point = first["http.server.request.duration"].data.data_points[0]
    assert (point.count, point.min, point.max) == (2, 0.02, 0.3)
    assert first["perf.slow_requests"].data.aggregation_temporality is DELTA
    assert first["perf.active"].data.aggregation_temporality is CUMULATIVE  # up-down: as the SDK
    h.record(0.05, ("/a", 200))  # type: ignore[union-attr]
    c.add(1, ("/a",))  # type: ignore[union-attr]
    second = _by_name(delta.collect(2_000))
    point = second["http.server.request.duration"].data.data_points[0]
    assert (point.count, point.sum, point.min, point.max) == (1, pytest.approx(0.05), 0.05, 0.05)
    assert point.start_time_unix_nano == 1_000 and point.time_unix_nano == 2_000
    assert second["perf.slow_requests"].data.data_points[0].value == 1
    assert second["perf.active"].data.data_points[0].value == 5
    third = _by_name(delta.collect(3_000))
    assert "http.server.request.duration" not in third  # nothing recorded: no delta point
    totals = _by_name(cumulative.collect(3_000))
    assert totals["http.server.request.duration"].data.data_points[0].count == 3
    assert totals["http.server.request.duration"].data.aggregation_temporality is CUMULATIVE


def test_delta_state_resets_with_the_registry_after_a_fork() -> None:
    registry = _registry()
    c = registry.get("perf.slow_requests")
    delta = Streams(registry, DELTA_PREFERENCE)
    c.add(7, ("/a",))  # type: ignore[union-attr]
    delta.collect(1_000)
    registry.reset()  # what the fork hook does in a worker
    c.add(2, ("/a",))  # type: ignore[union-attr]
    (metric,) = [m for m in delta.collect() if m.name == "perf.slow_requests"]
    assert metric.data.data_points[0].value == 2  # not 2 - 7
    assert metric.data.data_points[0].start_time_unix_nano == registry.start_time_ns


def test_exponential_default_aggregation_buckets_each_measurement() -> None:
    registry = _registry()
    h = registry.get("http.server.request.duration")
    streams = Streams(registry, None, {sdk_metrics.Histogram: ExponentialBucketHistogramAggregation()})
    values = [0.001 * 1.3**i for i in range(40)] + [0.0]
    for v in values:
        h.record(v, ("/a", 200))  # type: ignore[union-attr]
    metric = _by_name(streams.collect())["http.server.request.duration"]
    assert isinstance(metric.data, ExponentialHistogram)
    point = metric.data.data_points[0]
    assert point.count == len(values) and point.zero_count == 1
    assert sum(point.positive.bucket_counts) == len(values) - 1
    assert len(point.positive.bucket_counts) <= 160 and point.scale <= 20
    base = 2 ** (2**-point.scale)
    for i, count in enumerate(point.positive.bucket_counts):  # every value is in its bucket
        lo, hi = base ** (point.positive.offset + i), base ** (point.positive.offset + i + 1)
        assert count == sum(1 for v in values if lo < v <= hi * (1 + 1e-12) and v > 0)
    # the stats endpoint still has its explicit buckets
    (series,) = h.series()  # type: ignore[union-attr]
    assert sum(series.bucket_counts) == len(values)


@pytest.mark.parametrize("max_size", [4, 20, 160])
def test_exponential_buckets_match_the_sdks_aggregation(max_size: int) -> None:
    from opentelemetry.context import Context
    from opentelemetry.sdk.metrics._internal.aggregation import _ExponentialBucketHistogramAggregation
    from opentelemetry.sdk.metrics._internal.exemplar import SimpleFixedSizeExemplarReservoir
    from opentelemetry.sdk.metrics._internal.measurement import Measurement

    rng = random.Random(max_size)
    for _ in range(50):
        sdk = _ExponentialBucketHistogramAggregation(
            {}, SimpleFixedSizeExemplarReservoir, DELTA, 0, max_size=max_size
        )
        ours = ExpBuckets(max_size=max_size)
        for _ in range(rng.randint(1, 150)):
            v = rng.choice([rng.expovariate(20), rng.uniform(-50, 50), 0.0, 2.0 ** rng.randint(-30, 30)])
            sdk.aggregate(Measurement(v, 0, None, Context()))  # type: ignore[arg-type]
            ours.record(v)
        want = sdk.collect(CUMULATIVE, 0)
        got = ours.snapshot()
        assert want is not None
        assert (got.scale, got.zero_count) == (want.scale, want.zero_count)
        assert _trim(got.positive_offset, got.positive) == _trim(
            want.positive.offset, want.positive.bucket_counts
        )
        assert _trim(got.negative_offset, got.negative) == _trim(
            want.negative.offset, want.negative.bucket_counts
        )


def _trim(offset: int, counts: Any) -> tuple[int, list[int]]:
    counts = list(counts)
    while counts and counts[0] == 0:
        counts.pop(0)
        offset += 1
    while counts and counts[-1] == 0:
        counts.pop()
    return (offset if counts else 0), counts


def test_delta_exponential_subtracts_across_a_downscale() -> None:
    registry = _registry()
    h = registry.get("http.server.request.duration")
    streams = Streams(
        registry, DELTA_PREFERENCE, {sdk_metrics.Histogram: ExponentialBucketHistogramAggregation()}
    )
    h.record(1.0, ("/a", 200))  # type: ignore[union-attr]
    streams.collect(1)
    h.record(1000.0, ("/a", 200))  # type: ignore[union-attr]  # forces a coarser scale
    point = _by_name(streams.collect(2))["http.server.request.duration"].data.data_points[0]
    assert point.count == 1 and sum(point.positive.bucket_counts) == 1


@pytest.mark.parametrize(("mode", "expected"), [("trace_based", 1), ("always_on", 2), ("always_off", 0)])
def test_exemplar_filter(mode: str, expected: int) -> None:
    registry = _registry()
    h = registry.get("http.server.request.duration")
    streams = Streams(registry, exemplar_filter=mode)
    h.record(0.002, ("/a", 200), trace_id=0xABC, span_id=0x12)  # type: ignore[union-attr]  # sampled
    h.record(0.7, ("/a", 200))  # type: ignore[union-attr]  # not sampled
    point = _by_name(streams.collect())["http.server.request.duration"].data.data_points[0]
    assert len(point.exemplars) == expected
    for ex in point.exemplars:
        assert (ex.trace_id, ex.span_id) in ((0xABC, 0x12), (None, None))


def test_default_configuration_keeps_the_lean_record() -> None:
    registry = _registry()
    Streams(registry)
    h = registry.get("http.server.request.duration")
    assert "record" not in vars(h)  # the class's record: nothing added per measurement
    Streams(registry, DELTA_PREFERENCE)
    assert "record" in vars(h)


VIEWS = """\
views:
  - selector: {instrument_name: http.server.request.duration}
    stream:
      attribute_keys: {excluded: [http.response.status_code]}
      aggregation: {explicit_bucket_histogram: {boundaries: [0.1, 1.0]}}
  - selector: {instrument_name: perf.slow_requests}
    stream: {name: perf.slow}
  - selector: {instrument_name: perf.active}
    stream: {aggregation: {drop: {}}}
"""


def test_views_rename_drop_rebucket_and_drop_attributes(tmp_path: Path) -> None:
    path = tmp_path / "views.yaml"
    path.write_text(VIEWS)
    rules = load_views(str(path))
    registry = _registry()
    streams = Streams(registry, views=rules)
    h = registry.get("http.server.request.duration")
    h.record(0.05, ("/a", 200))  # type: ignore[union-attr]
    h.record(0.5, ("/a", 500))  # type: ignore[union-attr]
    registry.get("perf.slow_requests").add(1, ("/a",))  # type: ignore[union-attr]
    registry.get("perf.active").add(1, ("/a",))  # type: ignore[union-attr]
    out = _by_name(streams.collect())
    assert set(out) == {"http.server.request.duration", "perf.slow"}
    (point,) = out["http.server.request.duration"].data.data_points
    assert point.attributes == {"http.route": "/a"} and point.count == 2
    assert list(point.explicit_bounds) == [0.1, 1.0] and list(point.bucket_counts) == [1, 1, 0]
    assert isinstance(out["perf.slow"].data, Sum)
    sdk_view = rules[0].sdk_view()
    assert sdk_view._instrument_name == "http.server.request.duration"


def test_views_sum_of_a_histogram_and_what_cannot_apply_is_said() -> None:
    from otel_perf._metrics.views import notes

    rules = parse_views(
        "views:\n"
        "  - selector: {instrument_name: http.server.request.duration}\n"
        "    stream: {name: http.time.total, aggregation: sum}\n"
        "  - selector: {instrument_name: perf.slow_requests}\n"
        "    stream: {aggregation: {base2_exponential_bucket_histogram: {}}}\n",
        "v.yaml",
    )
    registry = _registry()
    streams = Streams(registry, views=rules)
    registry.get("http.server.request.duration").record(0.25, ("/a", 200))  # type: ignore[union-attr]
    registry.get("perf.slow_requests").add(1, ("/a",))  # type: ignore[union-attr]
    out = _by_name(streams.collect())
    assert out["http.time.total"].data.data_points[0].value == 0.25
    assert out["http.time.total"].data.is_monotonic
    assert isinstance(out["perf.slow_requests"].data, Sum)  # the default stream
    said = notes(rules, registry)
    assert any(line.startswith("v.yaml:4: base2_exponential_bucket_histogram") for line in said), said


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "views:\n  - selector: {instrument_nam: x}\n",
            "v.yaml:2: views[0].selector.instrument_nam: unknown key",
        ),
        (
            "views:\n  - selector: {instrument_name: 'http.*'}\n    stream: {name: y}\n",
            "v.yaml:3: views[0].stream.name: a view that renames must select one instrument",
        ),
        (
            "views:\n  - selector: {instrument_name: x}\n    stream:\n      aggregation:\n"
            "        explicit_bucket_histogram: {boundaries: [1, 0.5]}\n",
            "v.yaml:5: views[0].stream.aggregation.explicit_bucket_histogram.boundaries: boundaries must",
        ),
        (
            "views:\n  - selector: {instrument_type: timer}\n",
            "v.yaml:2: views[0].selector.instrument_type: unknown",
        ),
        ("views: [\n", "v.yaml:2: not valid YAML"),
    ],
)
def test_views_file_errors_name_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ViewsError) as info:
        parse_views(text, "v.yaml")
    assert str(info.value).startswith(message), str(info.value)


def test_a_declarative_configuration_files_views_are_read() -> None:
    rules = parse_views(
        "file_format: '1.0'\nmeter_provider:\n  readers: []\n  views:\n"
        "    - selector: {instrument_name: db.*}\n      stream: {aggregation: {drop: {}}}\n",
        "otel.yaml",
    )
    assert rules[0].aggregation == "drop" and rules[0].where == "otel.yaml:5"


def test_percentiles_still_come_from_explicit_buckets_with_exponential_on() -> None:
    registry = _registry()
    Streams(registry, None, {sdk_metrics.Histogram: ExponentialBucketHistogramAggregation()})
    h = registry.get("http.server.request.duration")
    for ms in range(1, 101):
        h.record(ms / 1000.0, ("/a", 200))  # type: ignore[union-attr]
    (s,) = h.series()  # type: ignore[union-attr]
    p95 = percentile(h.bounds, s.bucket_counts, 0.95, s.min, s.max)  # type: ignore[union-attr]
    assert math.isclose(p95, 0.095, abs_tol=0.025)
    assert isinstance(Histogram, type)
