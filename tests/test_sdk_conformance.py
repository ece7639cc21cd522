"""OpenTelemetry conformance, end to end: the SDK's metric settings reach our own metrics, the
SDK's extension points (exporters, samplers, id generators, propagators) are entry points, and
bad configuration is always named (issues #20 and #16).

Each test runs tests/apps/service.py under the real launcher and reads what a real receiver
decoded (OTLP, or Zipkin JSON for the zipkin exporter)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_perf._config import load
from support.launch import launcher, sqlite_urls, start_service
from support.otlp_receiver import MetricPoint, OTLPReceiver
from support.procs import AppProcess, clean_environ

AppFactory = Callable[..., AppProcess]
SERVER_DURATION = "http.server.request.duration"


def _requests(base: str, path: str = "/items/1", n: int = 5) -> None:
    for _ in range(n):
        assert httpx.get(base + path).status_code == 200


def _ours_and_the_sdks(points: list[MetricPoint]) -> set[str]:
    return {p.scope for p in points}


@pytest.mark.slow
def test_delta_temporality_gives_delta_for_every_sum_and_histogram_of_one_export(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0],
        env={"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"},
    )  # fmt: skip
    _requests(svc.base, n=4)

    def items() -> list[MetricPoint]:
        return [
            p
            for p in otlp_receiver.metric_points(SERVER_DURATION)
            if p.attributes.get("http.route") == "/items/{item_id}"
        ]

    first = otlp_receiver.wait_for(lambda: [p.export for p in items()], what="a server duration point")[0]
    _requests(svc.base, n=3)
    otlp_receiver.wait_for(
        lambda: sum(p.count or 0 for p in items()) >= 7, what="all seven requests in deltas", timeout=15
    )
    one_export = [p for p in otlp_receiver.metric_points() if p.export == first]
    assert {"otel_perf"} < _ours_and_the_sdks(one_export)  # ours and the SDK's instruments together
    checked = {p.name for p in one_export if p.kind == "histogram" or (p.kind == "sum" and p.is_monotonic)}
    assert {SERVER_DURATION, "db.client.operation.duration", "process.cpu.time"} <= checked
    for p in one_export:
        if p.kind == "histogram" or (p.kind == "sum" and p.is_monotonic):
            assert p.temporality == "delta", (p.name, p.scope, p.temporality)
        elif p.kind == "sum":  # up-down counters stay cumulative, as the SDK maps `delta`
            assert p.temporality == "cumulative", (p.name, p.scope)
    counts = [p.count or 0 for p in items()]
    assert sum(counts) == 7 and max(counts) < 7  # differences, not running totals
    first_end = min(p.time_ns for p in items() if p.export == first)
    assert all(p.start_ns >= first_end for p in items() if p.export > first)  # a delta starts where one ended


def test_exponential_histograms_for_our_metrics_and_the_sdks(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    token = "exponential-stats-token"
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0],
        env={
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
            "OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_STATS_TOKEN": token,
        },
    )  # fmt: skip
    _requests(svc.base, n=6)
    points = otlp_receiver.wait_for(
        lambda: [p for p in otlp_receiver.metric_points(SERVER_DURATION) if (p.count or 0) >= 6],
        what="six requests in the server duration",
    )
    point = points[-1]
    assert point.kind == "exponential_histogram"
    assert point.scale is not None and point.scale <= 20 and len(point.positive_counts) <= 160
    assert sum(point.positive_counts) + (point.zero_count or 0) == point.count
    db = otlp_receiver.wait_for_metric("db.client.operation.duration")
    assert {p.kind for p in db} == {"exponential_histogram"}
    assert not [p for p in otlp_receiver.metric_points() if p.kind == "histogram"]
    stats = httpx.get(svc.base + "/_perf", headers={"Authorization": f"Bearer {token}"}).json()
    (endpoint,) = [e for e in stats["endpoints"] if e["route"] == "/items/{item_id}"]
    assert endpoint["count"] == 6 and endpoint["p95_ms"] > 0  # the stats endpoint keeps its buckets


@pytest.mark.slow
def test_always_off_exemplar_filter_leaves_our_histograms_without_exemplars(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0],
        env={"OTEL_METRICS_EXEMPLAR_FILTER": "always_off", "OTEL_TRACES_SAMPLER": "always_on"},
    )  # fmt: skip
    _requests(svc.base, n=3)
    otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER", count=3)
    for name in (SERVER_DURATION, "db.client.operation.duration"):
        points = otlp_receiver.wait_for(
            lambda name=name: [p for p in otlp_receiver.metric_points(name) if (p.count or 0) >= 3],
            what=f"{name} with three requests",
        )
        assert all(not p.exemplars for p in points), name


@pytest.mark.slow
def test_a_view_drops_an_attribute_from_our_metric_and_renames_another(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    views = tmp_path / "views.yaml"
    views.write_text(
        textwrap.dedent("""\
        views:
          - selector: {instrument_name: http.server.request.duration}
            stream: {attribute_keys: {included: [http.route, http.request.method]}}
          - selector: {instrument_name: db.client.operation.duration, meter_name: otel_perf}
            stream: {name: db.time}
          - selector: {instrument_name: process.cpu.time}
            stream: {aggregation: {drop: {}}}
    """)
    )
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0], env={"OTEL_PERF_METRIC_VIEWS": str(views)}
    )
    _requests(svc.base, "/items/1", n=2)
    assert httpx.get(svc.base + "/boom").status_code == 500
    points = otlp_receiver.wait_for(
        lambda: [
            p
            for p in otlp_receiver.metric_points(SERVER_DURATION)
            if p.attributes.get("http.route") == "/items/{item_id}"
        ],
        what="server duration of /items",
    )
    assert points[-1].attributes == {"http.route": "/items/{item_id}", "http.request.method": "GET"}
    boom = otlp_receiver.wait_for(
        lambda: [
            p
            for p in otlp_receiver.metric_points(SERVER_DURATION)
            if p.attributes.get("http.route") == "/boom"
        ],
        what="server duration of /boom",
    )
    assert "http.response.status_code" not in boom[-1].attributes and "error.type" not in boom[-1].attributes
    assert otlp_receiver.wait_for_metric("db.time")
    assert "db.client.operation.duration" not in otlp_receiver.metric_names()
    assert "process.cpu.time" not in otlp_receiver.metric_names()  # the SDK's instrument: an SDK View


@pytest.mark.slow
def test_bsp_max_export_batch_size_one_gives_one_span_per_export(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0],
        env={"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1", "OTEL_BSP_SCHEDULE_DELAY": "2000"},
    )  # fmt: skip
    _requests(svc.base, "/items/1", n=5)  # /hello is the readiness probe's
    spans = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER", count=5, timeout=20)
    per_export: dict[int, int] = defaultdict(int)
    for span in otlp_receiver.spans():
        per_export[span.export] += 1
    assert len(spans) == 5 and len(per_export) > 5 and set(per_export.values()) == {1}, dict(per_export)


class _ZipkinReceiver:
    """Speaks Zipkin's v2 API: ``POST /api/v2/spans`` with a JSON list of spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the exporter's session keeps its connection

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/api/v2/spans":
                    receiver.spans.extend(json.loads(body))
                    self.send_response(202)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v2/spans"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def zipkin() -> Iterator[_ZipkinReceiver]:
    receiver = _ZipkinReceiver()
    yield receiver
    receiver.close()


@pytest.mark.slow
def test_zipkin_exporter_named_in_otel_traces_exporter_exports_to_zipkin(
    app_process: AppFactory, zipkin: _ZipkinReceiver, tmp_path: Path
) -> None:
    pytest.importorskip("opentelemetry.exporter.zipkin.json")  # the dev extra installs it
    svc = start_service(
        app_process, None, sqlite_urls(tmp_path)[0],
        env={"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_ZIPKIN_ENDPOINT": zipkin.url,
             "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )  # fmt: skip
    _requests(svc.base, "/items/2", n=2)
    receiver = OTLPReceiver()  # only for its wait_for
    server = receiver.wait_for(
        lambda: found if len(found := [s for s in zipkin.spans if s.get("kind") == "SERVER"
                                       and s.get("name") == "GET /items/{item_id}"]) >= 2 else [],
        what="both server spans at the zipkin receiver", timeout=20,
    )  # fmt: skip
    assert len(server) == 2 and server[0]["localEndpoint"]["serviceName"] == "service"
    assert any(s.get("kind") == "CLIENT" for s in zipkin.spans)  # the SQL statements' spans
    assert "OTEL_TRACES_EXPORTER" not in svc.proc.stderr()  # no warning: the name resolved


PLUGIN = """
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult


class TaggingSampler(Sampler):
    def __init__(self, arg):
        self.arg = arg

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None):
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {"sampled.by": "tagging", "sampler.arg": self.arg})

    def get_description(self):
        return "TaggingSampler"


def tagging(arg):
    return TaggingSampler(arg)


class FeedIds(RandomIdGenerator):
    def generate_trace_id(self):
        return (0xFEED << 112) | (super().generate_trace_id() >> 16)
"""


def _plugin_distribution(tmp_path: Path) -> str:
    """A folder holding an installed-looking distribution that registers a sampler and an id generator."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "perf_test_plugin.py").write_text(PLUGIN)
    info = folder / "perf_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: perf-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_traces_sampler]\ntagging = perf_test_plugin:tagging\n\n"
        "[opentelemetry_id_generator]\nfeed = perf_test_plugin:FeedIds\n"
    )
    return str(folder)


@pytest.mark.slow
def test_custom_sampler_and_id_generator_from_entry_points(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0], python_path=_plugin_distribution(tmp_path),
        env={"OTEL_TRACES_SAMPLER": "tagging", "OTEL_TRACES_SAMPLER_ARG": "endpoint=http://x,rate=5",
             "OTEL_PYTHON_ID_GENERATOR": "feed"},
    )  # fmt: skip
    _requests(svc.base, "/items/3", n=2)
    spans = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER", count=2)
    for span in spans:
        assert span.attributes["sampled.by"] == "tagging"
        assert span.attributes["sampler.arg"] == "endpoint=http://x,rate=5"  # as given, not a ratio
        assert span.trace_id.startswith("feed")  # the named generator, on the SDK's span path
    stderr = svc.proc.stderr()
    assert "OTEL_TRACES_SAMPLER" not in stderr and "OTEL_PYTHON_ID_GENERATOR" not in stderr


@pytest.mark.slow
def test_unknown_names_are_warned_once_and_the_app_still_exports(
    otlp_receiver: OTLPReceiver, app_process: AppFactory, tmp_path: Path
) -> None:
    svc = start_service(
        app_process, otlp_receiver, sqlite_urls(tmp_path)[0],
        env={"OTEL_TRACES_EXPORTER": "otpl", "OTEL_METRICS_EXPORTER": "otlp,promethus",
             "OTEL_LOGS_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes",
             "OTEL_PROPAGATORS": "tracecontext,b3multi", "OTEL_PYTHON_ID_GENERATOR": "snowflake",
             "OTEL_RESOURCE_ATTRIBUTES": "abc,team=core", "OTEL_PERF_STATS_TOKEN": "x",
             "OTEL_PERF_STATS_PATH": "/_perf", "OTEL_PERF_SLOW_QUERY_MS": "1e300",
             "OTEL_PERF__RAISE_ERRORS": "0"},
    )  # fmt: skip
    parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    assert httpx.get(svc.base + "/items/1", headers={"traceparent": parent}).status_code == 200
    (span,) = otlp_receiver.wait_for_spans(name="GET /items/{item_id}", kind="SERVER")
    assert span.trace_id == "ab" * 16  # tracecontext still propagates
    assert span.resource["team"] == "core" and "abc" not in span.resource
    # the stats endpoint stayed off: the app's own 404
    assert httpx.get(svc.base + "/_perf", headers={"Authorization": "Bearer x"}).status_code == 404
    svc.proc.stop()
    stderr = svc.proc.stderr()
    expected = [
        (
            "OTEL_TRACES_EXPORTER='otpl' is invalid (no traces exporter named 'otpl' is installed; known: ",
            "using 'otlp' instead",
        ),
        (
            "OTEL_METRICS_EXPORTER='otlp,promethus' is invalid (no metrics exporter named 'promethus'",
            "using 'otlp' instead",
        ),
        ("OTEL_TRACES_SAMPLER='sometimes' is invalid", "using 'parentbased_always_on' instead"),
        (
            "OTEL_PROPAGATORS='tracecontext,b3multi' is invalid (no propagator named 'b3multi'",
            "using 'tracecontext' instead",
        ),
        ("OTEL_PYTHON_ID_GENERATOR='snowflake' is invalid", "using 'random' instead"),
        (
            "OTEL_RESOURCE_ATTRIBUTES='abc,team=core' is invalid (not key=value pairs",
            "using 'team=core' instead",
        ),
        ("OTEL_PERF_STATS_TOKEN='***' is invalid (shorter than 16 characters", "stats endpoint stays off"),
        ("OTEL_PERF_SLOW_QUERY_MS='1e300' is invalid (above the maximum 8.64e+07)", "using 100.0 instead"),
    ]
    lines = stderr.splitlines()
    for start, used in expected:
        found = [line for line in lines if start in line]
        assert len(found) == 1 and used in found[0], (start, found, stderr[-3000:])
    assert "Invalid key value resource attribute pair" not in stderr  # ours is the one warning


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "otpl"),
        ("OTEL_METRICS_EXPORTER", "otpl"),
        ("OTEL_LOGS_EXPORTER", "otpl"),
        ("OTEL_RESOURCE_ATTRIBUTES", "abc"),
        ("OTEL_PERF_LOOP_BLOCK_MS", "1e12"),
        ("OTEL_PROPAGATORS", "nope"),
    ],
)
def test_strict_mode_refuses_with_the_refusal_alone(variable: str, value: str) -> None:
    env = clean_environ({"OTEL_PERF_STRICT": "true", variable: value, "OTEL_PERF_STATS_TOKEN": "short"})
    result = subprocess.run(
        [launcher(), sys.executable, "-c", "print('app ran')"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "app ran" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "otel-perf-instrument: refusing to start (OTEL_PERF_STRICT=true):", lines
    assert any(line.strip().startswith(f"{variable}={value!r} is invalid") for line in lines[1:]), lines
    assert any(line.strip().startswith("OTEL_PERF_STATS_TOKEN='***' is invalid") for line in lines[1:])
    assert "instead" not in result.stderr  # nothing is used instead: it does not start


def test_config_names_every_bad_value_without_starting_anything() -> None:
    config = load({
        "OTEL_TRACES_EXPORTER": "otpl", "OTEL_RESOURCE_ATTRIBUTES": "a=1,b,c=%ZZ%E2%82",
        "OTEL_PERF_SLOW_REQUEST_MS": "1e200", "OTEL_PERF_STATS_TOKEN": "abc",
        "OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
        "OTEL_TRACES_SAMPLER": "jaeger_remote", "OTEL_PERF_WARN_INTERVAL": "1e9",
    })  # fmt: skip
    problems = {p.env: p for p in config.problems}
    assert config["OTEL_TRACES_EXPORTER"] == ("otlp",)
    assert config["OTEL_RESOURCE_ATTRIBUTES"] == "a=1"
    assert config["OTEL_PERF_SLOW_REQUEST_MS"] == 1000.0
    assert config["OTEL_PERF_STATS_TOKEN"] == "" and problems["OTEL_PERF_STATS_TOKEN"].given == "***"
    assert config["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] == 64
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"  # not installed here
    assert set(problems) == {
        "OTEL_TRACES_EXPORTER",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_PERF_SLOW_REQUEST_MS",
        "OTEL_PERF_STATS_TOKEN",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "OTEL_TRACES_SAMPLER",
        "OTEL_PERF_WARN_INTERVAL",
    }
