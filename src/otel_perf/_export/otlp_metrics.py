"""OTLP metric encoding straight to protobuf bytes, without protobuf.

:class:`MetricEncoder` writes the ``ExportMetricsServiceRequest`` that
``opentelemetry.exporter.otlp.proto.common.metrics_encoder.encode_metrics`` builds out of
generated objects, field for field: the same grouping by resource then scope, gauges, sums,
explicit and exponential histograms, exemplars, a metric without points sent without data,
an unsupported data type warned about and sent without data.  The point is what it does not
import: protobuf and the generated modules are 3.6 MB of every process's memory
(bench/README.md, "Run 11").  A test decodes its output with the generated classes and
compares the bytes with the SDK's for every kind of point.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Gauge,
    Histogram,
    MetricsData,
    Sum,
)

from otel_perf._export.otlp_spans import SpanEncoder, _field, _string, _varint

logger = logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder")

#: SpanEncoder.attributes: (field tag, attributes) -> the encoded repeated KeyValue field
_Attributes = Callable[[bytes, Any], bytes]
_pack_q = struct.Struct("<Q").pack  # fixed64
_pack_sq = struct.Struct("<q").pack  # sfixed64
_pack_d = struct.Struct("<d").pack


def _fixed64(tag: bytes, value: int) -> bytes:
    """A fixed64 field, omitted at 0 (proto3: no presence)."""
    return tag + _pack_q(value) if value else b""


def _zigzag(value: int) -> bytes:
    """A sint32/sint64 value: 0, -1, 1, -2, ... as 0, 1, 2, 3, ..."""
    return _varint(value << 1 if value >= 0 else (-value << 1) - 1)


def _packed_fixed64(tag: bytes, values: Iterable[int]) -> bytes:
    values = list(values)
    return _field(tag, struct.pack(f"<{len(values)}Q", *values)) if values else b""


def _packed_double(tag: bytes, values: Iterable[float]) -> bytes:
    values = list(values)
    return _field(tag, struct.pack(f"<{len(values)}d", *values)) if values else b""


class MetricEncoder:
    """Encodes SDK ``MetricsData`` into ``ExportMetricsServiceRequest`` bytes."""

    def __init__(self) -> None:
        #: its attribute, resource and scope caches (a data point's attributes repeat export
        #: after export: one entry per attribute value, bounded as for spans)
        self._attributes = SpanEncoder()

    def encode(self, data: MetricsData) -> tuple[bytes, int]:
        """The request's bytes and how many data points it holds."""
        points = 0
        # keyed by the SDK objects, as the SDK's encoder does: an equal resource or scope met
        # again replaces the earlier one's entry
        resources: dict[Any, dict[Any, tuple[bytes, list[bytes]]]] = {}
        for resource_metrics in data.resource_metrics:
            scopes: dict[Any, tuple[bytes, list[bytes]]] = {}
            resources[resource_metrics.resource] = scopes
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                metrics: list[bytes] = []
                scopes[scope] = (self._attributes._scope(scope), metrics)
                for metric in scope_metrics.metrics:
                    metric_body, n = self._metric(metric)
                    metrics.append(_field(b"\x12", metric_body))
                    points += n
        out = []
        for resource, scopes in resources.items():
            body = [_field(b"\x0a", self._attributes._resource(resource))]
            for scope, (scope_body, encoded) in scopes.items():
                scope_part = _field(b"\x0a", scope_body) + b"".join(encoded)
                if scope.schema_url:
                    scope_part += _string(b"\x1a", scope.schema_url)
                body.append(_field(b"\x12", scope_part))
            if resource.schema_url:
                body.append(_string(b"\x1a", resource.schema_url))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out), points

    def _metric(self, metric: Any) -> tuple[bytes, int]:
        """One ``Metric`` message body and its number of points."""
        head = b""
        if metric.name:
            head += _string(b"\x0a", metric.name)
        if metric.description:
            head += _string(b"\x12", metric.description)
        if metric.unit:
            head += _string(b"\x1a", metric.unit)
        data = metric.data
        points = data.data_points
        if not points:  # the SDK's data field is only set by a point
            if not isinstance(data, (Gauge, Sum, Histogram, ExponentialHistogram)):
                logger.warning("unsupported data type %s", data.__class__.__name__)
            return head, 0
        attributes = self._attributes.attributes
        if isinstance(data, Gauge):
            tag, tail = b"\x2a", b""
            encoded = [self._number(attributes, p, gauge=True) for p in points]
        elif isinstance(data, Histogram):
            tag, tail = b"\x4a", self._temporality(data)
            encoded = [self._histogram(attributes, p) for p in points]
        elif isinstance(data, Sum):
            tag = b"\x3a"
            tail = self._temporality(data) + (b"\x18\x01" if data.is_monotonic else b"")
            encoded = [self._number(attributes, p, gauge=False) for p in points]
        elif isinstance(data, ExponentialHistogram):
            tag, tail = b"\x52", self._temporality(data)
            encoded = [self._exponential(attributes, p) for p in points]
        else:
            logger.warning("unsupported data type %s", data.__class__.__name__)
            return head, 0
        body = b"".join(_field(b"\x0a", p) for p in encoded) + tail
        return head + _field(tag, body), len(encoded)

    @staticmethod
    def _temporality(data: Any) -> bytes:
        value = int(data.aggregation_temporality)
        return b"\x10" + _varint(value) if value else b""

    def _number(self, attributes: _Attributes, point: Any, gauge: bool) -> bytes:
        """A ``NumberDataPoint`` (a gauge's has no start time, as the SDK's encoder leaves it)."""
        out = b"" if gauge else _fixed64(b"\x11", point.start_time_unix_nano)
        out += _fixed64(b"\x19", point.time_unix_nano)
        value = point.value
        exemplars = self._exemplars(point.exemplars)
        if isinstance(value, int):
            if value is True or value is False:  # protobuf refuses them, failing the batch
                raise TypeError("NumberDataPoint.as_int: Expected an int, got a boolean.")
            out += exemplars + b"\x31" + _pack_sq(value)
        else:
            out += b"\x21" + _pack_d(value) + exemplars
        return out + attributes(b"\x3a", point.attributes)

    def _histogram(self, attributes: _Attributes, point: Any) -> bytes:
        out = _fixed64(b"\x11", point.start_time_unix_nano) + _fixed64(b"\x19", point.time_unix_nano)
        out += _fixed64(b"\x21", point.count)
        if point.sum is not None:  # optional: present whenever set, 0 included
            out += b"\x29" + _pack_d(point.sum)
        out += _packed_fixed64(b"\x32", point.bucket_counts)
        out += _packed_double(b"\x3a", point.explicit_bounds)
        out += self._exemplars(point.exemplars, b"\x42")
        out += attributes(b"\x4a", point.attributes)
        if point.min is not None:
            out += b"\x59" + _pack_d(point.min)
        if point.max is not None:
            out += b"\x61" + _pack_d(point.max)
        return out

    def _exponential(self, attributes: _Attributes, point: Any) -> bytes:
        out = attributes(b"\x0a", point.attributes)
        out += _fixed64(b"\x11", point.start_time_unix_nano) + _fixed64(b"\x19", point.time_unix_nano)
        out += _fixed64(b"\x21", point.count)
        if point.sum is not None:
            out += b"\x29" + _pack_d(point.sum)
        if point.scale:
            out += b"\x30" + _zigzag(point.scale)
        out += _fixed64(b"\x39", point.zero_count)
        for tag, buckets in ((b"\x42", point.positive), (b"\x4a", point.negative)):
            if buckets.bucket_counts:  # the SDK's encoder leaves empty buckets out
                body = b"\x08" + _zigzag(buckets.offset) if buckets.offset else b""
                body += _field(b"\x12", b"".join(_varint(c) for c in buckets.bucket_counts))
                out += _field(tag, body)
        if point.flags:
            out += b"\x50" + _varint(point.flags)
        out += self._exemplars(point.exemplars, b"\x5a")
        if point.min is not None:
            out += b"\x61" + _pack_d(point.min)
        if point.max is not None:
            out += b"\x69" + _pack_d(point.max)
        return out

    def _exemplars(self, exemplars: Any, tag: bytes = b"\x2a") -> bytes:
        if not exemplars:
            return b""
        out = []
        for exemplar in exemplars:
            body = _fixed64(b"\x11", exemplar.time_unix_nano)
            value = exemplar.value
            if isinstance(value, float):
                body += b"\x19" + _pack_d(value)
            elif not isinstance(value, int):
                raise ValueError("Exemplar value must be an int or float")
            if exemplar.span_id is not None and exemplar.trace_id is not None:
                body += b"\x22\x08" + exemplar.span_id.to_bytes(8, "big")
                body += b"\x2a\x10" + exemplar.trace_id.to_bytes(16, "big")
            if not isinstance(value, float):
                if value is True or value is False:
                    raise TypeError("Exemplar.as_int: Expected an int, got a boolean.")
                body += b"\x31" + _pack_sq(value)
            body += self._attributes.attributes(b"\x3a", exemplar.filtered_attributes)
            out.append(_field(tag, body))
        return b"".join(out)
