"""The Prometheus pull exporter (``OTEL_METRICS_EXPORTER=prometheus``).

Unit tests pin the rendering (names, units, labels, escaping, exemplars) by parsing the output
with ``prometheus_client``'s parsers; the end-to-end test runs the demo app under the launcher,
scraped by a real Prometheus, and checks that the exemplars Prometheus stored carry the trace ids
of server spans the app exported. :func:`live_demo_stack` is shared with
``tests/stack/test_live_promql.py``.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import re
import shutil
import socket
import sys
import threading
import time
import timeit
import urllib.error
import urllib.request
from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from otel_perf import _names as n
from otel_perf._core.runtime import build_instruments
from otel_perf._export.prometheus import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    PrometheusMetricReader,
    label_name,
    metric_name,
    render,
    wants_openmetrics,
)
from otel_perf._metrics.bridge import Exemplar, merge, to_metrics
from otel_perf._metrics.instruments import Registry
from otel_perf._setup.providers import Health
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, free_port, http_get
from support.prometheus import PrometheusServer, prometheus_path, scrape_config, start_prometheus

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what Prometheus 2.42 sends
RESOURCE = Resource({"service.name": "shop", "service.instance.id": "i-1", "deployment.environment": "test"})
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
T0 = 1_700_000_000_123_456_789


# --- helpers ---------------------------------------------------------------------------------------


def _data(
    *metrics: Metric, scope: str = "tests", version: str = "1.0", resource: Resource = RESOURCE
) -> MetricsData:
    return MetricsData(
        [
            ResourceMetrics(
                resource, [ScopeMetrics(InstrumentationScope(scope, version), list(metrics), "")], ""
            )
        ]
    )


def _sum(
    name: str, unit: str, points: Sequence[tuple[Mapping[str, Any], float]], monotonic: bool = True
) -> Metric:
    data = Sum(
        [NumberDataPoint(dict(a), 0, T0, v) for a, v in points], AggregationTemporality.CUMULATIVE, monotonic
    )
    return Metric(name, f"{name} help", unit, data)


def _gauge(name: str, unit: str, points: Sequence[tuple[Mapping[str, Any], float]]) -> Metric:
    return Metric(name, f"{name} help", unit, Gauge([NumberDataPoint(dict(a), 0, T0, v) for a, v in points]))


def _histogram(
    name: str,
    bounds: Sequence[float],
    counts: Sequence[int],
    attributes: Mapping[str, Any] | None = None,
    *,
    exemplars: Sequence[Any] = (),
    unit: str = "s",
) -> Metric:
    point = HistogramDataPoint(
        attributes=dict(attributes or {}),
        start_time_unix_nano=0,
        time_unix_nano=T0,
        count=sum(counts),
        sum=1.5,
        bucket_counts=list(counts),
        explicit_bounds=list(bounds),
        min=0.0,
        max=1.0,
        exemplars=list(exemplars),
    )
    return Metric(name, f"{name} help", unit, Histogram([point], AggregationTemporality.CUMULATIVE))


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in parse_openmetrics(text)}


def _samples(text: str, openmetrics: bool = True) -> list[Any]:
    families = parse_openmetrics(text) if openmetrics else parse_text(text)
    return [s for f in families for s in f.samples]


def _get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def reader(registry: Registry) -> Iterator[PrometheusMetricReader]:
    """A reader serving on a free port, registered on a MeterProvider; shut down after."""
    reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    yield reader
    provider.shutdown()


# --- naming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        (
            "http.server.request.duration",
            "s",
            "histogram",
            ("http_server_request_duration_seconds", "seconds"),
        ),
        ("process.cpu.time", "s", "sum", ("process_cpu_time_seconds", "seconds")),
        ("process.cpu.utilization", "1", "gauge", ("process_cpu_utilization_ratio", "ratio")),
        ("process.memory.usage", "By", "gauge", ("process_memory_usage_bytes", "bytes")),
        ("http.server.active_requests", "{request}", "updownsum", ("http_server_active_requests", "")),
        ("perf.slow_requests", "{request}", "sum", ("perf_slow_requests", "")),
        ("requests.total", "{request}", "sum", ("requests", "")),  # "_total" is added to samples only
        ("queue.fill", "1", "updownsum", ("queue_fill", "")),  # only gauges get _ratio, as in the Collector
        ("hits", "1", "sum", ("hits", "")),
        ("cache.hit.ratio", "1", "gauge", ("cache_hit_ratio", "ratio")),  # no ratio_ratio
        ("request.duration.seconds", "s", "histogram", ("request_duration_seconds", "seconds")),
        ("request.duration_seconds", "s", "histogram", ("request_duration_seconds", "seconds")),
        ("seconds.spent", "s", "sum", ("seconds_spent", "")),  # unit already named: no suffix, no # UNIT
        ("net.io", "By/s", "gauge", ("net_io_bytes_per_second", "bytes_per_second")),
        ("net.io", "{packet}/s", "gauge", ("net_io_per_second", "per_second")),
        ("disk.used", "%", "gauge", ("disk_used_percent", "percent")),
        ("latency", "ms", "histogram", ("latency_milliseconds", "milliseconds")),
        ("weird..name__x", "", "gauge", ("weird_name_x", "")),
        ("2xx.responses", "{response}", "sum", ("_2xx_responses", "")),
        ("temp", "Cel", "gauge", ("temp_celsius", "celsius")),
        ("custom", "widgets", "gauge", ("custom_widgets", "widgets")),
    ],
)
def test_metric_names_follow_the_collector(
    name: str, unit: str, kind: str, expected: tuple[str, str]
) -> None:
    assert metric_name(name, unit, kind) == expected


def _names_contract() -> dict[str, str]:
    """OTel name -> Prometheus name, from the comments of ``_names.py``."""
    text = Path(n.__file__).read_text()
    pattern = r'^[A-Z_]+: Final = "([^"]+)"\s*#\s*([a-z_:][a-z0-9_:]*)'
    return {m.group(1): m.group(2) for m in re.finditer(pattern, text, re.M)}


def test_our_instruments_get_the_names_declared_in_names_module() -> None:
    """Every instrument the runtime registers renders under the Prometheus name ``_names.py`` declares
    (the names dashboards and rules use)."""
    registry = Registry()
    build_instruments(registry, [])
    Health(registry, 60.0)
    contract = _names_contract()
    seen = 0
    for inst in registry.instruments():
        if inst.name not in contract:
            continue
        kind = {"histogram": "histogram", "gauge": "gauge"}.get(inst.kind) or (
            "sum" if getattr(inst, "monotonic", True) else "updownsum"
        )
        family, _unit = metric_name(inst.name, inst.unit, kind)
        rendered = family + "_total" if kind == "sum" else family
        assert rendered == contract[inst.name], inst.name
        seen += 1
    assert seen >= 15


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("http.route", "http_route"),
        ("http.response.status_code", "http_response_status_code"),
        ("a-b c/d", "a_b_c_d"),
        ("1st", "key_1st"),
        ("_private", "key_private"),
        ("__reserved", "__reserved"),
        ("ünïcode", "key_n_code"),  # "_n_code" starts with a single "_"
        ("", "key_empty"),
    ],
)
def test_label_names_are_sanitized(key: str, expected: str) -> None:
    assert label_name(key) == expected


# --- rendering ------------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    text = render(
        _data(_histogram("rpc.duration", [0.1, 0.5, 1.0], [2, 3, 0, 1], {"rpc.method": "Get"})), True
    )
    fam = _families(text)["rpc_duration_seconds"]
    assert fam.type == "histogram"
    assert fam.unit == "seconds"
    buckets = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 2, "0.5": 5, "1": 5, "+Inf": 6}
    by_name = {s.name: s.value for s in fam.samples if not s.name.endswith("_bucket")}
    assert by_name == {"rpc_duration_seconds_sum": 1.5, "rpc_duration_seconds_count": 6}
    assert all(s.labels["rpc_method"] == "Get" for s in fam.samples)


def test_exemplars_round_trip_through_the_openmetrics_parser() -> None:
    exemplars = [
        Exemplar({}, 0.3, T0, SPAN_ID, TRACE_ID),
        Exemplar({}, 0.05, T0 - 10, 1, 2),
        Exemplar({}, 0.07, T0 + 5, 3, 4),  # newer exemplar in the same bucket wins
        Exemplar({}, 0.7, T0, None, None),  # no trace: not rendered
    ]
    text = render(_data(_histogram("rpc.duration", [0.1, 0.5, 1.0], [2, 3, 1, 0], exemplars=exemplars)), True)
    found = {
        s.labels["le"]: s.exemplar for s in _families(text)["rpc_duration_seconds"].samples if s.exemplar
    }
    assert set(found) == {"0.1", "0.5"}
    ex = found["0.5"]
    assert ex.labels == {"trace_id": f"{TRACE_ID:032x}", "span_id": f"{SPAN_ID:016x}"}
    assert ex.value == 0.3
    assert (ex.timestamp.sec, ex.timestamp.nsec) == (T0 // 10**9, T0 % 10**9)
    assert found["0.1"].labels == {"trace_id": f"{4:032x}", "span_id": f"{3:016x}"}


def test_our_histogram_exemplars_sit_on_the_bucket_of_their_value(registry: Registry) -> None:
    hist = registry.histogram("http.server.request.duration", "s", "Duration.", ("http.route",))
    hist.record(0.003, ("/a",), trace_id=TRACE_ID, span_id=SPAN_ID)
    hist.record(0.1, ("/a",), trace_id=TRACE_ID + 1, span_id=SPAN_ID + 1)  # on a bound: le="0.1"
    hist.record(99.0, ("/a",), trace_id=TRACE_ID + 2, span_id=SPAN_ID + 2)  # +Inf
    hist.record(0.2, ("/a",))  # unsampled: no exemplar
    text = render(merge(None, RESOURCE, to_metrics(registry)), True)
    found = {
        s.labels["le"]: int(s.exemplar.labels["trace_id"], 16)
        for s in _families(text)["http_server_request_duration_seconds"].samples
        if s.exemplar
    }
    assert found == {"0.005": TRACE_ID, "0.1": TRACE_ID + 1, "+Inf": TRACE_ID + 2}


def test_counters_get_total_and_may_carry_exemplars() -> None:
    metric = _sum("perf.slow_requests", "{request}", [({"http.route": "/a"}, 3)])
    metric.data.data_points[0].exemplars.append(Exemplar({}, 1, T0, SPAN_ID, TRACE_ID))  # type: ignore[union-attr]
    om = render(_data(metric), True)
    fam = _families(om)["perf_slow_requests"]
    assert fam.type == "counter"
    (sample,) = fam.samples
    assert sample.name == "perf_slow_requests_total"
    assert sample.exemplar.labels["trace_id"] == f"{TRACE_ID:032x}"
    assert "# TYPE perf_slow_requests counter" in om
    text = render(_data(metric), False)
    assert "# TYPE perf_slow_requests_total counter" in text
    assert "trace_id" not in text
    samples = [(s.name, s.value) for s in _samples(text, openmetrics=False) if s.name != "target_info"]
    assert samples == [("perf_slow_requests_total", 3)]


def test_up_down_sums_and_gauges_are_gauges() -> None:
    text = render(
        _data(
            _sum("http.server.active_requests", "{request}", [({}, 2)], monotonic=False),
            _gauge("process.cpu.utilization", "1", [({}, 0.25)]),
        ),
        True,
    )
    families = _families(text)
    assert families["http_server_active_requests"].type == "gauge"
    assert families["process_cpu_utilization_ratio"].type == "gauge"
    assert families["process_cpu_utilization_ratio"].unit == "ratio"
    assert families["process_cpu_utilization_ratio"].samples[0].value == 0.25


def test_label_values_are_escaped_and_converted() -> None:
    nasty = 'a"b\\c\nd'
    attrs = {
        "http.route": nasty,
        "flag": True,
        "codes": [200, 404],
        "ratio": 0.5,
        "n": 3,
        "empty": "",
        "none": None,
    }
    for openmetrics in (True, False):
        text = render(_data(_gauge("g", "", [(attrs, 1)])), openmetrics)
        (sample,) = [s for s in _samples(text, openmetrics) if s.name == "g"]
        assert sample.labels == {
            "otel_scope_name": "tests",
            "otel_scope_version": "1.0",
            "http_route": nasty,
            "flag": "true",
            "codes": "[200,404]",
            "ratio": "0.5",
            "n": "3",
        }


def test_bool_and_int_attributes_with_equal_values_render_differently() -> None:
    # True == 1 in Python; the label cache must still tell them apart.
    text = render(_data(_gauge("g", "", [({"v": 1}, 1), ({"v": True}, 2)])), True)
    assert sorted(s.labels["v"] for s in _samples(text) if s.name == "g") == ["1", "true"]


def test_attribute_keys_that_sanitize_alike_are_joined() -> None:
    text = render(_data(_gauge("g", "", [({"a.b": "x", "a_b": "y"}, 1)])), True)
    (sample,) = [s for s in _samples(text) if s.name == "g"]
    assert sample.labels["a_b"] == "x;y"


def test_attributes_named_like_reserved_labels_are_renamed() -> None:
    text = render(_data(_histogram("h", [1.0], [1, 0], {"le": "x", "__name__": "y"})), True)
    bucket = next(s for s in _samples(text) if s.name == "h_seconds_bucket")
    assert bucket.labels["le"] == "1"
    assert bucket.labels["exported_le"] == "x"
    assert bucket.labels["exported___name__"] == "y"


def test_help_is_escaped() -> None:
    metric = Metric("g", 'line one\nline "two" \\ end', "", Gauge([NumberDataPoint({}, 0, T0, 1)]))
    for openmetrics in (True, False):
        text = render(_data(metric), openmetrics)
        families = parse_openmetrics(text) if openmetrics else parse_text(text)
        (fam,) = [f for f in families if f.name == "g"]
        assert fam.documentation == 'line one\nline "two" \\ end'


def test_target_info_carries_resource_attributes_and_no_job_or_instance() -> None:
    for openmetrics in (True, False):
        text = render(_data(_gauge("g", "", [({}, 1)])), openmetrics)
        samples = _samples(text, openmetrics)
        (info,) = [s for s in samples if s.name == "target_info"]
        assert info.labels == {
            "service_name": "shop",
            "service_instance_id": "i-1",
            "deployment_environment": "test",
        }
        assert info.value == 1
        assert not any({"job", "instance"} & set(s.labels) for s in samples)
    assert "# TYPE target info" in render(_data(), True)
    assert "# TYPE target_info gauge" in render(_data(), False)


def test_openmetrics_output_ends_with_eof_and_text_has_none() -> None:
    metrics = _data(_gauge("g", "", [({}, 1)]))
    om = render(metrics, True)
    assert om.endswith("\n# EOF\n")
    assert om.count("# EOF") == 1
    assert "# EOF" not in render(metrics, False)
    assert render(None, True) == "# EOF\n"
    assert render(None, False) == ""


def test_special_values() -> None:
    text = render(
        _data(
            _gauge(
                "g", "", [({"k": "nan"}, float("nan")), ({"k": "inf"}, float("inf")), ({"k": "big"}, 1e20)]
            )
        ),
        True,
    )
    values = {s.labels["k"]: s.value for s in _samples(text) if s.name == "g"}
    assert values["inf"] == float("inf")
    assert values["nan"] != values["nan"]
    assert values["big"] == 1e20
    assert 'g{otel_scope_name="tests",otel_scope_version="1.0",k="inf"} +Inf' in text


def test_same_name_from_two_scopes_is_one_family() -> None:
    data = MetricsData(
        [
            ResourceMetrics(
                RESOURCE,
                [
                    ScopeMetrics(InstrumentationScope("one"), [_gauge("g", "", [({"k": "a"}, 1)])], ""),
                    ScopeMetrics(InstrumentationScope("two"), [_gauge("g", "", [({"k": "a"}, 2)])], ""),
                ],
                "",
            )
        ]
    )
    text = render(data, True)
    assert text.count("# TYPE g gauge") == 1
    fam = _families(text)["g"]
    assert sorted((s.labels["otel_scope_name"], s.value) for s in fam.samples) == [("one", 1), ("two", 2)]


def test_repeated_series_and_type_clashes_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    data = _data(
        _gauge("g", "", [({"k": "a"}, 1)]),
        _gauge("g", "", [({"k": "a"}, 2)]),  # the same series again: first wins
        _sum("g", "", [({"k": "b"}, 3)], monotonic=False),  # up-down sum -> gauge too: merged
        _histogram("g", [1.0], [1, 0], unit=""),  # a histogram named g: clash, left out with a warning
    )
    with caplog.at_level(logging.WARNING, logger="otel_perf"):
        text = render(data, True)
    fam = _families(text)["g"]
    assert fam.type == "gauge"
    assert sorted((s.labels["k"], s.value) for s in fam.samples) == [("a", 1), ("b", 3)]
    assert "clashes with g" in caplog.text


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text; version=1.0.0", True),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text;q=0,text/plain", False),
        ("*/*", False),
        ("", False),
        (None, False),
    ],
)
def test_content_negotiation(accept: str | None, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


# --- the reader and its HTTP endpoint -------------------------------------------------------------


@pytest.mark.matrix
def test_serves_sdk_and_our_metrics_with_negotiated_format(
    reader: PrometheusMetricReader, registry: Registry
) -> None:
    hist = registry.histogram("http.server.request.duration", "s", "Duration.", ("http.route",))
    hist.record(0.02, ("/a",), trace_id=TRACE_ID, span_id=SPAN_ID)

    status, headers, body = _get(reader.url, {"Accept": PROMETHEUS_ACCEPT})
    assert status == 200
    assert headers["content-type"] == OPENMETRICS_CONTENT_TYPE
    text = body.decode()
    assert f'trace_id="{TRACE_ID:032x}"' in text
    assert "http_server_request_duration_seconds" in _families(text)

    status, headers, body = _get(reader.url)
    assert status == 200
    assert headers["content-type"] == TEXT_CONTENT_TYPE
    assert "trace_id" not in body.decode()
    assert any(s.name == "http_server_request_duration_seconds_count" for s in _samples(body.decode(), False))


@pytest.mark.matrix
def test_sdk_instruments_are_included(registry: Registry) -> None:
    reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    try:
        provider.get_meter("sdk.scope", "2.0").create_counter("jobs.done", "{job}").add(4, {"queue": "q1"})
        registry.counter("perf.slow_queries", "{query}", "Slow.", ("db.operation.name",)).add(1, ("SELECT",))
        text = _get(reader.url, {"Accept": PROMETHEUS_ACCEPT})[2].decode()
        samples = {s.name: s for s in _samples(text)}
        assert samples["jobs_done_total"].value == 4
        assert samples["jobs_done_total"].labels == {
            "otel_scope_name": "sdk.scope",
            "otel_scope_version": "2.0",
            "queue": "q1",
        }
        assert samples["perf_slow_queries_total"].labels["otel_scope_name"] == "otel_perf"
    finally:
        provider.shutdown()


@pytest.mark.matrix
def test_serves_our_metrics_when_the_sdk_has_none(registry: Registry) -> None:
    # With no SDK instrument, collect() never calls _receive_metrics; ours must still be served.
    reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    try:
        registry.counter("perf.n_plus_one", "{finding}", "N+1.", ("http.route",)).add(2, ("/a",))
        text = _get(reader.url, {"Accept": PROMETHEUS_ACCEPT})[2].decode()
        assert [s.value for s in _samples(text) if s.name == "perf_n_plus_one_total"] == [2]
        # a second scrape must not replay stale SDK data either
        text = _get(reader.url, {"Accept": PROMETHEUS_ACCEPT})[2].decode()
        assert [s.value for s in _samples(text) if s.name == "perf_n_plus_one_total"] == [2]
    finally:
        provider.shutdown()


def test_unregistered_reader_serves_our_metrics_only(registry: Registry) -> None:
    reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    try:
        registry.gauge("perf.telemetry.queue.size", "{item}", "Queue.", ("signal",)).set(3, ("traces",))
        text = _get(reader.url)[2].decode()
        assert [s.value for s in _samples(text, False) if s.name == "perf_telemetry_queue_size"] == [3]
    finally:
        reader.shutdown()


def test_scrapes_count_as_metric_exports(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    Health(registry, 60.0)
    reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    try:
        for _ in range(3):
            reader.scrape()
        text = reader.scrape(PROMETHEUS_ACCEPT)[0]
        exported = [s for s in _samples(text) if s.name == "perf_telemetry_exported_total"]
        assert [(s.labels["signal"], s.value) for s in exported] == [("metrics", 3)]

        def broken(*_args: Any) -> str:
            raise RuntimeError("render failed")

        monkeypatch.setattr("otel_perf._export.prometheus.render", broken)
        assert _get(reader.url)[0] == 500
        monkeypatch.undo()
        text = reader.scrape(PROMETHEUS_ACCEPT)[0]
        values = {s.name: s.value for s in _samples(text) if s.labels.get("signal") == "metrics"}
        assert values["perf_telemetry_export_failures_total"] == 1
        assert values["perf_telemetry_dropped_total"] == 1
        assert values["perf_telemetry_exported_total"] == 4  # the 4th scrape above; this one counts after
    finally:
        reader.shutdown()


def test_unknown_path_is_404_and_gzip_is_honoured(reader: PrometheusMetricReader, registry: Registry) -> None:
    counter = registry.counter("perf.slow_requests", "{request}", "Slow.", ("http.route",))
    for i in range(100):
        counter.add(1, (f"/route/{i}",))
    base = reader.url.rsplit("/", 1)[0]
    assert _get(base + "/other")[0] == 404
    status, headers, body = _get(reader.url, {"Accept-Encoding": "gzip", "Accept": PROMETHEUS_ACCEPT})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert (
        len([s for s in _samples(gzip.decompress(body).decode()) if s.name == "perf_slow_requests_total"])
        == 100
    )
    status, headers, body = _get(reader.url + "?x=1")
    assert status == 200
    assert "content-encoding" not in headers


def test_concurrent_scrapes_are_all_complete(reader: PrometheusMetricReader, registry: Registry) -> None:
    hist = registry.histogram("http.server.request.duration", "s", "Duration.", ("http.route",))
    for i in range(50):
        hist.record(0.01 * i, (f"/r/{i % 10}",), trace_id=i + 1, span_id=i + 1)

    def scrape(_: int) -> int:
        text = _get(reader.url, {"Accept": PROMETHEUS_ACCEPT})[2].decode()
        return sum(1 for s in _samples(text) if s.name == "http_server_request_duration_seconds_count")

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(scrape, range(32))) == {10}


def test_port_zero_log_line_and_shutdown(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="otel_perf"):
        reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    assert reader.port > 0
    assert reader.url == f"http://127.0.0.1:{reader.port}/metrics"
    assert f"serving Prometheus metrics on http://127.0.0.1:{reader.port}/metrics" in caplog.text
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
    assert _get(reader.url)[0] == 200
    provider.shutdown()
    with pytest.raises(urllib.error.URLError):
        _get(reader.url)
    reader.shutdown()  # idempotent


def test_busy_port_is_reported_not_raised(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="otel_perf"):
            reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", port)
        assert f"cannot serve Prometheus metrics on 127.0.0.1:{port}" in caplog.text
        reader.shutdown()


def test_busy_port_raises_under_our_tests(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PERF__RAISE_ERRORS", "1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", busy.getsockname()[1])


def test_a_thousand_series_render_in_a_few_milliseconds(registry: Registry) -> None:
    registry.max_series = 5000
    counter = registry.counter(
        "perf.slow_requests", "{request}", "Slow.", ("http.route", "http.request.method")
    )
    for i in range(1000):
        counter.add(i, (f"/route/{i}", "GET"))
    reader = PrometheusMetricReader(registry, RESOURCE, "127.0.0.1", 0)
    try:
        reader.scrape(PROMETHEUS_ACCEPT)  # warm the label cache, as every scrape after the first is
        best = min(timeit.repeat(lambda: reader.scrape(PROMETHEUS_ACCEPT), number=5, repeat=5)) / 5
    finally:
        reader.shutdown()
    # ~3 ms on the 2-vCPU CI machine (collection included); generous bound against noisy neighbours
    assert best < 0.025, f"a scrape of 1000 series took {best * 1000:.1f} ms"


# --- end to end: the demo app scraped by a real Prometheus -----------------------------------------

SERVICE_NAME = "otel-perf-demo"
BUDGETS_FILE = ROOT / "deploy" / "perf-budgets.yaml"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"


def _launcher() -> str:
    path = Path(sys.executable).parent / "otel-perf-instrument"
    found = str(path) if path.exists() else shutil.which("otel-perf-instrument")
    if not found:
        pytest.fail("otel-perf-instrument not installed in this environment (pip install -e '.[dev]')")
    return found


def _budgets_usable() -> bool:
    """True when ``deploy/perf-budgets.yaml`` loads with this checkout's budget parser."""
    try:
        from otel_perf._analysis.budgets import load_budgets  # type: ignore[import-not-found,unused-ignore]

        load_budgets(str(BUDGETS_FILE))
    except Exception:
        return False
    return True


@dataclass
class LiveStack:
    """The demo app (Prometheus exporter, OTLP traces to a receiver) scraped by a real Prometheus."""

    receiver: OTLPReceiver
    app: AppProcess
    prometheus: PrometheusServer
    app_url: str
    metrics_url: str
    job: str
    load_started: float
    budgets: bool
    responses: Tally[tuple[str, int]] = field(default_factory=Tally)


def drive_load(base: str, responses: Tally[tuple[str, int]], rounds: int = 2, pause: float = 2.5) -> None:
    """A bounded mix over every demo endpoint, in ``rounds`` waves ``pause`` s apart (so ``rate()``
    sees counters grow between scrapes). Slow calls run concurrently with the fast ones."""
    import httpx

    fast: list[tuple[str, str]] = [
        *[("GET", "/hello")] * 10,
        *[("GET", "/api/v1/appointments")] * 3,  # N+1
        *[("GET", "/api/v1/appointments/eager")] * 3,
        *[("GET", f"/api/v1/appointments/{i}") for i in (1, 2, 3, 99999)],  # the last one is a 404
        *[("POST", "/api/v1/appointments")] * 2,
        *[("GET", "/api/v1/boom")] * 2,  # 500
    ]
    slow: list[tuple[str, str]] = [
        ("GET", "/api/v1/slow?ms=1100"),  # slow request
        ("GET", "/api/v1/reports/busiest-days"),  # slow query
        ("GET", "/api/v1/blocking?ms=150"),  # blocks the event loop
    ]
    lock = threading.Lock()

    def call(client: httpx.Client, method: str, path: str) -> None:
        if method == "POST":
            resp = client.post(base + path, json={"patient_id": 1, "reason": "load"})
        else:
            resp = client.get(base + path)
        with lock:
            responses[(path.partition("?")[0], resp.status_code)] += 1

    # No keep-alive: uvicorn drops the connection after an unhandled exception (/boom), and a reused
    # connection would then fail the next request.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=20.0, trust_env=False, limits=limits) as client, ThreadPoolExecutor(4) as pool:
        for wave in range(rounds):
            if wave:
                time.sleep(pause)
            futures = [pool.submit(call, client, m, p) for m, p in slow]
            # Upstream quota 5 per minute: 6 calls, then 2, so 429s (-> 503) happen in both waves and
            # rate() sees their series grow (a series born between two scrapes has no rate yet).
            forecasts = [("GET", "/api/v1/forecast")] * (6 if wave == 0 else 2)
            for method, path in [*fast, *forecasts]:
                call(client, method, path)
            for future in futures:
                future.result()


@contextlib.contextmanager
def live_demo_stack(*, rules: bool = False) -> Iterator[LiveStack]:
    """Start receiver, demo app and Prometheus (optionally with the deploy/ rule files), drive load,
    wait until Prometheus scraped it; yield the :class:`LiveStack`; stop everything after."""
    from support.procs import skip_or_fail

    if prometheus_path() is None:
        skip_or_fail("prometheus binary not installed (Debian package prometheus)")
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(OTLPReceiver())
        app_port, metrics_port = free_port(), free_port()
        budgets = _budgets_usable()
        env = {
            **receiver.exporter_env(),
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_PERF__RAISE_ERRORS": "1",
            "DEMO_UPSTREAM_LIMIT": "5",
            "DEMO_SEED": "40",
        }
        if budgets:
            env["OTEL_PERF_BUDGETS"] = str(BUDGETS_FILE)
        app = stack.enter_context(
            AppProcess(
                [
                    _launcher(),
                    "uvicorn",
                    "otel_perf._demo.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(app_port),
                ],
                env,
                name="demo",
            )
        )
        stack.callback(lambda: print(app.describe()))  # shown by pytest when a test fails
        app_url = f"http://127.0.0.1:{app_port}"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        # Prometheus starts while the app imports; it retries the scrape until the app answers.
        config = scrape_config([f"127.0.0.1:{metrics_port}"], job=SERVICE_NAME, scrape_interval="1s")
        if rules:
            config["rule_files"] = [str(p) for p in sorted(RULES_DIR.glob("*.yml"))]
        prometheus = start_prometheus(config=config)
        stack.callback(prometheus.stop)
        app.wait_http(f"{app_url}/hello", timeout=60)
        assert http_get(metrics_url)[0] == 200, app.describe()
        prometheus.wait_for_target_up(timeout=30)

        live = LiveStack(receiver, app, prometheus, app_url, metrics_url, SERVICE_NAME, time.time(), budgets)
        drive_load(app_url, live.responses)
        # Two more scrapes after the last request, so every counter's last increase is in the TSDB.
        deadline = time.monotonic() + 20
        want = sum(live.responses.values())
        series = (
            f'http_server_request_duration_seconds_count{{job="{SERVICE_NAME}",http_route!~"/upstream.*"}}'
        )
        query = f"sum({series})"
        while (prometheus.query_value(query) or 0) < want:
            assert time.monotonic() < deadline, f"Prometheus never saw {want} requests\n{app.describe()}"
            time.sleep(0.25)
        time.sleep(2.2)
        yield live


@pytest.fixture(scope="module")
def live_stack() -> Iterator[LiveStack]:
    """One live stack for the end-to-end tests of this module."""
    with live_demo_stack() as live:
        yield live


@pytest.mark.slow
@pytest.mark.prometheus
def test_load_hit_every_demo_behaviour(live_stack: LiveStack) -> None:
    statuses = {status for (_, status) in live_stack.responses}
    assert {200, 201, 404, 500, 503} <= statuses, live_stack.responses
    assert live_stack.responses[("/api/v1/forecast", 503)] >= 1  # upstream 429 reached


@pytest.mark.slow
@pytest.mark.prometheus
def test_prometheus_exemplars_carry_trace_ids_the_app_exported(live_stack: LiveStack) -> None:
    prom, receiver = live_stack.prometheus, live_stack.receiver
    groups = prom.exemplars(
        f'http_server_request_duration_seconds_bucket{{job="{live_stack.job}"}}',
        live_stack.load_started - 60,
        time.time() + 60,
    )
    exemplars = [(g["seriesLabels"], e) for g in groups for e in g["exemplars"]]
    assert exemplars, "Prometheus stored no exemplars (scraped without OpenMetrics?)"
    wanted = {(e["labels"]["trace_id"], e["labels"]["span_id"]) for _, e in exemplars}
    deadline = time.monotonic() + 10  # spans are batched every 100 ms; give the exporter time
    while not wanted <= {(s.trace_id, s.span_id) for s in receiver.spans(kind="SERVER")}:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    server_spans = {(s.trace_id, s.span_id): s for s in receiver.spans(kind="SERVER")}
    for series, ex in exemplars:
        key = (ex["labels"]["trace_id"], ex["labels"]["span_id"])
        assert key in server_spans, f"exemplar {ex} on {series} is not a SERVER span the app exported"
        span = server_spans[key]
        # the exemplar sits on the series of its own request
        assert span.attributes.get("http.route") == series.get("http_route"), (span, series)
        assert float(ex["value"]) <= float(series["le"])  # "+Inf" parses as inf
    routes = {series["http_route"] for series, _ in exemplars}
    assert {"/hello", "/api/v1/appointments", "/api/v1/slow", "/api/v1/boom"} <= routes, routes


@pytest.mark.slow
@pytest.mark.prometheus
def test_prometheus_sees_our_metrics_under_collector_names(live_stack: LiveStack) -> None:
    prom = live_stack.prometheus
    job = live_stack.job
    slow = prom.query(f'perf_slow_requests_total{{job="{job}",http_route="/api/v1/slow"}}')
    assert slow
    assert float(slow[0]["value"][1]) >= 2
    n_plus_one = prom.query(f'perf_n_plus_one_total{{job="{job}",http_route="/api/v1/appointments"}}')
    assert n_plus_one
    assert float(n_plus_one[0]["value"][1]) >= 6
    assert prom.query(f'target_info{{job="{job}",service_name="{job}"}}')
    assert prom.query(f'process_cpu_time_seconds_total{{job="{job}"}}')
    # Prometheus, not the app, set job and instance.
    (up,) = prom.query(f'up{{job="{job}"}}')
    assert up["metric"]["instance"] == live_stack.metrics_url.split("/")[2]
    assert not prom.query(f'{{job="{job}",exported_job!=""}}')
