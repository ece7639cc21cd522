"""OTLP/HTTP without protobuf, against the SDK's exporters it stands in for.

Our metric and log encoders are compared byte for byte with the SDK's encoders on real SDK data
and on hand-made edge points; our exporters and the SDK's send the same batches to a real
receiver with the same compression and headers; failures are reported the same way; a process
under the launcher never imports protobuf, and with the probe forced off it gets the SDK's
exporters back.  (Span encoding is compared in tests/test_fast_path.py.)  Also: which transport
the exporters get.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics._internal.exemplar import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
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

from otel_perf._export import otlp_http
from otel_perf._export.otlp_logs import LogEncoder
from otel_perf._export.otlp_metrics import MetricEncoder

needs_lean = pytest.mark.skipif(
    not otlp_http._lean_available(),
    reason="this OTLP exporter package predates the SDK's protobuf-free HTTP client (1.45+): "
    "its own exporters are used",
)


def _sdk_metric_bytes(data: MetricsData) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return encode_metrics(data).SerializeToString()  # type: ignore[no-any-return]


def _sdk_log_bytes(batch: Any) -> bytes:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    return encode_logs(batch).SerializeToString()  # type: ignore[no-any-return]


# --- metrics ----------------------------------------------------------------------------------


def _recorded_metrics(temporality: AggregationTemporality) -> MetricsData:
    """Every instrument kind recorded through the SDK, exemplars included (inside a sampled span)."""
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import Counter, MeterProvider
    from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.trace import TracerProvider

    reader = InMemoryMetricReader(
        preferred_temporality={Counter: temporality, HistogramInstrument: temporality}
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource({"service.name": "shop", "host.cores": 2}, schema_url="https://r/1.0"),
        views=[View(instrument_name="exp.*", aggregation=ExponentialBucketHistogramAggregation())],
        shutdown_on_exit=False,
    )
    meter = provider.get_meter("shop.orders", "1.0", schema_url="https://s/1.0", attributes={"team": "a"})
    other = provider.get_meter("shop.stock")
    counter = meter.create_counter("orders", unit="1", description="orders taken")
    floats = meter.create_counter("revenue")
    level = other.create_up_down_counter("queue.depth")
    latency = meter.create_histogram("latency", unit="s")
    spread = meter.create_histogram("exp.latency")
    other.create_observable_gauge(
        "temperature",
        callbacks=[lambda _: [Observation(3, {"rack": 1}), Observation(2.5, {"ok": True, "ids": [1, 2]})]],
    )
    with TracerProvider().get_tracer("t").start_as_current_span("request"):
        counter.add(5, {"http.route": "/orders/{id}", "code": 200})
        floats.add(2.5)
        level.add(-3, {"ratio": 1.5})
        for value in (0.001, 0.2, 5, 1000, 0, 7.25):
            latency.record(value, {"http.route": "/orders/{id}"})
            spread.record(value, {"http.route": "/orders/{id}"})
    latency.record(3)  # no span: no exemplar from the trace-based filter
    data = reader.get_metrics_data()
    assert data is not None
    provider.shutdown()
    return data


@pytest.mark.parametrize("temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA])
def test_recorded_metrics_encode_to_the_sdk_bytes(temporality: AggregationTemporality) -> None:
    data = _recorded_metrics(temporality)
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points]  # fmt: skip
    assert len(points) == 8
    assert any(getattr(p, "exemplars", None) for p in points)  # the exemplar fields are exercised
    encoded, count = MetricEncoder().encode(data)
    assert encoded == _sdk_metric_bytes(data)
    assert count == 8


def _exemplar(value: float, traced: bool) -> Exemplar:
    return Exemplar(
        {"user": "u1"} if traced else {},
        value,
        1_700_000_000_000_000_123,
        0x00F067AA0BA902B7 if traced else None,
        0x4BF92F3577B34DA6A3CE929D0E0E4736 if traced else None,
    )


def _edge_metrics() -> MetricsData:
    """Points the SDK's aggregations rarely make: negative scales, offsets and buckets, int
    exemplars, a metric with no points, attributes of every type and one that cannot be encoded."""
    start, now = 1_700_000_000_000_000_000, 1_700_000_060_000_000_000
    attrs = {"s": "x", "i": -7, "b": False, "f": 0.0, "seq": ["a", "b"], "bad": object()}
    exponential = ExponentialHistogramDataPoint(
        attrs, start, now, count=12, sum=-40.5, scale=-3, zero_count=2,
        positive=Buckets(offset=-2, bucket_counts=[1, 0, 300]),
        negative=Buckets(offset=5, bucket_counts=[4, 5]),
        flags=1, min=-30.0, max=12.0, exemplars=[_exemplar(3, False), _exemplar(-2.5, True)],
    )  # fmt: skip
    empty_buckets = ExponentialHistogramDataPoint(
        {}, start, now, count=0, sum=0, scale=0, zero_count=0,
        positive=Buckets(0, []), negative=Buckets(0, []), flags=0, min=0, max=0,
    )  # fmt: skip
    histogram = HistogramDataPoint(
        {"route": "/"}, start, now, count=3, sum=0.0, bucket_counts=[0, 3, 0],
        explicit_bounds=[0.5, 1.0], min=0.7, max=0.9, exemplars=[_exemplar(1, True)],
    )  # fmt: skip
    delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    gauge = Gauge([NumberDataPoint({}, 0, now, -(2**63)), NumberDataPoint({}, 0, now, -0.0)])
    metrics = [
        Metric("exp", "", "ms", ExponentialHistogram([exponential, empty_buckets], delta)),
        Metric("hist", "d", "", Histogram([histogram], cumulative)),
        Metric("gauge", "", "", gauge),
        Metric("no.points", "nothing yet", "", Sum([], cumulative, True)),
        Metric("updown", "", "", Sum([NumberDataPoint({"x": 1}, start, now, 12)], delta, False)),
    ]
    scope, unnamed = InstrumentationScope("edge", None, None, None), InstrumentationScope("")
    return MetricsData(
        [
            ResourceMetrics(Resource({}), [ScopeMetrics(scope, metrics, "")], ""),
            ResourceMetrics(Resource({"r": 2}), [ScopeMetrics(unnamed, metrics[:1], "")], ""),
        ]
    )


def test_edge_points_encode_to_the_sdk_bytes(caplog: pytest.LogCaptureFixture) -> None:
    data = _edge_metrics()
    with caplog.at_level(logging.ERROR):
        encoded, count = MetricEncoder().encode(data)
    assert encoded == _sdk_metric_bytes(data)
    assert count == 8
    assert "Failed to encode key bad" in caplog.text  # skipped and said, as the SDK does


def test_an_unsupported_data_type_is_left_out_with_the_sdks_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Summary:
        def __init__(self) -> None:
            self.data_points = [NumberDataPoint({}, 0, 1, 1)]

    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(
        InstrumentationScope("s"), [Metric("odd", "", "", Summary())], "")], "")])  # type: ignore[arg-type]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        encoded, count = MetricEncoder().encode(data)
    ours = [r.getMessage() for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sdk = _sdk_metric_bytes(data)
    assert encoded == sdk and count == 0
    assert ours == [r.getMessage() for r in caplog.records] == ["unsupported data type Summary"]


@pytest.mark.parametrize(
    ("value", "exemplar", "error"),
    [(1, "3", "Exemplar value must be an int or float"), (True, None, "Expected an int, got a boolean"),
     (1, True, "Expected an int, got a boolean")],
)  # fmt: skip
def test_a_point_the_sdk_cannot_encode_fails_ours_too(value: Any, exemplar: Any, error: str) -> None:
    exemplars = [] if exemplar is None else [Exemplar({}, exemplar, 1, None, None)]
    point = NumberDataPoint({}, 0, 1, value, exemplars=exemplars)
    data = MetricsData([ResourceMetrics(Resource({}), [ScopeMetrics(
        InstrumentationScope("s"), [Metric("m", "", "", Gauge([point]))], "")], "")])  # fmt: skip
    with pytest.raises(Exception, match=error):
        _sdk_metric_bytes(data)
    with pytest.raises((ValueError, TypeError), match=error):
        MetricEncoder().encode(data)


# --- logs ---------------------------------------------------------------------------------------


def _recording_provider(**kwargs: Any) -> tuple[Any, Any]:
    """A LoggerProvider whose records are kept in memory, and the exporter that keeps them."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    try:
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as Memory
    except ImportError:  # older SDKs
        from opentelemetry.sdk._logs.export import InMemoryLogExporter as Memory  # type: ignore[attr-defined,no-redef]

    exporter = Memory()
    provider = LoggerProvider(shutdown_on_exit=False, **kwargs)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider, exporter


def _emitted_logs() -> list[Any]:
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perf._setup.providers import official_log_handler

    provider, exporter = _recording_provider(resource=Resource({"service.name": "shop"}, schema_url="https://r/1.0"))
    log = logging.getLogger("test_otlp_http.shop")
    log.handlers[:] = [official_log_handler()(logger_provider=provider)]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    with TracerProvider().get_tracer("t").start_as_current_span("request"):
        log.info("order %s paid", 42, extra={"order.id": 42, "ratio": 1.5, "ok": True, "tags": ["a", "b"]})
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("payment failed")
    log.warning("no span here")
    events = provider.get_logger("shop.events", "2.0", schema_url="https://s/1.0",
                                 attributes={"team": "a"})  # fmt: skip
    events.emit(  # type: ignore[call-arg]
        body={"items": [1, 2.5, None, b"\x00"], "nested": {"x": True}},
        severity_number=SeverityNumber.WARN,
        event_name="order.refund",
        attributes={"k": "v"},
    )
    events.emit(body=None)  # type: ignore[call-arg]
    events.emit(body=b"raw", severity_text="custom")  # type: ignore[call-arg]
    events.emit(body={"k": {"": 1}})  # type: ignore[call-arg]  # an empty key in a map
    batch = list(exporter.get_finished_logs())
    log.handlers[:] = []
    return batch


def test_log_records_encode_to_the_sdk_bytes() -> None:
    batch = _emitted_logs()
    assert len(batch) == 7
    assert LogEncoder().encode(batch) == _sdk_log_bytes(batch)


def test_unique_large_attribute_values_are_not_kept_by_the_encoder() -> None:
    """``log.exception`` gives every record its own stack trace: the encoder's cache of encoded
    pairs keeps what repeats (bounded in entries and bytes), not kilobytes that never come back."""
    from otel_perf._export import otlp_spans

    provider, exporter = _recording_provider()
    logger = provider.get_logger("shop")
    encoder, sdk_equal = LogEncoder(), True
    for first in range(0, 2000, 250):
        for i in range(first, first + 250):
            logger.emit(body="failed", attributes={  # type: ignore[call-arg]
                "exception.stacktrace": f"order {i}\n" + "x" * 6000,
                "exception.message": f"bad order {i} " + "y" * 300,
                "code.function": "pay",
            })  # fmt: skip
        batch = list(exporter.get_finished_logs())
        exporter.clear()
        sdk_equal = sdk_equal and encoder.encode(batch) == _sdk_log_bytes(batch)
    assert sdk_equal
    pairs = encoder._attributes._pairs  # type: ignore[attr-defined]
    kept = sum(len(b) for by_key in pairs.values() for by_value in by_key.values() for b in by_value.values())
    assert kept <= otlp_spans.MAX_CACHED_BYTES * len(pairs)
    assert not any("exception.stacktrace" in by_key for by_key in pairs.values())  # never cached
    assert any("code.function" in by_key for by_key in pairs.values())  # what repeats is


# --- the exporters at a real receiver -------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.lower().endswith("_proxy") or key.startswith("OTEL_EXPORTER_OTLP") or "CREDENTIAL" in key:
            monkeypatch.delenv(key)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def _spans() -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "shop"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop", "1.0")
    with (
        tracer.start_as_current_span("GET /orders/{id}", attributes={"http.route": "/orders/{id}"}),
        tracer.start_as_current_span("SELECT orders", attributes={"db.system.name": "sqlite"}),
    ):
        pass
    return list(memory.get_finished_spans())


def _sdk_exporters() -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # on the transport ours get (http.client for plain http: compared with urllib3's below)
    sdk = otlp_http.sdk_exporter
    return {"traces": sdk(OTLPSpanExporter, "traces"), "metrics": sdk(OTLPMetricExporter, "metrics"),
            "logs": sdk(OTLPLogExporter, "logs")}  # fmt: skip


def _ours() -> dict[str, Any]:
    return {"traces": otlp_http.span_exporter(), "metrics": otlp_http.metric_exporter(),
            "logs": otlp_http.log_exporter()}  # fmt: skip


_VARYING = ("host", "content-length")


def _received(receiver: Any) -> dict[str, Any]:
    strip = lambda items: sorted(repr({k: v for k, v in vars(i).items() if k != "export"}) for i in items)  # noqa: E731
    return {
        "traces": strip(receiver.spans()),
        "metrics": strip(receiver.metric_points()),
        "logs": strip(receiver.logs()),
        "headers": sorted(
            (r.path, r.body_bytes, sorted((k, v) for k, v in r.headers.items() if k not in _VARYING))
            for r in receiver.requests()
        ),
    }


@needs_lean
@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_our_exporters_deliver_what_the_sdks_deliver(
    otlp_receiver: Any, clean_env: pytest.MonkeyPatch, compression: str
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    clean_env.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    clean_env.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=checkout,x-tenant=acme")
    spans, metrics, logs = _spans(), _recorded_metrics(AggregationTemporality.CUMULATIVE), _emitted_logs()
    results = []
    for exporters in (_sdk_exporters(), _ours()):
        otlp_receiver.clear()
        assert exporters["traces"].export(spans).name == "SUCCESS"
        assert exporters["metrics"].export(metrics).name == "SUCCESS"
        assert exporters["logs"].export(logs).name == "SUCCESS"
        for exporter in exporters.values():
            exporter.shutdown()
        results.append(_received(otlp_receiver))
    sdk, ours = results
    assert ours == sdk
    assert len(ours["traces"]) == 2 and len(ours["metrics"]) == 8 and len(ours["logs"]) == 7
    headers = dict(ours["headers"][0][2])
    assert headers["x-team"] == "checkout" and headers["content-type"] == "application/x-protobuf"
    assert headers.get("content-encoding") == (None if compression == "none" else "gzip")
    assert {type(e).__module__ for e in _ours().values()} == {"otel_perf._export.otlp_http"}


@needs_lean
def test_failures_are_reported_as_the_sdks_are(
    otlp_receiver: Any, clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    otlp_receiver.mode = "status:400"  # not retryable: one attempt
    spans = _spans()
    said = []
    for exporter in (_sdk_exporters()["traces"], otlp_http.span_exporter()):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            refused = exporter.export(spans)
            exporter.shutdown()
            exporter.shutdown()
            after = exporter.export(spans)
        logged = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
        said.append([refused.name, after.name, *logged])
    assert said[1] == said[0]
    assert said[0][:2] == ["FAILURE", "FAILURE"]
    assert ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "WARNING",
            "Exporter already shutdown, ignoring batch") in said[0]  # fmt: skip


@needs_lean
def test_the_metric_exporters_own_metrics_go_where_set_meter_provider_says(
    otlp_receiver: Any, clean_env: pytest.MonkeyPatch
) -> None:
    """``set_meter_provider`` (the SDK metric exporter's method): its otel.sdk.exporter.* metrics
    go to that provider, the same points as the SDK exporter's."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    clean_env.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    metrics = _recorded_metrics(AggregationTemporality.CUMULATIVE)
    seen = []
    for exporter in (_sdk_exporters()["metrics"], otlp_http.metric_exporter()):
        reader = InMemoryMetricReader()
        exporter.set_meter_provider(MeterProvider(metric_readers=[reader], shutdown_on_exit=False))
        assert exporter.export(metrics).name == "SUCCESS"
        exporter.shutdown()
        data = reader.get_metrics_data()
        points = {
            (m.name, tuple(sorted((k, v) for k, v in p.attributes.items() if k != "otel.component.name")),
             getattr(p, "value", None), getattr(p, "count", None))
            for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics
            for m in sm.metrics for p in m.data.data_points
        }  # fmt: skip
        seen.append(points)
    assert seen[0] and seen[1] == seen[0]
    assert any(name.startswith("otel.sdk.exporter.") for name, *_ in seen[1])


# --- no protobuf in the process, and the fallback ---------------------------------------------------

_PROBE = r"""
import json, logging, sys, time
from opentelemetry import trace
with trace.get_tracer("shop").start_as_current_span("checkout"):
    logging.getLogger("shop").warning("paid-line")
time.sleep(1.2)  # spans and logs exported (100 ms), metrics twice (500 ms)
print(json.dumps({
    "protobuf": sorted(m for m in sys.modules if m.startswith(("google.protobuf", "opentelemetry.proto"))),
}))
"""


@pytest.mark.matrix
@pytest.mark.parametrize("probes_off", ["", "otlp-encoder"])
def test_a_bootstrapped_process_imports_no_protobuf(
    probes_off: str, otlp_receiver: Any, tmp_path: Path
) -> None:
    script = tmp_path / "shop.py"
    script.write_text(_PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | otlp_receiver.exporter_env()
    env |= {"OTEL_SERVICE_NAME": "shop", "OTEL_LOGS_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_PERF__PROBES_OFF": probes_off, "OTEL_PERF_SHUTDOWN_TIMEOUT": "5"}  # fmt: skip
    launcher = Path(sys.executable).with_name("otel-perf-instrument")
    done = subprocess.run([str(launcher), sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])["protobuf"]
    if probes_off or not otlp_http._lean_available():
        assert "google.protobuf" in loaded  # the SDK's exporters, as before
    else:
        assert loaded == []
    # every signal arrived, whichever exporters sent it
    span = otlp_receiver.wait_for_spans(name="checkout")[0]
    assert otlp_receiver.wait_for_logs("paid-line")[0].trace_id == span.trace_id
    assert otlp_receiver.wait_for(
        lambda: {m for m in otlp_receiver.metric_names() if m.startswith("process.")}, what="process metrics"
    )


# --- the transport ---------------------------------------------------------------------------------


def _exporter_has(module: str, name: str) -> bool:
    import importlib

    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


#: the SDK exporter's pluggable transports came with exporter 1.45; before, the stock one is used
needs_transports = pytest.mark.skipif(
    not _exporter_has("opentelemetry.exporter.http.transport._base", "BaseHTTPTransport"),
    reason="this OTLP exporter has no pluggable transport (1.45+): the default one is used",
)


@needs_transports
def test_lean_transport_for_plain_http(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert type(otlp_http.lean_http_transport("traces")).__name__ == "StdlibHTTPTransport"


def _answer(transport: Any, url: str, timeout: float = 5.0) -> tuple[Any, ...]:
    result = transport.request("POST", url, headers={"Content-Type": "application/x-protobuf"},
                               data=b"", timeout=timeout)  # fmt: skip
    return (
        result.status_code,
        result.reason,
        result.headers().get("Retry-After"),
        result.headers().get("retry-after"),
        result.error is not None,
        transport.is_connection_error(result.error),
    )


@needs_transports
def test_the_stdlib_transport_answers_as_the_sdks_urllib3_transport(otlp_receiver: Any) -> None:
    """Status, reason, Retry-After (any case) and what counts as a connection error (retried)."""
    from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport

    from otel_perf._export.otlp_transport import StdlibHTTPTransport
    from support.otlp_receiver import closed_port

    url = otlp_receiver.url("traces")
    cases: list[tuple[str, str, float]] = [
        ("ok", url, 5.0),
        ("status:400", url, 5.0),
        ("status:503", url, 5.0),  # with Retry-After
        ("stall", url, 0.3),  # no answer within the timeout
        ("ok", f"http://127.0.0.1:{closed_port()}/v1/traces", 5.0),  # refused
    ]
    otlp_receiver.retry_after = 7
    answers = {}
    for name, transport in (("urllib3", Urllib3HTTPTransport()), ("stdlib", StdlibHTTPTransport())):
        rows = []
        for mode, target, timeout in cases:
            otlp_receiver.mode = mode
            rows.append(_answer(transport, target, timeout))
            otlp_receiver.release_stalled()
        rows.append(_answer(transport, url))  # the connection after all of that
        otlp_receiver._server.cut_connections()  # the server closes the idle kept-alive connection
        time.sleep(0.1)
        rows.append(_answer(transport, url))  # noticed before reuse: a new one, answered
        transport.close()
        answers[name] = rows
    assert answers["stdlib"] == answers["urllib3"]
    ok, refused_status, unavailable, stalled, refused, after, after_cut = answers["stdlib"]
    assert ok[0] == 200 and refused_status[0] == 400
    assert unavailable[:4] == (503, "Service Unavailable", "7", "7")
    assert stalled[4:] == (True, False)  # timed out waiting: not retried by the SDK's client
    assert refused[4:] == (True, True)  # could not connect: retried
    assert after[0] == after_cut[0] == 200


@needs_transports
def test_the_stdlib_transport_keeps_its_connection(otlp_receiver: Any) -> None:
    from otel_perf._export.otlp_transport import StdlibHTTPTransport

    transport = StdlibHTTPTransport()
    url, headers = otlp_receiver.url("traces"), {"Content-Type": "application/x-protobuf"}
    for _ in range(3):
        assert transport.request("POST", url, data=b"", timeout=5, headers=headers).status_code == 200
    connection = transport._connection
    assert connection is not None
    transport.request("POST", url, data=b"", timeout=5, headers=headers)
    assert transport._connection is connection  # kept alive, reused
    transport.close()
    assert transport._connection is None


class _EarlyAnswer:
    """A server that answers 413 once it has a request's headers and closes without reading the
    body, as a collector with a body-size limit does (loopback; a daemon thread per test)."""

    def __init__(self) -> None:
        import socket
        import threading

        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/traces"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            with client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                head = b""
                while b"\r\n\r\n" not in head and (chunk := client.recv(4096)):
                    head += chunk
                client.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")  # fmt: skip

    def close(self) -> None:
        self._listener.close()


@needs_transports
def test_an_answer_before_the_body_is_in_is_read_as_urllib3_reads_it() -> None:
    """The send fails (the server closed), but its 413 came first: the SDK's client must see the
    413 (not retried), not a broken connection retried with the whole body for the timeout."""
    from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport

    from otel_perf._export.otlp_transport import StdlibHTTPTransport

    server = _EarlyAnswer()
    body = b"x" * (16 * 1024 * 1024)  # more than the socket buffers hold
    answers = {}
    try:
        for name, transport in (("urllib3", Urllib3HTTPTransport()), ("stdlib", StdlibHTTPTransport())):
            result = transport.request("POST", server.url, data=body, timeout=10,
                                       headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
            answers[name] = (result.status_code, result.error, transport.is_connection_error(result.error))
            transport.close()
    finally:
        server.close()
    assert answers["stdlib"] == answers["urllib3"] == (413, None, False)


@needs_transports
def test_closing_does_not_wait_for_the_request_in_flight(otlp_receiver: Any) -> None:
    """An exporter's shutdown closes its transport; the export thread may be waiting on a slow
    collector (as urllib3's pool, close drops idle connections and the busy one when it is done)."""
    import threading

    from otel_perf._export.otlp_transport import StdlibHTTPTransport

    transport = StdlibHTTPTransport()
    otlp_receiver.mode = "stall"
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(transport.request(
            "POST", otlp_receiver.url("traces"), data=b"", timeout=30,
            headers={"Content-Type": "application/x-protobuf"})),
        daemon=True,
    )  # fmt: skip
    waiting.start()
    otlp_receiver.wait_for(lambda: otlp_receiver.request_count() == 1, what="the request")
    transport.close()  # returns with the request still waiting for its answer
    assert waiting.is_alive() and not answers
    otlp_receiver.release_stalled()
    waiting.join(10)
    assert answers and answers[0].status_code == 200  # the request in flight is answered
    assert transport._connection is None  # and its connection closed after it


@needs_transports
def test_a_connection_on_a_descriptor_above_1024_is_kept(otlp_receiver: Any) -> None:
    """select() cannot watch descriptors from 1024 on; a busy server's exporter socket gets one."""
    import resource

    from otel_perf._export.otlp_transport import StdlibHTTPTransport

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard if hard != resource.RLIM_INFINITY else 4096) < 1200:
        pytest.skip(f"this machine allows {hard} open files; the test needs 1,200")
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    transport = StdlibHTTPTransport()
    headers = {"Content-Type": "application/x-protobuf"}
    try:
        url = otlp_receiver.url("traces")
        assert transport.request("POST", url, data=b"", timeout=5, headers=headers).status_code == 200
        connection = transport._connection
        assert connection is not None and connection.sock.fileno() >= 1024
        for _ in range(3):
            assert transport.request("POST", url, data=b"", timeout=5, headers=headers).status_code == 200
        assert transport._connection is connection  # reused, not reopened for every export
    finally:
        transport.close()
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4318/v1/traces"),
        ("HTTP_PROXY", "http://proxy:3128"),
        ("all_proxy", "http://proxy:3128"),
        ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "pkg:provider"),
        ("NETRC", "/etc/netrc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:secret@127.0.0.1:4318"),  # requests: Basic auth
    ],
)
def test_default_transport_otherwise(clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    clean_env.setenv(variable, value)
    assert otlp_http.lean_http_transport("traces") is None


def test_default_transport_with_a_netrc_file(clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    (tmp_path / ".netrc").write_text("machine collector login a password b\n")
    assert otlp_http.lean_http_transport("traces") is None


@needs_transports
def test_a_forked_child_exports_while_the_parent_waits_on_its_request(otlp_receiver: Any) -> None:
    """A fork while an export thread of the parent holds the transport, mid-request (gunicorn forks
    workers from a master that exports): the child's transport has a lock and a connection of its own."""
    import threading

    from otel_perf._export.otlp_transport import StdlibHTTPTransport
    from support.otlp_receiver import OTLPReceiver

    transport = StdlibHTTPTransport()
    headers = {"Content-Type": "application/x-protobuf"}
    otlp_receiver.mode = "stall"
    waiting = threading.Thread(
        target=transport.request, args=("POST", otlp_receiver.url("traces")),
        kwargs={"data": b"", "timeout": 30, "headers": headers}, daemon=True,
    )  # fmt: skip
    with OTLPReceiver() as other:
        waiting.start()
        otlp_receiver.wait_for(lambda: otlp_receiver.request_count() == 1, what="the parent's request")
        assert transport._lock.locked() and transport._connection is not None
        parents_socket = transport._connection.sock.fileno()
        pid = os.fork()
        if pid == 0:  # the child: one export, then out, whatever happens
            code = 1
            try:
                try:
                    os.fstat(parents_socket)
                    os._exit(3)  # the parent's connection stays open in the child
                except OSError:
                    pass
                answer = transport.request("POST", other.url("traces"), data=b"", timeout=5, headers=headers)
                code = 0 if answer.status_code == 200 else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 15
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        otlp_receiver.release_stalled()
        waiting.join(10)
        assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, "the child could not export"
        assert other.request_count() == 1
    transport.close()


def _sockets_to(port: int) -> list[int]:
    """This process's descriptors of TCP sockets connected to ``port`` on loopback."""
    import socket

    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            probe = socket.socket(fileno=os.dup(int(name)))
        except OSError:  # not a socket (or gone)
            continue
        with probe, contextlib.suppress(OSError):
            if probe.type == socket.SOCK_STREAM and probe.getpeername()[1] == port:
                found.append(int(name))
    return found


class _ClosingAnswer:
    """Answers ``Connection: close`` in two parts: the head and half the body, then (when the
    test says) the rest; the client reads the body on a socket its connection has let go of."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sent_head, self.go_on = threading.Event(), threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/traces"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        client, _ = self._listener.accept()
        with client, client.makefile("rb") as stream:
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            stream.read(length)
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nok")
            self.sent_head.set()
            self.go_on.wait(20)
            with contextlib.suppress(OSError):
                client.sendall(b"ok")

    def close(self) -> None:
        self.go_on.set()
        self._listener.close()


@needs_transports
def test_a_forked_child_closes_the_socket_a_closing_answer_holds() -> None:
    """A fork while the parent reads a ``Connection: close`` answer: ``http.client`` has handed
    the socket to the response (the connection's is None), and the child must close it all the same."""
    import threading

    from otel_perf._export.otlp_transport import StdlibHTTPTransport

    server = _ClosingAnswer()
    transport = StdlibHTTPTransport()
    answers: list[Any] = []
    reading = threading.Thread(target=lambda: answers.append(transport.request(
        "POST", server.url, data=b"x", timeout=30, headers={"Content-Type": "application/x-protobuf"})),
        daemon=True)  # fmt: skip
    try:
        reading.start()
        assert server.sent_head.wait(10)
        deadline = time.monotonic() + 10
        while (
            transport._connection is None or transport._connection.sock is not None
        ) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the response holds the socket alone
        assert transport._connection is not None and transport._connection.sock is None
        port = int(server.url.split(":")[2].split("/")[0])
        assert len(_sockets_to(port)) == 1  # the parent's, held by the response
        pid = os.fork()
        if pid == 0:
            os._exit(3 if _sockets_to(port) else 0)  # 3: still open in the child
        _, status = os.waitpid(pid, 0)
    finally:
        server.close()
        reading.join(10)
    assert os.waitstatus_to_exitcode(status) == 0, "the child kept the parent's socket open"
    assert answers and answers[0].status_code == 200 and answers[0].content() == b"okok"


@needs_lean
def test_exporters_the_sdk_pieces_do_not_fit_are_the_sdks(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A release that kept the names the probe checks but changed what they take: one warning each,
    and the SDK's own exporters."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    def changed(self: Any, *args: Any) -> None:
        raise TypeError("_OTLPHTTPClient() got an unexpected keyword argument 'kind'")

    clean_env.setattr(otlp_http._Sender, "__init__", changed)
    with caplog.at_level(logging.WARNING, logger="otel_perf"):
        exporters = _ours()
    assert [type(e) for e in exporters.values()] == [OTLPSpanExporter, OTLPMetricExporter, OTLPLogExporter]
    assert [r.getMessage().split(" exporter could not")[0] for r in caplog.records] == [
        f"otel-perf: the OTLP/HTTP {signal}" for signal in ("traces", "metrics", "logs")
    ]
    for exporter in exporters.values():
        exporter.shutdown()
