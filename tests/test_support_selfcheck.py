"""Proof that the shared test support works: the receiver decodes what the real OTLP/HTTP exporters
send, fault modes behave, child processes are isolated and cleaned up, and the PostgreSQL and
Prometheus fixtures give working servers."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

import support
from support import AppProcess, OTLPReceiver, PrometheusServer, closed_port, free_port

AppFactory = Callable[..., AppProcess]
PrometheusFactory = Callable[..., PrometheusServer]

# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def _tracer_provider(receiver: OTLPReceiver, **exporter_kwargs: object) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "selfcheck"}))
    exporter = OTLPSpanExporter(endpoint=receiver.url("traces"), **exporter_kwargs)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _meter_provider(receiver: OTLPReceiver, instance: str = "instance-1") -> MeterProvider:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=receiver.url("metrics")), export_interval_millis=3_600_000
    )
    resource = Resource.create({"service.name": "selfcheck", "service.instance.id": instance})
    return MeterProvider(metric_readers=[reader], resource=resource)


def _post(
    receiver: OTLPReceiver,
    path: str = "/v1/traces",
    body: bytes = b"",
    content_type: str = "application/x-protobuf",
    timeout: float = 5.0,
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        return resp
    finally:
        conn.close()


def _empty_traces() -> bytes:
    return ExportTraceServiceRequest().SerializeToString()


# ---------------------------------------------------------------------------------------------------
# Package surface
# ---------------------------------------------------------------------------------------------------


def test_exported_names_are_exactly_the_public_api() -> None:
    assert support.__all__ == sorted(support.__all__)
    assert set(support.__all__) == {
        "AppProcess",
        "Exemplar",
        "LogRecord",
        "MetricPoint",
        "OTLPReceiver",
        "PostgresError",
        "PostgresServer",
        "PrometheusError",
        "PrometheusServer",
        "ReceivedRequest",
        "Span",
        "SpanEvent",
        "SpanLink",
        "clean_environ",
        "closed_port",
        "find_pg_bindir",
        "free_port",
        "http_get",
        "in_ci",
        "prometheus_path",
        "promtool_path",
        "skip_or_fail",
        "start_postgres",
        "start_prometheus",
    }


def test_otel_environment_is_clean_in_tests() -> None:
    assert not [k for k in os.environ if k.startswith("OTEL_")]


def test_missing_backend_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no such backend"):
        support.skip_or_fail("no such backend")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no such backend.*CI=true"):
        support.skip_or_fail("no such backend")


# ---------------------------------------------------------------------------------------------------
# Receiver: decoding what the real exporters send
# ---------------------------------------------------------------------------------------------------


@pytest.mark.matrix
def test_receiver_decodes_spans_from_the_real_exporter(otlp_receiver: OTLPReceiver) -> None:
    provider = _tracer_provider(otlp_receiver)
    tracer = provider.get_tracer("selfcheck.scope")
    with tracer.start_as_current_span(
        "GET /items",
        kind=SpanKind.SERVER,
        attributes={"http.route": "/items", "http.response.status_code": 200, "ratio": 0.5, "ok": True},
    ) as server_span:
        server_span.add_event("cache.miss", {"key": "items", "tags": ["a", "b"]})
        with tracer.start_as_current_span("SELECT items", kind=SpanKind.CLIENT) as client_span:
            client_span.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()

    spans = otlp_receiver.wait_for_spans(2)
    server = otlp_receiver.spans("GET /items", kind="SERVER")[0]
    client = otlp_receiver.spans(kind=SpanKind.CLIENT)[0]
    ctx = server_span.get_span_context()
    assert server.trace_id == format(ctx.trace_id, "032x")
    assert server.span_id == format(ctx.span_id, "016x")
    assert server.parent_span_id == ""
    assert server.kind == "SERVER"
    assert server.attributes == {
        "http.route": "/items",
        "http.response.status_code": 200,
        "ratio": 0.5,
        "ok": True,
    }
    assert server.events[0].name == "cache.miss"
    assert server.events[0].attributes == {"key": "items", "tags": ["a", "b"]}
    assert server.resource["service.name"] == "selfcheck"
    assert server.scope == "selfcheck.scope"
    assert server.end_ns > server.start_ns > 0
    assert client.trace_id == server.trace_id
    assert client.parent_span_id == server.span_id
    assert (client.status_code, client.status_message) == ("ERROR", "boom")
    assert otlp_receiver.spans(kind=3) == [client]  # OTLP proto number 3 = CLIENT
    assert len(spans) == 2
    assert otlp_receiver.request_count("/v1/traces") == 2


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate])
def test_receiver_accepts_compressed_payloads(otlp_receiver: OTLPReceiver, compression: Compression) -> None:
    provider = _tracer_provider(otlp_receiver, compression=compression)
    provider.get_tracer("t").start_span("compressed").end()
    provider.shutdown()
    assert otlp_receiver.wait_for_spans(name="compressed")
    assert otlp_receiver.requests("/v1/traces")[0].headers["content-encoding"] == compression.value


@pytest.mark.matrix
def test_receiver_decodes_histogram_with_exemplar_and_counter(otlp_receiver: OTLPReceiver) -> None:
    tracer_provider = TracerProvider()
    meter_provider = _meter_provider(otlp_receiver)
    meter = meter_provider.get_meter("selfcheck.meter")
    histogram = meter.create_histogram("selfcheck.duration", unit="s")
    counter = meter.create_counter("selfcheck.requests")
    with tracer_provider.get_tracer("t").start_as_current_span("work") as span:
        histogram.record(0.2, {"http.route": "/a"})
        histogram.record(7.0, {"http.route": "/a"})
        counter.add(3, {"http.route": "/a"})
    histogram.record(0.3, {"http.route": "/b"})
    meter_provider.shutdown()

    points = otlp_receiver.wait_for_metric("selfcheck.duration")
    point_a = next(p for p in points if p.attributes == {"http.route": "/a"})
    assert point_a.kind == "histogram"
    assert point_a.unit == "s"
    assert point_a.temporality == "cumulative"
    assert point_a.count == 2
    assert point_a.sum == pytest.approx(7.2)
    assert sum(point_a.bucket_counts) == 2
    assert len(point_a.bucket_counts) == len(point_a.explicit_bounds) + 1
    assert (point_a.min, point_a.max) == (0.2, 7.0)
    assert point_a.resource["service.instance.id"] == "instance-1"
    assert point_a.scope == "selfcheck.meter"

    trace_id = format(span.get_span_context().trace_id, "032x")
    span_id = format(span.get_span_context().span_id, "016x")
    assert point_a.exemplars, "a recording inside a sampled span must carry an exemplar"
    assert {(e.trace_id, e.span_id) for e in point_a.exemplars} == {(trace_id, span_id)}
    assert sorted(e.value for e in point_a.exemplars) == [0.2, 7.0]

    assert otlp_receiver.histogram_count("selfcheck.duration") == 3
    assert otlp_receiver.histogram_count("selfcheck.duration", {"http.route": "/a"}) == 2
    assert otlp_receiver.histogram_sum("selfcheck.duration", {"http.route": "/b"}) == pytest.approx(0.3)
    assert otlp_receiver.sum_value("selfcheck.requests") == 3
    requests_point = otlp_receiver.metric_points("selfcheck.requests")[0]
    assert (requests_point.kind, requests_point.is_monotonic, requests_point.value) == ("sum", True, 3)
    assert "selfcheck.duration" in otlp_receiver.metric_names()


def test_histogram_count_takes_latest_cumulative_point_per_instance(otlp_receiver: OTLPReceiver) -> None:
    workers = [_meter_provider(otlp_receiver, instance=f"worker-{i}") for i in range(2)]
    histograms = [w.get_meter("m").create_histogram("selfcheck.latency") for w in workers]
    for _ in range(3):
        histograms[0].record(1.0, {"route": "/x"})
        histograms[1].record(1.0, {"route": "/x"})
        for w in workers:
            w.force_flush()  # three cumulative exports per worker: 1, 2, 3
    histograms[1].record(1.0, {"route": "/x"})
    for w in workers:
        w.shutdown()

    assert len(otlp_receiver.metric_points("selfcheck.latency")) >= 8
    assert otlp_receiver.histogram_count("selfcheck.latency", route="/x") == 7
    assert otlp_receiver.histogram_count("selfcheck.latency", route="/nope") == 0
    assert {p.resource["service.instance.id"] for p in otlp_receiver.latest_points("selfcheck.latency")} == {
        "worker-0",
        "worker-1",
    }


@pytest.mark.matrix
def test_receiver_decodes_logs_correlated_with_the_span(otlp_receiver: OTLPReceiver) -> None:
    tracer_provider = TracerProvider()
    logger_provider = LoggerProvider(resource=Resource.create({"service.name": "selfcheck"}))
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=otlp_receiver.url("logs")))
    )
    logger = logger_provider.get_logger("selfcheck.logger")
    with tracer_provider.get_tracer("t").start_as_current_span("handler") as span:
        logger.emit(
            body="slow query detected",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"db.statement": "SELECT 1"},
        )
    logger.emit(body={"structured": True}, severity_number=SeverityNumber.INFO)
    logger_provider.shutdown()

    [record] = otlp_receiver.wait_for_logs("slow query")
    assert record.body == "slow query detected"
    assert (record.severity_text, record.severity_number) == ("WARN", SeverityNumber.WARN.value)
    assert record.attributes == {"db.statement": "SELECT 1"}
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    assert record.resource["service.name"] == "selfcheck"
    structured = otlp_receiver.wait_for_logs("structured")[0]
    assert structured.body_value == {"structured": True}
    assert structured.trace_id == ""


def test_wait_for_timeout_dumps_what_was_received(otlp_receiver: OTLPReceiver) -> None:
    provider = _tracer_provider(otlp_receiver)
    provider.get_tracer("t").start_span("the-only-span", attributes={"k": "v"}).end()
    provider.shutdown()
    otlp_receiver.wait_for_spans(1)
    with pytest.raises(AssertionError) as info:
        otlp_receiver.wait_for_spans(name="missing", timeout=0.2)
    message = str(info.value)
    assert "span(s) name='missing'" in message
    assert "'the-only-span'" in message
    assert "k='v'" in message
    assert "/v1/traces" in message


def test_clear_forgets_everything(otlp_receiver: OTLPReceiver) -> None:
    _post(otlp_receiver, body=_empty_traces())
    otlp_receiver.clear()
    assert otlp_receiver.request_count() == 0
    assert otlp_receiver.spans() == []


# ---------------------------------------------------------------------------------------------------
# Receiver: protocol errors and fault modes
# ---------------------------------------------------------------------------------------------------


def test_bad_requests_are_rejected_and_reported(otlp_receiver: OTLPReceiver) -> None:
    assert _post(otlp_receiver, "/v1/nope", _empty_traces()).status == 404
    assert _post(otlp_receiver, body=b"{}", content_type="text/plain").status == 415
    assert _post(otlp_receiver, body=b"\xff\xff\xff garbage").status == 400
    assert _post(otlp_receiver, body=_empty_traces()).status == 200
    errors = otlp_receiver.errors()
    assert any("Content-Type" in e for e in errors)
    assert any("cannot decode" in e for e in errors)
    assert otlp_receiver.request_counts() == {"/v1/nope": 1, "/v1/traces": 3}


def test_unknown_mode_is_refused(otlp_receiver: OTLPReceiver) -> None:
    for bad in ("broken", "status:abc", "status:42", "slow:-1"):
        with pytest.raises(ValueError, match="unknown receiver mode"):
            otlp_receiver.mode = bad
    assert otlp_receiver.mode == "ok"


@pytest.mark.parametrize("status", [503, 429])
def test_status_mode_answers_that_status_and_stores_nothing(otlp_receiver: OTLPReceiver, status: int) -> None:
    otlp_receiver.mode = f"status:{status}"
    otlp_receiver.retry_after = 1
    resp = _post(otlp_receiver, body=_empty_traces())
    assert resp.status == status
    assert resp.getheader("Retry-After") == "1"
    assert otlp_receiver.request_count("/v1/traces") == 1
    assert otlp_receiver.requests()[0].mode == f"status:{status}"
    otlp_receiver.mode = "ok"
    assert _post(otlp_receiver, body=_empty_traces()).status == 200


def test_real_exporter_retries_on_503_then_gives_up(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.mode = "status:503"
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.url("traces"), timeout=1.5)
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span("rejected")
    span.end()
    assert exporter.export([span]) == SpanExportResult.FAILURE  # type: ignore[list-item]
    exporter.shutdown()
    provider.shutdown()
    assert otlp_receiver.request_count("/v1/traces") >= 2  # first attempt plus at least one retry
    assert otlp_receiver.spans() == []


def test_stall_mode_never_answers_until_released(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.mode = "stall"
    with pytest.raises(TimeoutError):
        _post(otlp_receiver, body=_empty_traces(), timeout=0.5)
    assert otlp_receiver.request_count("/v1/traces") == 1  # it was read, just not answered

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(_post(otlp_receiver, body=_empty_traces()).status))
    thread.start()
    otlp_receiver.wait_for(lambda: otlp_receiver.request_count() == 2, what="second request", timeout=5)
    time.sleep(0.2)
    assert result == []
    otlp_receiver.release_stalled()
    thread.join(5)
    assert result == [200]
    assert otlp_receiver.mode == "stall"  # releasing does not change the mode


def test_stalled_requests_are_cut_when_the_receiver_stops() -> None:
    receiver = OTLPReceiver().start()
    receiver.mode = "stall"
    errors: list[BaseException] = []

    def post() -> None:
        try:
            _post(receiver, body=_empty_traces(), timeout=30)
        except (http.client.HTTPException, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=post)
    thread.start()
    receiver.wait_for(lambda: receiver.request_count() == 1, what="the stalled request", timeout=5)
    started = time.monotonic()
    receiver.stop()
    thread.join(5)
    assert time.monotonic() - started < 3
    assert not thread.is_alive()
    assert len(errors) == 1  # hung up without an answer
    receiver.stop()  # idempotent


def test_slow_mode_delays_the_answer(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.mode = "slow:0.4"
    started = time.monotonic()
    assert _post(otlp_receiver, body=_empty_traces()).status == 200
    assert time.monotonic() - started >= 0.4


def test_closed_port_refuses_connections() -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_exporter_env_points_a_process_at_the_receiver(otlp_receiver: OTLPReceiver) -> None:
    env = otlp_receiver.exporter_env()
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == otlp_receiver.endpoint
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert otlp_receiver.endpoint.startswith("http://127.0.0.1:")


# ---------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------

_SERVER_SCRIPT = textwrap.dedent(
    """
    import http.server, os, subprocess, sys
    print("OTEL vars:", sorted(k for k in os.environ if k.startswith("OTEL_")), flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    # A grandchild, like a worker process: stop() must kill it too.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(sys.argv[2], "w").write(str(child.pid))
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)\\
        .serve_forever()
    """
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its parent) still answers kill(0).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_app_process_scrubs_env_captures_output_and_kills_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "leaked-from-the-shell")
    port = free_port()
    pid_file = tmp_path / "grandchild.pid"
    with AppProcess(
        [sys.executable, "-c", _SERVER_SCRIPT, str(port), str(pid_file)],
        env={"OTEL_PERF_WANTED": "1"},
        cwd=tmp_path,
        name="selfcheck-app",
    ) as app:
        assert app.wait_http(f"http://127.0.0.1:{port}/", timeout=20) == 200
        grandchild = int(pid_file.read_text())
        assert _pid_alive(grandchild)
    assert app.returncode == -signal.SIGTERM
    assert "OTEL vars: ['OTEL_PERF_WANTED']" in app.stdout()
    assert "to stderr" in app.stderr()
    assert "to stderr" in app.output()
    deadline = time.monotonic() + 5
    while _pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(grandchild)


def test_app_process_sigkills_what_ignores_sigterm(app_process: AppFactory) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
    script += "time.sleep(600)"
    app = app_process([sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while "up" not in app.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    assert app.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_wait_http_reports_an_early_exit_with_output(app_process: AppFactory) -> None:
    app = app_process([sys.executable, "-c", "import sys; print('bad config'); sys.exit(3)"])
    with pytest.raises(AssertionError, match=r"(?s)exited before.*exited with 3.*bad config"):
        app.wait_http(f"http://127.0.0.1:{closed_port()}/", timeout=10)


_EXPORTING_CHILD = textwrap.dedent(
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()  # endpoint, protocol and batch delay all come from the environment
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    provider.get_tracer("child").start_span("from-child").end()
    provider.shutdown()
    print("exported", flush=True)
    """
)


def test_child_process_exports_to_the_receiver_via_exporter_env(
    otlp_receiver: OTLPReceiver, app_process: AppFactory
) -> None:
    env = otlp_receiver.exporter_env() | {"OTEL_SERVICE_NAME": "child-service"}
    app = app_process([sys.executable, "-c", _EXPORTING_CHILD], env)
    [span] = otlp_receiver.wait_for_spans(name="from-child", timeout=20)
    assert span.resource["service.name"] == "child-service"
    assert app.wait_exit(timeout=20) == 0, app.describe()
    assert "exported" in app.stdout()


# ---------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_fixture_gives_a_working_database(
    postgres_url: str, postgres_server: support.PostgresServer
) -> None:
    import sqlalchemy as sa

    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert postgres_url.endswith("/testdb")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.execute(sa.text("SHOW server_version")).scalar_one().startswith("15")
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "testdb"
    finally:
        engine.dispose()

    other_url = postgres_server.create_database("selfcheck_isolated")
    other = sa.create_engine(other_url)
    try:
        with other.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "selfcheck_isolated"
    finally:
        other.dispose()


# ---------------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------------

_OPENMETRICS = (
    b"# TYPE selfcheck_requests counter\n"
    b"# HELP selfcheck_requests Requests seen by the selfcheck target.\n"
    b'selfcheck_requests_total{route="/items"} 42 # {trace_id="0af7651916cd43dd8448eb211c80319c"} 1.0\n'
    b"# EOF\n"
)


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
        self.send_header("Content-Length", str(len(_OPENMETRICS)))
        self.end_headers()
        self.wfile.write(_OPENMETRICS)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
@pytest.mark.prometheus
def test_prometheus_scrapes_a_target_and_answers_queries(
    prometheus_factory: PrometheusFactory, metrics_target: str
) -> None:
    started = time.time()
    prom = prometheus_factory([metrics_target])
    [target] = prom.wait_for_target_up(timeout=30)
    assert target["labels"]["job"] == "app"

    result = prom.wait_for_query('selfcheck_requests_total{route="/items"}')
    assert result[0]["metric"]["job"] == "app"
    assert prom.query_value("sum(selfcheck_requests_total)") == 42.0
    assert prom.query_range("selfcheck_requests_total", started - 5, time.time() + 1, step=1)[0]["values"]

    def exemplar_arrived() -> list[object]:
        return prom.exemplars("selfcheck_requests_total", started - 60, time.time() + 60)

    deadline = time.monotonic() + 20
    while not (found := exemplar_arrived()) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert found, "exemplar from the OpenMetrics target not stored"
    exemplar = found[0]["exemplars"][0]  # type: ignore[index]
    assert exemplar["labels"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"

    with pytest.raises(support.PrometheusError, match=r"query 'sum\('"):
        prom.query("sum(")


@pytest.mark.slow
@pytest.mark.prometheus
def test_generated_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    import json
    import subprocess

    from support.prometheus import scrape_config

    promtool = support.promtool_path()
    if promtool is None:
        support.skip_or_fail("promtool not installed (Debian package prometheus)")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(["127.0.0.1:9"])))
    proc = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------
# Browsers: OTLP/JSON and CORS (what the browser script sends)
# ---------------------------------------------------------------------------------------------------

_TRACE_HEX = "5b8efff798038103d269b633813fc60c"
_SPAN_HEX = "eee19b7ec3c1b174"
_PARENT_HEX = "eee19b7ec3c1b173"


def _json_traces() -> bytes:
    """An OTLP/JSON trace export as the OpenTelemetry JS exporters write it (hex ids, int enums)."""
    return json.dumps({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-browser"}}]},
            "scopeSpans": [{
                "scope": {"name": "otel-perf-browser", "version": "1"},
                "spans": [{
                    "traceId": _TRACE_HEX,
                    "spanId": _SPAN_HEX,
                    "parentSpanId": _PARENT_HEX,
                    "name": "page load",
                    "kind": 1,
                    "startTimeUnixNano": "1700000000000000000",
                    "endTimeUnixNano": "1700000001500000000",
                    "attributes": [
                        {"key": "http.route", "value": {"stringValue": "/"}},
                        {"key": "perf.browser.lcp_ms", "value": {"doubleValue": 812.5}},
                        {"key": "perf.browser.transfer_size", "value": {"intValue": "2048"}},
                    ],
                    "events": [{
                        "timeUnixNano": "1700000000500000000",
                        "name": "exception",
                        "attributes": [{"key": "exception.type", "value": {"stringValue": "TypeError"}}],
                    }],
                    "status": {"code": 0},
                }],
            }],
        }],
    }).encode()


def _json_metrics() -> bytes:
    return json.dumps({
        "resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-browser"}}]},
            "scopeMetrics": [{
                "scope": {"name": "otel-perf-browser"},
                "metrics": [{
                    "name": "perf.browser.lcp",
                    "unit": "s",
                    "histogram": {
                        "aggregationTemporality": 1,
                        "dataPoints": [{
                            "attributes": [{"key": "http.route", "value": {"stringValue": "/"}}],
                            "startTimeUnixNano": "1700000000000000000",
                            "timeUnixNano": "1700000030000000000",
                            "count": "2",
                            "sum": 1.7,
                            "bucketCounts": ["0", "1", "1", "0"],
                            "explicitBounds": [0.5, 1, 2.5],
                            "min": 0.8,
                            "max": 0.9,
                        }],
                    },
                }],
            }],
        }],
    }).encode()


def _request(
    receiver: OTLPReceiver, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def test_receiver_decodes_otlp_json_traces_with_hex_ids(otlp_receiver: OTLPReceiver) -> None:
    resp = _post(otlp_receiver, "/v1/traces", _json_traces(), "application/json")
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
    [span] = otlp_receiver.spans("page load")
    assert (span.trace_id, span.span_id, span.parent_span_id) == (_TRACE_HEX, _SPAN_HEX, _PARENT_HEX)
    assert span.kind == "INTERNAL"
    assert span.attributes == {
        "http.route": "/",
        "perf.browser.lcp_ms": 812.5,
        "perf.browser.transfer_size": 2048,
    }
    assert span.resource == {"service.name": "shop-browser"}
    assert span.event_names() == ["exception"] and span.duration_s == 1.5
    assert otlp_receiver.errors() == []


def test_receiver_decodes_otlp_json_delta_histograms(otlp_receiver: OTLPReceiver) -> None:
    assert _post(otlp_receiver, "/v1/metrics", _json_metrics(), "application/json").status == 200
    [point] = otlp_receiver.metric_points("perf.browser.lcp")
    assert point.kind == "histogram" and point.temporality == "delta"
    assert (point.count, point.sum) == (2, 1.7)
    assert (point.bucket_counts, point.explicit_bounds) == ([0, 1, 1, 0], [0.5, 1, 2.5])
    assert otlp_receiver.histogram_count("perf.browser.lcp", {"http.route": "/"}) == 2


def test_receiver_rejects_malformed_json(otlp_receiver: OTLPReceiver) -> None:
    assert _post(otlp_receiver, "/v1/traces", b"{not json", "application/json").status == 400
    assert _post(otlp_receiver, "/v1/traces", b'{"resourceSpans": 3}', "application/json").status == 400
    assert len(otlp_receiver.errors()) == 2


def test_receiver_answers_cors_preflights_and_tags_cross_origin_answers(otlp_receiver: OTLPReceiver) -> None:
    origin = "http://127.0.0.1:8000"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, headers, _ = _request(otlp_receiver, "OPTIONS", "/v1/traces", preflight)
    assert status == 204
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "content-type"
    otlp_receiver.mode = "status:500"  # preflights are answered whatever the mode; POSTs are not
    assert _request(otlp_receiver, "OPTIONS", "/v1/traces", preflight)[0] == 204
    cross_origin = {"Origin": origin, "Content-Type": "application/json"}
    status, headers, _ = _request(otlp_receiver, "POST", "/v1/traces", cross_origin, _json_traces())
    assert status == 500 and headers["access-control-allow-origin"] == origin
    assert otlp_receiver.request_count("/v1/traces") == 1  # preflights are not exports
    assert [p.allowed for p in otlp_receiver.preflights()] == [True, True]

    otlp_receiver.allowed_origins = {"https://shop.example.com"}
    status, headers, _ = _request(otlp_receiver, "OPTIONS", "/v1/traces", preflight)
    assert status == 403 and "access-control-allow-origin" not in headers
    assert otlp_receiver.preflights()[-1].allowed is False


def test_protobuf_exports_get_no_cors_headers(otlp_receiver: OTLPReceiver) -> None:
    status, headers, _ = _request(
        otlp_receiver, "POST", "/v1/traces", {"Content-Type": "application/x-protobuf"}, _empty_traces()
    )
    assert status == 200 and not any(k.startswith("access-control-") for k in headers)
