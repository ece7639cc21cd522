"""Prometheus pull exporter: ``OTEL_METRICS_EXPORTER=prometheus``.

Serves ``GET /metrics`` on ``OTEL_EXPORTER_PROMETHEUS_HOST:OTEL_EXPORTER_PROMETHEUS_PORT``
(default ``127.0.0.1:9464``) from a small stdlib HTTP server on a daemon thread.  Every
scrape collects the SDK's metrics and our pre-aggregated instruments and renders them:

* as **OpenMetrics 1.0** when the scraper's ``Accept`` header asks for
  ``application/openmetrics-text`` (Prometheus does), *with exemplars*: each histogram
  bucket carries the trace id and span id of a request that landed in it, so Prometheus
  alone links a latency bucket to the trace (the stock Python exporter writes none);
* as **Prometheus text 0.0.4** otherwise (no exemplars in that format).

Names follow the OpenTelemetry Collector's translation (``UnderscoreEscapingWithSuffixes``)
so a dashboard works the same whether metrics arrive through the Collector or by scraping
the app: dots become underscores, the unit becomes a suffix (``s`` -> ``_seconds``, ``By``
-> ``_bytes``, ``1`` on a gauge -> ``_ratio``, ``{...}`` annotations dropped), monotonic
sums get ``_total``, and a suffix the name already holds is not repeated.  Attributes
become sanitized labels, plus ``otel_scope_name``/``otel_scope_version``; resource
attributes go on one ``target_info`` series.  ``job`` and ``instance`` are left to
Prometheus, which adds them from its scrape config.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import math
import re
import socket
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource

from otel_perf import _names as n
from otel_perf._core import guard
from otel_perf._metrics.bridge import Streams, merge
from otel_perf._metrics.instruments import Counter, Registry

logger = logging.getLogger("otel_perf")

__all__ = [
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "PrometheusMetricReader",
    "label_name",
    "metric_name",
    "render",
    "wants_openmetrics",
]

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"
_GZIP_MIN_BYTES = 1024

# --- naming (as the Collector's prometheus translator, UnderscoreEscapingWithSuffixes) ---------

#: OTel (UCUM) unit -> Prometheus suffix.  ``"1"`` maps to nothing (gauges get ``_ratio``).
UNIT_SUFFIXES: dict[str, str] = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tebibytes",
    "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams",
    "Cel": "celsius", "Hz": "hertz", "%": "percent", "1": "",
}  # fmt: skip
#: Denominator of ``x/y`` units: ``By/s`` -> ``bytes_per_second``.
PER_UNIT_SUFFIXES: dict[str, str] = {
    "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year",
}  # fmt: skip

_NAME_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")  # "_" splits too, so no "__" and no repeated suffix
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")

# Prometheus metric types as they appear in "# TYPE" lines.
COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
# OTel data kinds that name differently: only monotonic sums get "_total", only gauges "_ratio".
MONOTONIC_SUM, UP_DOWN_SUM = "sum", "updownsum"
_PROMETHEUS_TYPE = {MONOTONIC_SUM: COUNTER, UP_DOWN_SUM: GAUGE, GAUGE: GAUGE, HISTOGRAM: HISTOGRAM}


def _unit_tokens(unit: str) -> tuple[list[str], list[str]]:
    """Suffix tokens of a unit: main (``["bytes"]``) and per (``["per", "second"]``)."""
    main_unit, _, per_unit = unit.partition("/")
    main_unit, per_unit = main_unit.strip(), per_unit.strip()
    main: list[str] = []
    if main_unit and "{" not in main_unit and "}" not in main_unit:
        main = [t for t in _NAME_SPLIT.split(UNIT_SUFFIXES.get(main_unit, main_unit)) if t]
    per: list[str] = []
    if per_unit and "{" not in per_unit and "}" not in per_unit:
        per = [t for t in _NAME_SPLIT.split(PER_UNIT_SUFFIXES.get(per_unit, per_unit)) if t]
    return main, ["per", *per] if per else []


@lru_cache(maxsize=1024)
def metric_name(name: str, unit: str, kind: str) -> tuple[str, str]:
    """Prometheus family name and OpenMetrics unit of an OTel metric.

    ``kind`` is the OTel kind: ``"sum"`` (monotonic; the family name is returned *without*
    ``_total``, which the samples add), ``"updownsum"``, ``"gauge"`` (unit ``1`` adds
    ``_ratio``) or ``"histogram"``.  A unit suffix the name already holds is not repeated.
    The unit is "" when there is none or the name does not end with it (then OpenMetrics
    allows no ``# UNIT`` line).
    """
    tokens = [t for t in _NAME_SPLIT.split(name) if t]
    main, per = _unit_tokens(unit)
    if main and not (_ends_with(tokens, main) or (len(main) == 1 and main[0] in tokens)):
        tokens += main
    if per and not _ends_with(tokens, per):
        tokens += per
    unit_tokens = main + per
    if kind == MONOTONIC_SUM and tokens and tokens[-1] == "total":
        tokens.pop()  # "_total" is the sample suffix, not part of the family name
    if kind == GAUGE and unit.strip() == "1":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
        unit_tokens = ["ratio"]
    family = "_".join(tokens) or "_"
    if family[0].isdigit():
        family = "_" + family
    unit_text = "_".join(unit_tokens)
    if unit_text and not family.endswith("_" + unit_text):
        unit_text = ""
    return family, unit_text


def _ends_with(tokens: list[str], suffix: list[str]) -> bool:
    return len(tokens) >= len(suffix) and tokens[-len(suffix) :] == suffix


@lru_cache(maxsize=4096)
def label_name(key: str) -> str:
    """Prometheus label name for an attribute key (invalid characters -> ``_``; ``key_`` prefix
    before a leading digit, ``key`` before a single leading underscore), as the Collector does."""
    if not key:
        return "key_empty"
    out = _LABEL_INVALID.sub("_", key)
    if out[0].isdigit():
        return "key_" + out
    if out.startswith("_") and not out.startswith("__"):
        return "key" + out
    return out


def _label_value(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Sequence):
        return json.dumps(list(value), separators=(",", ":"), default=str)
    return str(value)


def _escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _number(value: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``NaN``, ``1``, ``0.25``)."""
    if isinstance(value, int):
        return str(value)
    if value != value:  # noqa: PLR0124 - NaN check without a function call
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _timestamp(time_ns: int) -> str:
    """Seconds since the epoch, exact (an OpenMetrics exemplar timestamp)."""
    return f"{time_ns // 1_000_000_000}.{time_ns % 1_000_000_000:09d}"


_RESERVED_LABELS = frozenset({"le", "__name__"})
_LABELS_CACHE: dict[tuple[Any, ...], str] = {}
_LABELS_CACHE_MAX = 50_000


def _labels(attributes: Mapping[str, Any] | None, scope_labels: tuple[tuple[str, str], ...]) -> str:
    """The inside of ``{...}`` for a point, cached: the same series renders alike every scrape."""
    try:
        # The value types are part of the key: True == 1 but renders "true", not "1".
        key = (
            (scope_labels, *attributes.items(), *map(type, attributes.values()))
            if attributes
            else (scope_labels,)
        )
        text = _LABELS_CACHE.get(key)
    except TypeError:  # an unhashable (list) attribute value
        return _render_labels(attributes, scope_labels)
    if text is None:
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        text = _LABELS_CACHE[key] = _render_labels(attributes, scope_labels)
    return text


def _render_labels(attributes: Mapping[str, Any] | None, scope_labels: Sequence[tuple[str, str]]) -> str:
    """Sanitized names, escaped values, empty values left out; sorted by attribute key."""
    names = [k for k, _ in scope_labels]
    values = [v for _, v in scope_labels]
    if attributes:
        for key in sorted(attributes):
            raw = attributes[key]
            value = raw if type(raw) is str else _label_value(raw) if raw is not None else ""
            if not value:
                continue
            name = label_name(key)
            if name in _RESERVED_LABELS:  # would clash with the bucket bound or the metric name
                name = "exported_" + name
            if name in names:
                # Keys that sanitize alike ("a.b", "a_b") share a label, values joined as the Collector does.
                index = names.index(name)
                values[index] = f"{values[index]};{value}"
                continue
            names.append(name)
            values.append(value)
    return ",".join([f'{n}="{_escape_label_value(v)}"' for n, v in zip(names, values, strict=True)])


# --- rendering -----------------------------------------------------------------------------------


@dataclass
class _Family:
    name: str
    type: str
    unit: str
    help: str
    lines: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def first(self, labels: str) -> bool:
        """True the first time a label set is seen (a repeated series would fail the scrape)."""
        if labels in self.seen:
            return False
        self.seen.add(labels)
        return True


def _exemplar(ex: Any) -> str:
    """`` # {trace_id="..",span_id=".."} value timestamp``, or "" when the exemplar has no trace."""
    trace_id = getattr(ex, "trace_id", None)
    if not trace_id:
        return ""
    span_id = getattr(ex, "span_id", None) or 0
    return (
        f' # {{trace_id="{trace_id:032x}",span_id="{span_id:016x}"}} '
        f"{_number(ex.value)} {_timestamp(ex.time_unix_nano)}"
    )


def _latest_per_bucket(exemplars: Iterable[Any], bounds: Sequence[float]) -> dict[int, Any]:
    """bucket index -> newest exemplar with a trace id (OpenMetrics allows one per bucket)."""
    out: dict[int, Any] = {}
    for ex in exemplars:
        if not getattr(ex, "trace_id", None):
            continue
        index = bisect_left(bounds, ex.value)  # bucket i holds bounds[i-1] < v <= bounds[i]
        current = out.get(index)
        if current is None or ex.time_unix_nano >= current.time_unix_nano:
            out[index] = ex
    return out


@lru_cache(maxsize=256)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(_number(float(b)) for b in bounds), "+Inf")


class _Renderer:
    """Groups points into Prometheus families (one per name) and writes them in one format."""

    def __init__(self, openmetrics: bool) -> None:
        self.openmetrics = openmetrics
        self.families: dict[str, _Family] = {}
        self.skipped: list[str] = []

    def family(self, metric: Metric, kind: str) -> _Family | None:
        name, unit = metric_name(metric.name, metric.unit or "", kind)
        prom_type = _PROMETHEUS_TYPE[kind]
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = _Family(name, prom_type, unit, metric.description or "")
        elif fam.type != prom_type:
            self.skipped.append(f"{metric.name} ({prom_type}) clashes with {name} ({fam.type})")
            return None
        return fam

    def add(self, metric: Metric, scope_labels: tuple[tuple[str, str], ...]) -> None:
        data = metric.data
        if isinstance(data, Histogram):
            fam = self.family(metric, HISTOGRAM)
            if fam is not None:
                for h_point in data.data_points:
                    self._histogram_point(fam, h_point, scope_labels)
            return
        if isinstance(data, Sum):
            kind = MONOTONIC_SUM if data.is_monotonic else UP_DOWN_SUM
        elif isinstance(data, Gauge):
            kind = GAUGE
        else:
            self.skipped.append(f"{metric.name} ({type(data).__name__}) has no Prometheus equivalent here")
            return
        fam = self.family(metric, kind)
        if fam is None:
            return
        sample = fam.name + "_total" if kind == MONOTONIC_SUM else fam.name
        exemplars = self.openmetrics and kind == MONOTONIC_SUM
        for point in data.data_points:
            labels = _labels(point.attributes, scope_labels)
            if not fam.first(labels):
                continue
            line = (
                f"{sample}{{{labels}}} {_number(point.value)}"
                if labels
                else f"{sample} {_number(point.value)}"
            )
            if exemplars and point.exemplars:
                line += _exemplar(max(point.exemplars, key=lambda e: e.time_unix_nano))
            fam.lines.append(line)

    def _histogram_point(
        self, fam: _Family, point: HistogramDataPoint, scope_labels: tuple[tuple[str, str], ...]
    ) -> None:
        labels = _labels(point.attributes, scope_labels)
        if not fam.first(labels):
            return
        out = fam.lines
        bounds = tuple(point.explicit_bounds)
        exemplars = (
            _latest_per_bucket(point.exemplars, bounds) if self.openmetrics and point.exemplars else {}
        )
        prefix = f"{fam.name}_bucket{{{labels}," if labels else f"{fam.name}_bucket{{"
        counts = point.bucket_counts
        total = 0
        for i, le in enumerate(_le_values(bounds)):
            total += counts[i] if i < len(counts) else 0
            ex = exemplars.get(i)
            if ex is None:
                out.append(f'{prefix}le="{le}"}} {total}')
            else:
                out.append(f'{prefix}le="{le}"}} {total}{_exemplar(ex)}')
        brace = f"{{{labels}}}" if labels else ""
        out.append(f"{fam.name}_sum{brace} {_number(point.sum)}")
        out.append(f"{fam.name}_count{brace} {point.count}")

    def write(self, target_info: Mapping[str, Any]) -> str:
        om = self.openmetrics
        parts: list[str] = []
        if target_info:
            if om:
                parts.append("# HELP target Target metadata\n# TYPE target info\n")
            else:
                parts.append("# HELP target_info Target metadata\n# TYPE target_info gauge\n")
            parts.append(f"target_info{{{_labels(target_info, ())}}} 1\n")
        for fam in self.families.values():
            if not fam.lines:
                continue
            # Prometheus text names a counter family with its _total; OpenMetrics without.
            type_name = fam.name + "_total" if fam.type == COUNTER and not om else fam.name
            if fam.help:
                parts.append(f"# HELP {type_name} {_escape_help(fam.help, om)}\n")
            parts.append(f"# TYPE {type_name} {fam.type}\n")
            if om and fam.unit:
                parts.append(f"# UNIT {fam.name} {fam.unit}\n")
            parts.append("\n".join(fam.lines))
            parts.append("\n")
        if om:
            parts.append("# EOF\n")
        return "".join(parts)


def render(metrics_data: MetricsData | None, openmetrics: bool) -> str:
    """Render ``metrics_data`` as OpenMetrics 1.0 (with exemplars) or Prometheus text 0.0.4."""
    renderer = _Renderer(openmetrics)
    target_info: dict[str, Any] = {}
    for rm in metrics_data.resource_metrics if metrics_data else ():
        for key, value in rm.resource.attributes.items():
            target_info.setdefault(key, value)
        for sm in rm.scope_metrics:
            scope: list[tuple[str, str]] = []
            if sm.scope.name:
                scope.append(("otel_scope_name", sm.scope.name))
            if sm.scope.version:
                scope.append(("otel_scope_version", sm.scope.version))
            scope_labels = tuple(scope)
            for metric in sm.metrics:
                renderer.add(metric, scope_labels)
    for problem in renderer.skipped:
        _warn_once(problem)
    return renderer.write(target_info)


_warned: set[str] = set()


def _warn_once(problem: str) -> None:
    if problem in _warned or len(_warned) > 100:
        return
    _warned.add(problem)
    logger.warning("otel-perf: Prometheus exporter: metric %s; left out of /metrics.", problem)


def wants_openmetrics(accept: str | None) -> bool:
    """True when an ``Accept`` header asks for OpenMetrics (with a non-zero quality)."""
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() != "application/openmetrics-text":
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


# --- the reader and its HTTP server ----------------------------------------------------------------


class PrometheusMetricReader(MetricReader):
    """A pull ``MetricReader`` that serves our and the SDK's metrics on ``/metrics``.

    ``port`` 0 picks a free port (see :attr:`port` and :attr:`url`); the address is logged
    at INFO on logger ``otel_perf`` as "serving Prometheus metrics on http://host:port/metrics".
    A port that cannot be bound is logged as a warning and the app runs on without the
    endpoint (re-raised under our tests).  Under a pre-fork server each worker would need its
    own port: the endpoint serves the process that created it.

    Prometheus pulls cumulative series, so our instruments are served cumulative with explicit
    buckets whatever ``OTEL_EXPORTER_OTLP_METRICS_*`` say (those are the OTLP exporters'); the
    exemplar filter and the metric Views apply.
    """

    def __init__(
        self,
        registry: Registry,
        resource: Resource,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        exemplar_filter: str = "trace_based",
        views: Sequence[Any] = (),
    ) -> None:
        super().__init__()
        self._registry = registry
        self.streams = Streams(registry, exemplar_filter=exemplar_filter, views=views)
        self._resource = resource
        self._collect_lock = threading.Lock()
        self._received: MetricsData | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port
        self._start(host, port)

    @property
    def url(self) -> str:
        """The scrape URL, e.g. ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{METRICS_PATH}"

    def _start(self, host: str, port: int) -> None:
        try:
            server = _Server(self, (host, port))
        except OSError as exc:
            if guard.raising():
                raise
            logger.warning(
                "otel-perf: cannot serve Prometheus metrics on %s:%s (%s); this process's metrics are "
                "not exported. Set OTEL_EXPORTER_PROMETHEUS_HOST/OTEL_EXPORTER_PROMETHEUS_PORT; with "
                "several worker processes (uvicorn --workers, gunicorn) use OTEL_METRICS_EXPORTER=otlp.",
                host,
                port,
                exc,
            )
            return
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},  # the longest shutdown() waits
            name="otel-perf-prometheus",
            daemon=True,
        )
        self._thread.start()
        logger.info("otel-perf: serving Prometheus metrics on %s", self.url)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._received = metrics_data

    def metrics_data(self) -> MetricsData:
        """Collect now: the SDK's metrics (if this reader is registered) merged with our instruments."""
        with self._collect_lock:
            self._received = None
            if self._collect is not None:  # not yet registered on a MeterProvider: ours only
                self.collect()
            sdk_data, self._received = self._received, None
        return merge(sdk_data, self._resource, self.streams.collect())

    def scrape(self, accept: str | None = None) -> tuple[str, str]:
        """Body and content type for a scrape with this ``Accept`` header.

        Each scrape counts as one metrics export in the self-telemetry counters
        (``perf.telemetry.exported`` / ``.export.failures`` / ``.dropped``, signal ``metrics``),
        as each push does with the OTLP exporter.
        """
        openmetrics = wants_openmetrics(accept)
        try:
            body = render(self.metrics_data(), openmetrics)
        except Exception:
            self._count(n.TELEMETRY_EXPORT_FAILURES, n.TELEMETRY_DROPPED)
            raise
        self._count(n.TELEMETRY_EXPORTED)
        return body, OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE

    def _count(self, *names: str) -> None:
        for name in names:
            counter = self._registry.get(name)
            if isinstance(counter, Counter):
                counter.add(1, ("metrics",))

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing to flush: Prometheus pulls."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop the HTTP server (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout_millis / 1000.0)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reader: PrometheusMetricReader, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.reader = reader
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses the connection every scrape
    timeout = 120  # an idle kept-alive connection is closed after this many seconds

    def log_message(self, format: str, *args: Any) -> None:
        return  # no access log on the app's stderr

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in (METRICS_PATH, METRICS_PATH + "/"):
            self._send(404, b"not found; metrics are served on /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            body, content_type = self.server.reader.scrape(self.headers.get("Accept"))
        except Exception as exc:
            self._send(500, f"collecting metrics failed: {type(exc).__name__}\n".encode(), "text/plain")
            guard.internal_error("Prometheus scrape", exc)
            return
        data = body.encode("utf-8")
        encoding = None
        if len(data) >= _GZIP_MIN_BYTES and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            data = gzip.compress(data, compresslevel=1)
            encoding = "gzip"
        self._send(200, data, content_type, encoding)

    def _send(self, status: int, data: bytes, content_type: str, encoding: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        self.wfile.write(data)
