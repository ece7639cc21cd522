"""A minimal OTLP/HTTP receiver for ``otel-perf demo``: what arrived, without a backend.

Decodes the protobuf the exporters send and keeps a compact tally (spans by name and
kind, trace ids, metric names, log records and how many carry a trace id).  Loopback only,
bounded memory (at most ``MAX_TRACES`` trace ids are kept).
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_TRACES = 1000
MAX_BODY = 32 * 1024 * 1024


@dataclass
class Tally:
    spans: Counter[tuple[str, str]] = field(default_factory=Counter)
    server_traces: dict[str, list[str]] = field(default_factory=dict)
    metric_names: set[str] = field(default_factory=set)
    logs: int = 0
    logs_with_trace: int = 0
    log_examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _handler(tally: Tally) -> type[BaseHTTPRequestHandler]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                self._tally(self.path, body)
            except Exception:
                self.send_response(400)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _tally(self, path: str, body: bytes) -> None:
            if path.endswith("/v1/traces"):
                req = ExportTraceServiceRequest.FromString(body)
                with tally.lock:
                    for rs in req.resource_spans:
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                kind = _KINDS.get(span.kind, "UNSPECIFIED")
                                tally.spans[(span.name, kind)] += 1
                                if kind == "SERVER":
                                    ids = tally.server_traces.setdefault(span.name, [])
                                    if (
                                        len(ids) < 3
                                        and sum(map(len, tally.server_traces.values())) < MAX_TRACES
                                    ):
                                        ids.append(span.trace_id.hex())
            elif path.endswith("/v1/metrics"):
                req_m = ExportMetricsServiceRequest.FromString(body)
                with tally.lock:
                    for rm in req_m.resource_metrics:
                        for sm in rm.scope_metrics:
                            tally.metric_names.update(m.name for m in sm.metrics)
            elif path.endswith("/v1/logs"):
                req_l = ExportLogsServiceRequest.FromString(body)
                with tally.lock:
                    for rl in req_l.resource_logs:
                        for sl in rl.scope_logs:
                            for record in sl.log_records:
                                tally.logs += 1
                                if record.trace_id:
                                    tally.logs_with_trace += 1
                                    if len(tally.log_examples) < 3:
                                        line = str(record.body.string_value)[:90]
                                        trace_hex = record.trace_id.hex()
                                        tally.log_examples.append(f"{line} (trace_id={trace_hex})")

    return Handler


class Sink:
    """Start with :meth:`start`; ``endpoint`` is the OTEL_EXPORTER_OTLP_ENDPOINT to use."""

    def __init__(self) -> None:
        self.tally = Tally()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.tally))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otel-perf-demo-sink", daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Sink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
