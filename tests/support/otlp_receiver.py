"""A real OTLP/HTTP receiver for end-to-end tests.

:class:`OTLPReceiver` listens on 127.0.0.1 (random port) with the stdlib ``ThreadingHTTPServer``,
accepts ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` as ``application/x-protobuf`` (optionally
gzip- or deflate-compressed), decodes them with ``opentelemetry.proto`` and keeps the result as plain
dataclasses (:class:`Span`, :class:`MetricPoint`, :class:`LogRecord`). Point a process at it with
``receiver.exporter_env()`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint`` and
``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``).

Fault modes (``receiver.mode = ...``, changeable at any time) let reliability tests see what the
exporter does when the backend misbehaves:

* ``"ok"`` -- decode, store, answer 200 (default);
* ``"status:503"``, ``"status:429"`` (any 100-599) -- read the body, store nothing, answer that status
  (with ``Retry-After`` when :attr:`OTLPReceiver.retry_after` is set);
* ``"stall"`` -- read the body and never answer, until the mode changes, :meth:`OTLPReceiver.release_stalled`
  is called (then the request is handled as in ``"ok"``) or the receiver stops (then the connection is
  closed without an answer);
* ``"slow:<seconds>"`` -- wait that long, then behave as ``"ok"``.

Every request is counted per path whatever the mode (:meth:`OTLPReceiver.request_count`).

Browsers: payloads may also be OTLP/JSON (``Content-Type: application/json``, ids as hex, as the
OpenTelemetry JS exporters send them); they are decoded into the same dataclasses. Cross-origin
requests are answered with CORS headers, and CORS preflights (``OPTIONS``) are answered whatever
the mode, from the origins in :attr:`OTLPReceiver.allowed_origins` (``None``: any origin), and
recorded apart from the POSTs (:meth:`OTLPReceiver.preflights`), so request counts stay those of
exports.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import gzip
import http.server
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import SpanKind

T = TypeVar("T")

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
LOGS_PATH = "/v1/logs"

_DUMP_LIMIT = 40  # items per signal shown in a timeout dump

# ---------------------------------------------------------------------------------------------------
# Decoded data
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanEvent:
    """A span event: name, attributes and timestamp."""

    name: str
    attributes: dict[str, Any]
    time_ns: int = 0


@dataclass(frozen=True)
class SpanLink:
    """A span link to another span context."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One received span. Ids are lowercase hex; ``parent_span_id`` is ``""`` for a root span.

    ``kind`` is the OTLP kind name without prefix: ``"INTERNAL"``, ``"SERVER"``, ``"CLIENT"``,
    ``"PRODUCER"``, ``"CONSUMER"`` or ``"UNSPECIFIED"``. ``status_code`` is ``"UNSET"``, ``"OK"`` or
    ``"ERROR"``.
    """

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[SpanEvent]
    status_code: str
    status_message: str
    resource: dict[str, Any]
    scope: str
    start_ns: int
    end_ns: int
    links: list[SpanLink] = field(default_factory=list)
    #: the export request the span came in (1, 2, ... per receiver)
    export: int = 0

    @property
    def duration_s(self) -> float:
        """Span duration in seconds."""
        return (self.end_ns - self.start_ns) / 1e9

    def event_names(self) -> list[str]:
        """Names of the span's events, in order."""
        return [e.name for e in self.events]


@dataclass(frozen=True)
class Exemplar:
    """An exemplar attached to a data point (ids hex, ``""`` when absent)."""

    trace_id: str
    span_id: str
    value: float
    attributes: dict[str, Any]
    time_ns: int


@dataclass(frozen=True)
class MetricPoint:
    """One received data point, flattened with its metric, resource and scope.

    ``kind`` is ``"histogram"``, ``"sum"``, ``"gauge"``, ``"exponential_histogram"`` or ``"summary"``.
    ``value`` is set for sum/gauge; ``count``/``sum``/``bucket_counts``/``explicit_bounds``/``min``/``max``
    for histograms (``count``/``sum`` also for exponential histograms and summaries).
    ``temporality`` is ``"cumulative"``, ``"delta"`` or ``""`` (gauge/summary).
    Exponential histograms also carry ``scale``, ``zero_count`` and the positive buckets
    (``positive_offset``, ``positive_counts``). ``export`` numbers the export request the point
    came in (1, 2, ... per receiver), so points of one export can be taken together.
    """

    name: str
    unit: str
    description: str
    kind: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    start_ns: int
    time_ns: int
    temporality: str = ""
    is_monotonic: bool | None = None
    value: float | int | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    min: float | None = None
    max: float | None = None
    exemplars: list[Exemplar] = field(default_factory=list)
    scale: int | None = None
    zero_count: int | None = None
    positive_offset: int | None = None
    positive_counts: list[int] = field(default_factory=list)
    export: int = 0


@dataclass(frozen=True)
class LogRecord:
    """One received log record. ``body`` is the body as text (non-string bodies are JSON-encoded);
    ``body_value`` is the decoded AnyValue. Ids are hex, ``""`` when the record has no span context."""

    body: str
    severity_text: str
    severity_number: int
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    resource: dict[str, Any]
    scope: str = ""
    time_ns: int = 0
    event_name: str = ""
    body_value: Any = None


@dataclass(frozen=True)
class ReceivedRequest:
    """Metadata of one HTTP request as it arrived (before the fault mode decided the answer)."""

    path: str
    method: str
    headers: dict[str, str]
    body_bytes: int
    mode: str
    time_s: float


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------


def decode_any_value(value: common_pb2.AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the Python value (str/bool/int/float/bytes/list/dict/None)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    """Convert a repeated OTLP ``KeyValue`` to a dict."""
    return {kv.key: decode_any_value(kv.value) for kv in kvs}


def _kind_name(kind: int) -> str:
    return trace_pb2.Span.SpanKind.Name(kind).removeprefix("SPAN_KIND_")


def _status_name(code: int) -> str:
    return trace_pb2.Status.StatusCode.Name(code).removeprefix("STATUS_CODE_")


def _temporality_name(value: int) -> str:
    return {
        metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
        metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
    }.get(value, "")


def decode_spans(request: ExportTraceServiceRequest) -> list[Span]:
    """Flatten an ``ExportTraceServiceRequest`` into :class:`Span` objects."""
    out: list[Span] = []
    for rs in request.resource_spans:
        resource = decode_attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        name=s.name,
                        kind=_kind_name(s.kind),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        attributes=decode_attributes(s.attributes),
                        events=[
                            SpanEvent(e.name, decode_attributes(e.attributes), e.time_unix_nano)
                            for e in s.events
                        ],
                        status_code=_status_name(s.status.code),
                        status_message=s.status.message,
                        resource=resource,
                        scope=ss.scope.name,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        links=[
                            SpanLink(
                                link.trace_id.hex(), link.span_id.hex(), decode_attributes(link.attributes)
                            )
                            for link in s.links
                        ],
                    )
                )
    return out


def _exemplars(points: Iterable[metrics_pb2.Exemplar]) -> list[Exemplar]:
    out: list[Exemplar] = []
    for e in points:
        value = e.as_double if e.WhichOneof("value") == "as_double" else float(e.as_int)
        out.append(
            Exemplar(
                trace_id=e.trace_id.hex(),
                span_id=e.span_id.hex(),
                value=value,
                attributes=decode_attributes(e.filtered_attributes),
                time_ns=e.time_unix_nano,
            )
        )
    return out


def decode_metrics(request: ExportMetricsServiceRequest) -> list[MetricPoint]:
    """Flatten an ``ExportMetricsServiceRequest`` into :class:`MetricPoint` objects (one per point)."""
    out: list[MetricPoint] = []
    for rm in request.resource_metrics:
        resource = decode_attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                common: dict[str, Any] = {
                    "name": m.name,
                    "unit": m.unit,
                    "description": m.description,
                    "resource": resource,
                    "scope": sm.scope.name,
                }
                which = m.WhichOneof("data")
                if which in ("sum", "gauge"):
                    data = m.sum if which == "sum" else m.gauge
                    for p in data.data_points:
                        number = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                        out.append(
                            MetricPoint(
                                kind=which,
                                attributes=decode_attributes(p.attributes),
                                start_ns=p.start_time_unix_nano,
                                time_ns=p.time_unix_nano,
                                temporality=_temporality_name(m.sum.aggregation_temporality)
                                if which == "sum"
                                else "",
                                is_monotonic=m.sum.is_monotonic if which == "sum" else None,
                                value=number,
                                exemplars=_exemplars(p.exemplars),
                                **common,
                            )
                        )
                elif which == "histogram":
                    for hp in m.histogram.data_points:
                        out.append(
                            MetricPoint(
                                kind="histogram",
                                attributes=decode_attributes(hp.attributes),
                                start_ns=hp.start_time_unix_nano,
                                time_ns=hp.time_unix_nano,
                                temporality=_temporality_name(m.histogram.aggregation_temporality),
                                count=hp.count,
                                sum=hp.sum if hp.HasField("sum") else None,
                                bucket_counts=list(hp.bucket_counts),
                                explicit_bounds=list(hp.explicit_bounds),
                                min=hp.min if hp.HasField("min") else None,
                                max=hp.max if hp.HasField("max") else None,
                                exemplars=_exemplars(hp.exemplars),
                                **common,
                            )
                        )
                elif which == "exponential_histogram":
                    for ep in m.exponential_histogram.data_points:
                        out.append(
                            MetricPoint(
                                kind="exponential_histogram",
                                attributes=decode_attributes(ep.attributes),
                                start_ns=ep.start_time_unix_nano,
                                time_ns=ep.time_unix_nano,
                                temporality=_temporality_name(
                                    m.exponential_histogram.aggregation_temporality
                                ),
                                count=ep.count,
                                sum=ep.sum if ep.HasField("sum") else None,
                                min=ep.min if ep.HasField("min") else None,
                                max=ep.max if ep.HasField("max") else None,
                                exemplars=_exemplars(ep.exemplars),
                                scale=ep.scale,
                                zero_count=ep.zero_count,
                                positive_offset=ep.positive.offset,
                                positive_counts=list(ep.positive.bucket_counts),
                                **common,
                            )
                        )
                elif which == "summary":
                    for sp in m.summary.data_points:
                        out.append(
                            MetricPoint(
                                kind="summary",
                                attributes=decode_attributes(sp.attributes),
                                start_ns=sp.start_time_unix_nano,
                                time_ns=sp.time_unix_nano,
                                count=sp.count,
                                sum=sp.sum,
                                **common,
                            )
                        )
    return out


def decode_logs(request: ExportLogsServiceRequest) -> list[LogRecord]:
    """Flatten an ``ExportLogsServiceRequest`` into :class:`LogRecord` objects."""
    out: list[LogRecord] = []
    for rl in request.resource_logs:
        resource = decode_attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                body_value = decode_any_value(r.body)
                if isinstance(body_value, str):
                    body = body_value
                elif body_value is None:
                    body = ""
                else:
                    body = json.dumps(body_value, default=repr, sort_keys=True)
                out.append(
                    LogRecord(
                        body=body,
                        severity_text=r.severity_text,
                        severity_number=int(r.severity_number),
                        attributes=decode_attributes(r.attributes),
                        trace_id=r.trace_id.hex(),
                        span_id=r.span_id.hex(),
                        resource=resource,
                        scope=sl.scope.name,
                        time_ns=r.time_unix_nano,
                        event_name=r.event_name,
                        body_value=body_value,
                    )
                )
    return out


# ---------------------------------------------------------------------------------------------------
# Fault modes
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mode:
    text: str
    kind: str  # ok | status | stall | slow
    status: int = 200
    delay_s: float = 0.0


def _parse_mode(text: str) -> _Mode:
    if text == "ok":
        return _Mode(text, "ok")
    if text == "stall":
        return _Mode(text, "stall")
    name, _, arg = text.partition(":")
    try:
        if name == "status" and 100 <= int(arg) <= 599:
            return _Mode(text, "status", status=int(arg))
        if name == "slow" and float(arg) >= 0:
            return _Mode(text, "slow", delay_s=float(arg))
    except ValueError:
        pass
    raise ValueError(
        f"unknown receiver mode {text!r}; use 'ok', 'stall', 'status:<code>' or 'slow:<seconds>'"
    )


# ---------------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------------

_DECODERS: dict[str, tuple[Callable[[bytes], Any], Callable[[], Any]]] = {
    TRACES_PATH: (ExportTraceServiceRequest.FromString, ExportTraceServiceResponse),
    METRICS_PATH: (ExportMetricsServiceRequest.FromString, ExportMetricsServiceResponse),
    LOGS_PATH: (ExportLogsServiceRequest.FromString, ExportLogsServiceResponse),
}


#: OTLP/JSON spells ids as hex; protobuf's JSON mapping expects base64 for bytes fields.
_JSON_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _JSON_ID_KEYS and isinstance(v, str)
            else _hex_ids_to_base64(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids_to_base64(v) for v in value]
    return value


def parse_otlp_json(path: str, body: bytes) -> Any:
    """Decode an OTLP/JSON export request for ``path`` into its protobuf message."""
    request_type = {
        TRACES_PATH: ExportTraceServiceRequest,
        METRICS_PATH: ExportMetricsServiceRequest,
        LOGS_PATH: ExportLogsServiceRequest,
    }[path]
    data = _hex_ids_to_base64(json.loads(body))
    return json_format.ParseDict(data, request_type(), ignore_unknown_fields=True)


@dataclass(frozen=True)
class Preflight:
    """One CORS preflight (``OPTIONS``) as it arrived, and whether it was allowed."""

    path: str
    origin: str
    request_method: str
    request_headers: str
    allowed: bool


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its receiver and can cut open connections at stop."""

    daemon_threads = True

    def __init__(self, receiver: OTLPReceiver, address: tuple[str, int]) -> None:
        self.receiver = receiver
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        # Idle keep-alive connections park handler threads in recv(); server_close() joins those
        # threads, so unblock them by shutting the sockets down.
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)) or self.receiver.stopping:
            return
        self.receiver._record_error(f"handler error from {client_address}: {exc!r}")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector
    server: _Server
    timeout = 30  # an idle client cannot hold a handler thread forever

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silence per-request stderr lines

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/x-protobuf") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        receiver = self.server.receiver
        origin = self.headers.get("Origin")
        if origin and receiver._origin_allowed(origin):  # what a collector with CORS adds
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")
        if status in (429, 503) and receiver.retry_after is not None:
            self.send_header("Retry-After", str(receiver.retry_after))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self._send(405, b"OTLP receiver: POST only\n", "text/plain")

    def do_OPTIONS(self) -> None:
        """A CORS preflight, answered like the collector's OTLP/HTTP receiver (whatever the mode)."""
        self._read_body()
        receiver = self.server.receiver
        origin = self.headers.get("Origin", "")
        method = self.headers.get("Access-Control-Request-Method", "")
        wanted = self.headers.get("Access-Control-Request-Headers", "")
        allowed = bool(origin) and receiver._origin_allowed(origin) and method in ("POST", "")
        receiver._note_preflight(Preflight(urlsplit(self.path).path, origin, method, wanted, allowed))
        self.send_response(204 if allowed else 403)
        if allowed:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Access-Control-Allow-Methods", "POST")
            if wanted:
                self.send_header("Access-Control-Allow-Headers", wanted)
            self.send_header("Access-Control-Max-Age", "7200")
        self.send_header("Vary", "Origin")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        receiver = self.server.receiver
        path = urlsplit(self.path).path
        raw = self._read_body()
        mode, gate = receiver._note_request(self, path, len(raw))

        if mode.kind == "stall":
            if not receiver._wait_stalled(gate):
                self.close_connection = True  # receiver stopped: hang up without an answer
                return
        elif mode.kind == "slow":
            if receiver._stop_event.wait(mode.delay_s):
                self.close_connection = True
                return
        elif mode.kind == "status":
            self._send(mode.status, b"", "text/plain")
            return

        if path not in _DECODERS:
            self._send(404, f"unknown OTLP path {path}\n".encode(), "text/plain")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in ("application/x-protobuf", "application/json"):
            receiver._record_error(f"{path}: unsupported Content-Type {content_type!r}")
            self._send(415, b"only application/x-protobuf and application/json are supported\n", "text/plain")
            return
        as_json = content_type == "application/json"
        try:
            body = _decompress(raw, self.headers.get("Content-Encoding", ""))
            parse, response_type = _DECODERS[path]
            receiver._store(path, parse_otlp_json(path, body) if as_json else parse(body))
        except (DecodeError, OSError, zlib.error, ValueError, json_format.ParseError) as exc:
            receiver._record_error(f"{path}: cannot decode {len(raw)} bytes: {exc!r}")
            self._send(400, f"bad OTLP payload: {exc}\n".encode(), "text/plain")
            return
        if as_json:
            self._send(200, b"{}", "application/json")
        else:
            self._send(200, response_type().SerializeToString())


def _decompress(raw: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -zlib.MAX_WBITS)  # raw deflate without zlib header
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def closed_port() -> int:
    """Return a 127.0.0.1 port where connections are refused (nothing listens, nothing else can bind).

    The port is held by a bound, non-listening socket for the rest of the session so that no other
    server can take it; connecting to it gets ECONNREFUSED on Linux.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _held_sockets.append(sock)
    port: int = sock.getsockname()[1]
    return port


_held_sockets: list[socket.socket] = []


@atexit.register
def release_closed_ports() -> None:
    """Close the sockets that reserve :func:`closed_port` ports (runs at interpreter exit)."""
    while _held_sockets:
        _held_sockets.pop().close()


# ---------------------------------------------------------------------------------------------------
# Receiver
# ---------------------------------------------------------------------------------------------------


class OTLPReceiver:
    """In-process OTLP/HTTP receiver; see the module docstring. Start with :meth:`start` or ``with``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._points: list[MetricPoint] = []
        self._logs: list[LogRecord] = []
        self._requests: list[ReceivedRequest] = []
        self._errors: list[str] = []
        self._exports: dict[str, int] = {}
        self._mode = _parse_mode("ok")
        self._stall_gate = threading.Event()
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: Seconds sent as ``Retry-After`` with 429/503 answers; None sends no header.
        self.retry_after: float | int | None = None
        #: Origins whose cross-origin requests (and preflights) are allowed; None allows any.
        self.allowed_origins: set[str] | None = None
        self._preflights: list[Preflight] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> OTLPReceiver:
        """Bind and serve in a background thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("receiver already started")
        self._server = _Server(self, self._address)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release stalled handlers (they hang up unanswered) and close all sockets."""
        server = self._server
        if server is None or self._stop_event.is_set():
            return
        self._stop_event.set()
        with self._lock:
            self._stall_gate.set()
        server.shutdown()
        server.cut_connections()
        server.server_close()  # joins handler threads
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OTLPReceiver:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop_event.is_set()

    @property
    def port(self) -> int:
        """The TCP port the receiver listens on."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``, for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, signal: str) -> str:
        """Full per-signal URL (``signal`` is ``"traces"``, ``"metrics"`` or ``"logs"``)."""
        return f"{self.endpoint}/v1/{signal}"

    def exporter_env(self, *, fast: bool = True) -> dict[str, str]:
        """Env vars that make an OTel SDK process export all signals here over http/protobuf.

        With ``fast`` the batch span/log processors flush every 100 ms and metrics export every
        500 ms, so tests do not wait for the 5 s / 60 s defaults.
        """
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        if fast:
            env |= {
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_BLRP_SCHEDULE_DELAY": "100",
                "OTEL_METRIC_EXPORT_INTERVAL": "500",
            }
        return env

    # -- fault modes -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """Current fault mode (see module docstring). Setting a new mode releases stalled requests."""
        return self._mode.text

    @mode.setter
    def mode(self, value: str) -> None:
        parsed = _parse_mode(value)
        with self._lock:
            self._mode = parsed
            if parsed.kind != "stall":
                self._release_locked()

    def release_stalled(self) -> None:
        """Let every currently stalled request proceed (answered as in mode ``"ok"``)."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        self._stall_gate.set()
        if not self._stop_event.is_set():
            self._stall_gate = threading.Event()

    def _wait_stalled(self, gate: threading.Event) -> bool:
        """Block a handler until released; False if the receiver is stopping."""
        gate.wait()
        return not self._stop_event.is_set()

    # -- recording (handler side) ----------------------------------------------------------------

    def _note_request(self, handler: _Handler, path: str, size: int) -> tuple[_Mode, threading.Event]:
        with self._lock:
            mode = self._mode
            self._requests.append(
                ReceivedRequest(
                    path=path,
                    method=handler.command,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body_bytes=size,
                    mode=mode.text,
                    time_s=time.time(),
                )
            )
            # Taken under the same lock as the mode, so a release between here and the wait still counts.
            gate = self._stall_gate
        return mode, gate

    def _store(self, path: str, message: Any) -> None:
        if path == TRACES_PATH:
            spans = decode_spans(message)
            with self._lock:
                self._exports[path] = number = self._exports.get(path, 0) + 1
                self._spans.extend(dataclasses.replace(s, export=number) for s in spans)
        elif path == METRICS_PATH:
            points = decode_metrics(message)
            with self._lock:
                self._exports[path] = number = self._exports.get(path, 0) + 1
                self._points.extend(dataclasses.replace(p, export=number) for p in points)
        else:
            logs = decode_logs(message)
            with self._lock:
                self._logs.extend(logs)

    def _origin_allowed(self, origin: str) -> bool:
        return self.allowed_origins is None or origin in self.allowed_origins

    def _note_preflight(self, preflight: Preflight) -> None:
        with self._lock:
            self._preflights.append(preflight)

    def preflights(self) -> list[Preflight]:
        """CORS preflights received (not counted among :meth:`requests`)."""
        with self._lock:
            return list(self._preflights)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    # -- queries ---------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget all received data, requests and errors (the mode is kept)."""
        with self._lock:
            self._spans.clear()
            self._points.clear()
            self._logs.clear()
            self._requests.clear()
            self._errors.clear()
            self._preflights.clear()

    def spans(
        self,
        name: str | None = None,
        kind: str | int | SpanKind | None = None,
        *,
        trace_id: str | None = None,
    ) -> list[Span]:
        """Received spans in arrival order, optionally filtered.

        ``kind`` may be a name (``"SERVER"``, case-insensitive), an ``opentelemetry.trace.SpanKind``,
        or an OTLP proto number (2 = SERVER; note SpanKind's own ``.value`` numbering differs).
        """
        want_kind = _normalize_kind(kind)
        with self._lock:
            spans = list(self._spans)
        return [
            s
            for s in spans
            if (name is None or s.name == name)
            and (want_kind is None or s.kind == want_kind)
            and (trace_id is None or s.trace_id == trace_id)
        ]

    def metric_points(self, name: str | None = None) -> list[MetricPoint]:
        """Received data points in arrival order, optionally only those of metric ``name``."""
        with self._lock:
            points = list(self._points)
        return [p for p in points if name is None or p.name == name]

    def metric_names(self) -> set[str]:
        """Names of all metrics received so far."""
        return {p.name for p in self.metric_points()}

    def logs(self, body_contains: str | None = None) -> list[LogRecord]:
        """Received log records in arrival order, optionally only those whose body contains a string."""
        with self._lock:
            logs = list(self._logs)
        return [r for r in logs if body_contains is None or body_contains in r.body]

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """Metadata of received HTTP requests (all modes), optionally for one path."""
        with self._lock:
            reqs = list(self._requests)
        return [r for r in reqs if path is None or r.path == path]

    def request_count(self, path: str | None = None) -> int:
        """How many requests arrived (any mode, decoded or not), in total or for one path."""
        return len(self.requests(path))

    def request_counts(self) -> dict[str, int]:
        """Requests received per path."""
        counts: dict[str, int] = {}
        for r in self.requests():
            counts[r.path] = counts.get(r.path, 0) + 1
        return counts

    def errors(self) -> list[str]:
        """Payloads the receiver could not accept (bad content type, undecodable body) and handler errors."""
        with self._lock:
            return list(self._errors)

    # -- aggregated metric values ----------------------------------------------------------------

    def latest_points(
        self, name: str, attributes: Mapping[str, Any] | None = None, **attr_filter: Any
    ) -> list[MetricPoint]:
        """The newest point of each series of metric ``name`` whose attributes match the filter.

        A series is (resource ``service.instance.id`` -- or the whole resource when absent --, scope,
        attribute set). Filter with keyword arguments or, for dotted keys, a mapping:
        ``latest_points("http.server.request.duration", {"http.route": "/items"})``.
        """
        wanted = {**(attributes or {}), **attr_filter}
        latest: dict[str, MetricPoint] = {}
        for p in self.metric_points(name):
            if not _matches(p.attributes, wanted):
                continue
            key = _series_key(p)
            if key not in latest or p.time_ns >= latest[key].time_ns:
                latest[key] = p
        return list(latest.values())

    def _total(self, name: str, attr: str, wanted: Mapping[str, Any]) -> float:
        total: float = 0
        delta = [
            p for p in self.metric_points(name) if p.temporality == "delta" and _matches(p.attributes, wanted)
        ]
        for p in delta:
            total += getattr(p, attr) or 0
        for p in self.latest_points(name, wanted):
            if p.temporality != "delta":
                total += getattr(p, attr) or 0
        return total

    def histogram_count(
        self, name: str, attributes: Mapping[str, Any] | None = None, **attr_filter: Any
    ) -> int:
        """Total observation count of histogram ``name`` over matching series.

        Cumulative series contribute their latest point, delta series the sum of all points; series of
        different ``service.instance.id`` values (e.g. workers) are added up.
        """
        return int(self._total(name, "count", {**(attributes or {}), **attr_filter}))

    def histogram_sum(
        self, name: str, attributes: Mapping[str, Any] | None = None, **attr_filter: Any
    ) -> float:
        """Sum of recorded values of histogram ``name`` over matching series (as :meth:`histogram_count`)."""
        return self._total(name, "sum", {**(attributes or {}), **attr_filter})

    def sum_value(self, name: str, attributes: Mapping[str, Any] | None = None, **attr_filter: Any) -> float:
        """Value of (up-down) counter ``name`` summed over matching series (as :meth:`histogram_count`)."""
        return self._total(name, "value", {**(attributes or {}), **attr_filter})

    # -- waiting ---------------------------------------------------------------------------------

    def wait_for(
        self,
        predicate: Callable[[], T],
        *,
        timeout: float = 10.0,
        what: str = "condition",
        interval: float = 0.05,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy and return that.

        On timeout raise AssertionError naming ``what`` and dumping everything received so far.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.dump()}")
            time.sleep(interval)

    def wait_for_spans(
        self,
        count: int = 1,
        *,
        name: str | None = None,
        kind: str | int | SpanKind | None = None,
        where: Callable[[Span], bool] | None = None,
        timeout: float = 10.0,
        what: str | None = None,
    ) -> list[Span]:
        """Wait until at least ``count`` spans match ``name``/``kind`` (and ``where``); return them all."""
        what = what or f"{count} span(s) name={name!r} kind={kind!r}"

        def matching() -> list[Span]:
            found = [s for s in self.spans(name, kind) if where is None or where(s)]
            return found if len(found) >= count else []

        return self.wait_for(matching, timeout=timeout, what=what)

    def wait_for_metric(self, name: str, *, timeout: float = 10.0) -> list[MetricPoint]:
        """Wait until at least one point of metric ``name`` arrived; return its points."""
        return self.wait_for(lambda: self.metric_points(name), timeout=timeout, what=f"metric {name!r}")

    def wait_for_logs(
        self, body_contains: str | None = None, *, count: int = 1, timeout: float = 10.0
    ) -> list[LogRecord]:
        """Wait until at least ``count`` log records (optionally containing a string) arrived."""
        return self.wait_for(
            lambda: found if len(found := self.logs(body_contains)) >= count else [],
            timeout=timeout,
            what=f"{count} log record(s) containing {body_contains!r}",
        )

    def dump(self) -> str:
        """A readable summary of everything received (used in timeout messages)."""
        spans = self.spans()
        points = self.metric_points()
        logs = self.logs()
        lines = [f"=== OTLP receiver {self.endpoint if self._server else '(not started)'} mode={self.mode}"]
        lines.append(f"requests per path: {self.request_counts() or '{}'}")
        lines.append(f"spans ({len(spans)}):")
        for s in spans[-_DUMP_LIMIT:]:
            parent = s.parent_span_id or "root"
            lines.append(
                f"  {s.kind:<8} {s.name!r} trace={s.trace_id[:8]} span={s.span_id[:8]} parent={parent[:8]}"
                f" status={s.status_code} attrs={_short(s.attributes)}"
                + (f" events={s.event_names()}" if s.events else "")
            )
        series: dict[tuple[str, str], int] = {}
        for p in points:
            series[(p.name, p.kind)] = series.get((p.name, p.kind), 0) + 1
        lines.append(f"metrics ({len(series)} names, {len(points)} points):")
        for (name, kind), n in sorted(series.items())[:_DUMP_LIMIT]:
            attrs = sorted({_short(p.attributes, 80) for p in points if p.name == name})[:3]
            lines.append(f"  {kind:<9} {name!r} points={n} e.g. {'; '.join(attrs)}")
        lines.append(f"logs ({len(logs)}):")
        for r in logs[-_DUMP_LIMIT:]:
            lines.append(
                f"  [{r.severity_text or r.severity_number}] {r.body[:120]!r} trace={r.trace_id[:8]}"
            )
        errors = self.errors()
        if errors:
            lines.append(f"errors ({len(errors)}):")
            lines.extend(f"  {e}" for e in errors[-10:])
        return "\n".join(lines)


def _normalize_kind(kind: str | int | SpanKind | None) -> str | None:
    if kind is None:
        return None
    if isinstance(kind, SpanKind):
        return kind.name
    if isinstance(kind, int):
        return _kind_name(kind)
    return kind.upper().removeprefix("SPAN_KIND_")


def _matches(attributes: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return all(k in attributes and attributes[k] == v for k, v in wanted.items())


def _series_key(p: MetricPoint) -> str:
    instance = p.resource.get("service.instance.id")
    resource = repr(instance) if instance is not None else repr(sorted(p.resource.items()))
    return f"{resource}|{p.scope}|{sorted(p.attributes.items())!r}"


def _short(attrs: Mapping[str, Any], limit: int = 200) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
    return "{" + (text if len(text) <= limit else text[: limit - 3] + "...") + "}"
