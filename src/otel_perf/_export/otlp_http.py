"""OTLP/HTTP exporters for spans, metrics and logs that never import protobuf.

The SDK's OTLP/HTTP exporters encode through the generated protobuf classes: importing them
brings protobuf and the ``*_pb2`` modules, 3.6 MB of every process's memory, in each gunicorn
worker and in its master (bench/README.md, "Run 11").  Since exporter 1.45 the SDK keeps
everything else an exporter does outside those modules: endpoint, headers, compression and
timeout resolution (``otlp.proto.http._common``), the HTTP client with its retries, backoff
and shutdown (``otlp.common.http._OTLPHTTPClient``), the exporter's self-metrics
(``create_exporter_metrics``) and the metric temporality and aggregation preferences
(``otlp.common._aggregation``).  The exporters here are those pieces around our encoders
(:class:`~otel_perf._export.otlp_spans.SpanEncoder`,
:class:`~otel_perf._export.otlp_metrics.MetricEncoder`,
:class:`~otel_perf._export.otlp_logs.LogEncoder`), with the SDK exporters' ``export``,
``shutdown`` and ``force_flush`` steps and messages, and their loggers' names.

Differences from the SDK's exporters, each by design: they take no constructor arguments
(we build them from the environment, as the SDK's do without arguments), and the metric
exporter has no ``max_export_batch_size`` (no variable sets it).  Exporter packages without
these pieces (before 1.45), or the probe ``otlp-encoder`` forced off, get the SDK's own
exporters, which is also what ``grpc`` and every other exporter name get.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from otel_perf._core.probes import forced_off

logger = logging.getLogger("otel_perf")
_SIGNALS = {  # signal -> (client kind, default path, SDK exporter module for the logger's name)
    "traces": ("spans", "v1/traces", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    "metrics": ("metrics", "v1/metrics", "opentelemetry.exporter.otlp.proto.http.metric_exporter"),
    "logs": ("logs", "v1/logs", "opentelemetry.exporter.otlp.proto.http._log_exporter"),
}


def lean_http_transport(signal: str) -> Any:
    """Our ``http.client`` transport for a plain-http OTLP endpoint, or None to keep the default.

    The SDK's default transport is a ``requests`` session, whose import alone (with
    charset_normalizer) is ~4.5 MB of RSS, and its other one urllib3 (1.9 MB).  For ``http://``
    endpoints without proxies, netrc, credentials in the URL or a credential provider, neither does anything
    ``http.client`` does not (:mod:`otel_perf._export.otlp_transport`).  Anything else (TLS,
    whose CA handling differs, proxies, ...) keeps the SDK's default.
    """
    env = os.environ
    endpoint = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"
    )
    if not endpoint.strip().lower().startswith("http://"):
        return None
    if "@" in urlsplit(endpoint.strip()).netloc:  # user:password@host: requests makes it Basic auth
        return None
    if any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" and v for k, v in env.items()):
        return None
    if any("CREDENTIAL_PROVIDER" in k and v for k, v in env.items()) or env.get("NETRC"):
        return None
    if os.path.exists(os.path.expanduser("~/.netrc")) or os.path.exists(os.path.expanduser("~/_netrc")):
        return None
    try:  # the SDK's transport interface (exporter 1.45+)
        from otel_perf._export.otlp_transport import StdlibHTTPTransport
    except ImportError:
        return None
    return StdlibHTTPTransport()


def _transport(signal: str) -> Any:
    return None if forced_off("otlp-lean-transport") else lean_http_transport(signal)


def sdk_exporter(cls: Any, signal: str) -> Any:
    """``cls()`` (an SDK OTLP/HTTP exporter) on the lean transport when it applies."""
    transport = _transport(signal)
    if transport is not None:
        try:
            return cls(_transport=transport)
        except TypeError:  # an SDK without pluggable transports
            pass
    return cls()


class _Sender:
    """What the three exporters share: the SDK's HTTP client and self-metrics for one signal."""

    def __init__(self, signal: str, component_type: Any) -> None:
        from opentelemetry.exporter.otlp.common import http as _http
        from opentelemetry.exporter.otlp.proto.http import _common
        from opentelemetry.sdk import environment_variables as names

        kind, path, module = _SIGNALS[signal]
        upper = signal.upper()
        self.logger = logging.getLogger(module)
        self.endpoint = _common._resolve_endpoint(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", path)  # type: ignore[arg-type]
        transport = _transport(signal) or _common._build_transport(
            None, None, None,
            f"OTEL_EXPORTER_OTLP_{upper}_CERTIFICATE",
            f"OTEL_EXPORTER_OTLP_{upper}_CLIENT_KEY",
            f"OTEL_EXPORTER_OTLP_{upper}_CLIENT_CERTIFICATE",
            session=_common._load_session_from_envvar(
                getattr(names, f"_OTEL_PYTHON_EXPORTER_OTLP_HTTP_{upper}_CREDENTIAL_PROVIDER")
            ),
        )  # fmt: skip
        self.max_request_size = _common._DEFAULT_MAX_REQUEST_SIZE
        self.too_large = _common._is_request_too_large
        self.too_large_error = _common.RequestPayloadTooLargeError
        self.client = _http._OTLPHTTPClient(
            transport=transport,
            endpoint=self.endpoint,
            kind=kind,  # type: ignore[arg-type]
            timeout=_common._resolve_timeout(f"OTEL_EXPORTER_OTLP_{upper}_TIMEOUT"),
            compression=_common._resolve_compression(f"OTEL_EXPORTER_OTLP_{upper}_COMPRESSION"),
            headers=_common._resolve_headers(None, f"OTEL_EXPORTER_OTLP_{upper}_HEADERS"),
            logger=self.logger,
        )
        self._component = (component_type, signal)
        self.metrics = self.exporter_metrics(None)
        self.shut = False

    def exporter_metrics(self, meter_provider: Any) -> Any:
        """The SDK exporters' self-metrics (``otel.sdk.exporter.*``), on ``meter_provider``."""
        from opentelemetry.exporter.otlp.common._exporter_metrics import create_exporter_metrics

        enabled = os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true"
        component_type, signal = self._component
        return create_exporter_metrics(component_type, signal, self.endpoint, meter_provider, enabled)  # type: ignore[arg-type]

    def send(self, what: str, count: int, encode: Any, *args: Any) -> bool:
        """Encode and send one batch of ``count`` items, as the SDK exporters' ``export`` does."""
        if self.shut:
            self.logger.warning("Exporter already shutdown, ignoring batch")
            return False
        with self.metrics.export_operation(count) as result:
            try:
                data = encode(*args)
            except Exception as error:
                self.logger.error("Failed to encode %s batch: %s", what, error)
                result.error = error
                return False
            if self.too_large(data, self.max_request_size):
                self.logger.warning(
                    "Dropping %s batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    what, len(data), self.max_request_size,
                )  # fmt: skip
                result.error = self.too_large_error(
                    f"Serialized {what} request size {len(data)} bytes exceeds max_request_size "
                    f"{self.max_request_size} bytes."
                )
                return False
            sent = self.client.export(data)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {"http.response.status_code": sent.status_code} if sent.status_code is not None else None
                )
                return False
        return True

    def shutdown(self) -> None:
        if self.shut:
            self.logger.warning("Exporter already shutdown, ignoring call")
            return
        self.shut = True
        self.client.shutdown()


def _lean_available() -> bool:
    """The probe: the SDK pieces the lean exporters are made of are all there."""
    if forced_off("otlp-encoder"):
        return False
    try:
        from opentelemetry.exporter.otlp.common import _aggregation, _exporter_metrics, http
        from opentelemetry.exporter.otlp.proto.http import _common
        from opentelemetry.sdk import environment_variables as names
    except ImportError:
        return False
    needed = (
        (http, "_OTLPHTTPClient"), (_exporter_metrics, "create_exporter_metrics"),
        (_aggregation, "_get_temporality"), (_aggregation, "_get_aggregation"),
        (_common, "_resolve_endpoint"), (_common, "_build_transport"), (_common, "_load_session_from_envvar"),
        (_common, "_resolve_timeout"), (_common, "_resolve_compression"), (_common, "_resolve_headers"),
        (_common, "_is_request_too_large"), (_common, "RequestPayloadTooLargeError"),
        (_common, "_DEFAULT_MAX_REQUEST_SIZE"),
        (names, "_OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER"),
    )  # fmt: skip
    return all(hasattr(module, name) for module, name in needed)


def span_exporter() -> Any:
    """An OTLP/HTTP span exporter: ours when the probe passes, else the SDK's."""
    if not _lean_available():
        return _sdk("traces")
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.semconv._incubating.attributes.otel_attributes import OtelComponentTypeValues

    from otel_perf._export.otlp_spans import SpanEncoder

    class LeanOTLPSpanExporter(SpanExporter):
        """The SDK's OTLP/HTTP span exporter, our encoder in place of protobuf's."""

        def __init__(self) -> None:
            self._sender = _Sender("traces", OtelComponentTypeValues.OTLP_HTTP_SPAN_EXPORTER)
            self._encoder = SpanEncoder()

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            ok = self._sender.send("span", len(spans), self._encoder.encode, spans)
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

        def shutdown(self) -> None:
            self._sender.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return _built(LeanOTLPSpanExporter, "traces")


def metric_exporter() -> Any:
    """An OTLP/HTTP metric exporter: ours when the probe passes, else the SDK's."""
    if not _lean_available():
        return _sdk("metrics")
    from opentelemetry.exporter.otlp.common._aggregation import _get_aggregation, _get_temporality
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
    from opentelemetry.semconv._incubating.attributes.otel_attributes import OtelComponentTypeValues

    from otel_perf._export.otlp_metrics import MetricEncoder

    class LeanOTLPMetricExporter(MetricExporter):
        """The SDK's OTLP/HTTP metric exporter, our encoder in place of protobuf's."""

        def __init__(self) -> None:
            super().__init__(
                preferred_temporality=_get_temporality(None), preferred_aggregation=_get_aggregation(None)
            )
            self._sender = _Sender("metrics", OtelComponentTypeValues.OTLP_HTTP_METRIC_EXPORTER)
            self._encoder = MetricEncoder()

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            sender = self._sender
            if sender.shut:
                sender.logger.warning("Exporter already shutdown, ignoring batch")
                return MetricExportResult.FAILURE
            try:
                data, points = self._encoder.encode(metrics_data)
            except Exception as error:
                sender.logger.error("Failed to encode metrics batch: %s", error)
                return MetricExportResult.FAILURE
            ok = sender.send("metrics", points, _encoded, data)
            return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self._sender.shutdown()

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def set_meter_provider(self, meter_provider: Any) -> None:
            """Where the exporter's own metrics go (the SDK metric exporter's method)."""
            self._sender.metrics = self._sender.exporter_metrics(meter_provider)

    return _built(LeanOTLPMetricExporter, "metrics")


def log_exporter() -> Any:
    """An OTLP/HTTP log record exporter: ours when the probe passes, else the SDK's."""
    if not _lean_available():
        return _sdk("logs")
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    from opentelemetry.semconv._incubating.attributes.otel_attributes import OtelComponentTypeValues

    from otel_perf._export.otlp_logs import LogEncoder

    class LeanOTLPLogExporter(LogRecordExporter):
        """The SDK's OTLP/HTTP log exporter, our encoder in place of protobuf's."""

        def __init__(self) -> None:
            self._sender = _Sender("logs", OtelComponentTypeValues.OTLP_HTTP_LOG_EXPORTER)
            _no_echo(self._sender.logger)
            self._encoder = LogEncoder()

        def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
            ok = self._sender.send("logs", len(batch), self._encoder.encode, batch)
            return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

        def shutdown(self) -> None:
            self._sender.shutdown()

        def force_flush(self, timeout_millis: int = 10_000) -> bool:
            return True

    return _built(LeanOTLPLogExporter, "logs")


def _built(lean: Any, signal: str) -> Any:
    """``lean()``, or the SDK's exporter when the SDK's pieces turn out not to fit (a release
    that changed them under the names the probe checks): one warning, nothing lost."""
    try:
        return lean()
    except Exception as exc:
        logger.warning(
            "otel-perf: the OTLP/HTTP %s exporter could not be built on this exporter package's HTTP "
            "client (%s: %s); using the SDK's own exporter (same data, protobuf imported).",
            signal, type(exc).__name__, exc,
        )  # fmt: skip
        return _sdk(signal)


def _sdk(signal: str) -> Any:
    """The SDK's OTLP/HTTP exporter for ``signal`` (on the lean transport when it applies)."""
    module, name = _SDK_CLASSES[signal]
    return sdk_exporter(getattr(importlib.import_module(module), name), signal)


_SDK_CLASSES = {
    "traces": ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    "metrics": ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
    "logs": ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
}


def _encoded(data: bytes) -> bytes:
    """The metric exporter encodes before the export operation (as the SDK's does): nothing to do."""
    return data


def _no_echo(log: logging.Logger) -> None:
    """The SDK log exporter's filter on its own logger: a failed export's message, itself a log
    record, is not written again and again (the SDK's ``DuplicateFilter``, once)."""
    try:
        from opentelemetry.sdk._shared_internal import DuplicateFilter
    except ImportError:
        return
    if not any(isinstance(f, DuplicateFilter) for f in log.filters):
        log.addFilter(DuplicateFilter())
