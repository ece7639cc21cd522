"""A minimal OTLP/HTTP receiver for ``otel-perf demo``: what arrived, without a backend.

Decodes the protobuf the exporters send and keeps a compact tally (spans by name and
kind, trace ids, metric names, log records and how many carry a trace id).  Loopback only,
bounded memory (at most ``MAX_TRACES`` trace ids are kept).

The browser script's OTLP/JSON is taken too (with CORS preflights from loopback pages): its
spans are kept apart (:attr:`Tally.browser`, at most ``MAX_BROWSER_SPANS``), with the server
spans' ids, so the demo can show that a page load and its fetch calls joined the server traces.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_TRACES = 1000
MAX_BODY = 32 * 1024 * 1024
MAX_BROWSER_SPANS = 200
MAX_SERVER_SPANS = 5000
_LOOPBACK_ORIGINS = ("http://127.0.0.1:", "http://localhost:", "http://[::1]:")


@dataclass(frozen=True)
class BrowserSpan:
    """A span the browser script sent (ids hex, attributes as plain values)."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


@dataclass
class Tally:
    spans: Counter[tuple[str, str]] = field(default_factory=Counter)
    server_traces: dict[str, list[str]] = field(default_factory=dict)
    metric_names: set[str] = field(default_factory=set)
    logs: int = 0
    logs_with_trace: int = 0
    log_examples: list[str] = field(default_factory=list)
    #: browser (OTLP/JSON) spans and metric names; server span id -> (name, trace id)
    browser: list[BrowserSpan] = field(default_factory=list)
    browser_metrics: set[str] = field(default_factory=set)
    server_spans: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _handler(tally: Tally) -> type[BaseHTTPRequestHandler]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _cors(self) -> None:
            origin = self.headers.get("Origin", "")
            if origin.startswith(_LOOPBACK_ORIGINS):  # the demo page, served on loopback
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Vary", "Origin")

        def do_OPTIONS(self) -> None:
            self.send_response(204)
            self._cors()
            self.send_header("Access-Control-Allow-Methods", "POST")
            self.send_header("Access-Control-Allow-Headers", "content-type")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            as_json = self.headers.get("Content-Type", "").startswith("application/json")
            try:
                if as_json:
                    self._tally_json(self.path, json.loads(body))
                else:
                    self._tally(self.path, body)
            except Exception:
                self.send_response(400)
                self._cors()
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self._cors()
            self.send_header("Content-Type", "application/json" if as_json else "application/x-protobuf")
            self.send_header("Content-Length", "2" if as_json else "0")
            self.end_headers()
            if as_json:
                self.wfile.write(b"{}")

        def _tally_json(self, path: str, data: dict[str, Any]) -> None:
            if path.endswith("/v1/traces"):
                with tally.lock:
                    for rs in data.get("resourceSpans", []):
                        for ss in rs.get("scopeSpans", []):
                            for span in ss.get("spans", []):
                                kind = _KINDS.get(int(span.get("kind", 0)), "UNSPECIFIED")
                                tally.spans[(str(span.get("name", "")), kind)] += 1
                                if len(tally.browser) < MAX_BROWSER_SPANS:
                                    tally.browser.append(_browser_span(span, kind))
            elif path.endswith("/v1/metrics"):
                with tally.lock:
                    for rm in data.get("resourceMetrics", []):
                        for sm in rm.get("scopeMetrics", []):
                            names = {str(m.get("name", "")) for m in sm.get("metrics", [])}
                            tally.metric_names.update(names)
                            tally.browser_metrics.update(names)

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
                                    if len(tally.server_spans) < MAX_SERVER_SPANS:
                                        entry = (span.name, span.trace_id.hex())
                                        tally.server_spans[span.span_id.hex()] = entry
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


def _value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return None


def _browser_span(span: dict[str, Any], kind: str) -> BrowserSpan:
    attrs = {str(a.get("key", "")): _value(a.get("value", {})) for a in span.get("attributes", [])}
    return BrowserSpan(
        name=str(span.get("name", "")),
        kind=kind,
        trace_id=str(span.get("traceId", "")),
        span_id=str(span.get("spanId", "")),
        parent_span_id=str(span.get("parentSpanId", "")),
        attributes=attrs,
    )


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
