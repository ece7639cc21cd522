"""OTLP log record encoding straight to protobuf bytes, without protobuf.

:class:`LogEncoder` writes the ``ExportLogsServiceRequest`` that
``opentelemetry.exporter.otlp.proto.common._log_encoder.encode_logs`` builds out of
generated objects, field for field: grouped by resource then scope in first-seen order, the
body as an ``AnyValue`` (present even when empty), trace and span ids only when set,
unencodable attributes skipped and logged, an unencodable body failing the batch.  Like
:mod:`otel_perf._export.otlp_metrics`, it exists so that no process imports protobuf; a test
compares its bytes with the SDK's.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from otel_perf._export.otlp_spans import SpanEncoder, _field, _string, _varint, encode_value

_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack


class LogEncoder:
    """Encodes sequences of SDK ``ReadableLogRecord`` into ``ExportLogsServiceRequest`` bytes."""

    def __init__(self) -> None:
        self._attributes = SpanEncoder()  # its attribute, resource and scope caches

    def encode(self, batch: Sequence[Any]) -> bytes:
        # keyed by the SDK objects (equal resources and scopes share an entry), as the SDK does
        resources: dict[Any, dict[Any, list[bytes]]] = {}
        for readable in batch:
            scopes = resources.get(readable.resource)
            if scopes is None:
                scopes = resources[readable.resource] = {}
            scope = readable.instrumentation_scope or None
            records = scopes.get(scope)
            if records is None:
                records = scopes[scope] = []
            records.append(_field(b"\x12", self.record(readable)))
        out = []
        for resource, scopes in resources.items():
            body = [_field(b"\x0a", self._attributes._resource(resource))]
            for scope, records in scopes.items():
                scope_logs = _field(b"\x0a", self._attributes._scope(scope)) + b"".join(records)
                if scope is not None and scope.schema_url:
                    scope_logs += _string(b"\x1a", scope.schema_url)
                body.append(_field(b"\x12", scope_logs))
            if resource.schema_url:
                body.append(_string(b"\x1a", resource.schema_url))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)

    def record(self, readable: Any) -> bytes:
        """One ``LogRecord`` message body."""
        record = readable.log_record
        out = b"\x09" + _pack_q(record.timestamp) if record.timestamp else b""
        severity = getattr(record.severity_number, "value", None)
        if severity:
            out += b"\x10" + _varint(severity)
        if record.severity_text:
            out += _string(b"\x1a", record.severity_text)
        out += _field(b"\x2a", encode_value(record.body))  # present even when empty, as the SDK's
        out += self._attributes.attributes(b"\x32", record.attributes)
        if readable.dropped_attributes:
            out += b"\x38" + _varint(readable.dropped_attributes)
        flags = int(record.trace_flags)
        if flags:
            out += b"\x45" + _pack_i(flags)
        if record.trace_id:
            out += b"\x4a\x10" + record.trace_id.to_bytes(16, "big")
        if record.span_id:
            out += b"\x52\x08" + record.span_id.to_bytes(8, "big")
        if record.observed_timestamp:
            out += b"\x59" + _pack_q(record.observed_timestamp)
        event_name = getattr(record, "event_name", None)
        if event_name:
            out += _string(b"\x62", event_name)
        return out
