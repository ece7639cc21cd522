"""OTLP span encoding straight to protobuf bytes.

The SDK's OTLP encoder builds one generated protobuf object per span, attribute and value,
then serializes the tree: about 40 µs per span in Python, on the export thread but under
the GIL the request threads need.  :class:`SpanEncoder` writes the same
``ExportTraceServiceRequest`` wire format directly (field for field what
``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`` produces: the
same grouping by resource and scope, span flags, empty status message, skipped
unencodable attributes), and caches what repeats between spans: the encoded resource and
scope, and encoded key/value pairs for string, int and bool attributes.  A test decodes
its output with the generated classes and compares it with the SDK's.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE as _DEFAULT_STATE

from otel_perf._core.spans import CONTEXT_IS_TUPLE, FrozenAttributes

logger = logging.getLogger("otel_perf")

_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
#: Span.flags (fixed32, field 16): "context has is_remote" (0x100), plus "is remote" (0x200).
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)
_EMPTY_STATUS = b"\x7a\x00"
_STATUS_CODES = {code: int(code.value) for code in StatusCode}
_KIND_BY_VALUE = {kind._value_: encoded for kind, encoded in _KIND.items()}
_STATUS_CODES_BY_VALUE = {code._value_: value for code, value in _STATUS_CODES.items()}
_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UNSET = object()
#: Cached encoded key/value pairs, cleared whole when full (url.path and friends vary).
MAX_CACHED_PAIRS = 4096
#: ... and their encoded bytes per field, cleared whole when over: values that do not repeat can
#: be large (a log's ``exception.stacktrace``), and 4,096 of them would be megabytes.
MAX_CACHED_BYTES = 256 * 1024
#: A pair larger than this is not cached at all (a stack trace or a request body: unique).
MAX_CACHED_PAIR_BYTES = 4096
#: Distinct (resource, scope) pairs an encoder pre-encodes spans for; spans of any further
#: pair are queued as SDK spans and encoded at export, as before.
MAX_GROUPS = 255


def _queued(group: int, body: bytes) -> bytes:
    """A pre-encoded span: its group's index, then the span as a ``ScopeSpans.spans`` field."""
    n = len(body)
    if n < 0x80:
        return bytes((group, 0x12, n)) + body
    if n < 0x4000:  # a two-byte varint, inline: most spans are 128 bytes to 16 KiB
        return bytes((group, 0x12, 0x80 | (n & 0x7F), n >> 7)) + body
    return bytes((group, 0x12)) + _varint(n) + body


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + payload


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode("utf-8"))


def encode_value(value: Any) -> bytes:
    """An ``AnyValue`` message body."""
    if value is None:
        return b""
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, str):
        return _string(b"\x0a", value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", encode_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", encode_key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def encode_key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message body (an empty key is left out, as protobuf leaves out a default)."""
    return (_string(b"\x0a", key) if key else b"") + _field(b"\x12", encode_value(value))


class SpanEncoder:
    """Encodes sequences of SDK ``ReadableSpan`` into ``ExportTraceServiceRequest`` bytes."""

    def __init__(self) -> None:
        #: field tag -> key -> value -> the encoded field, for str and int values (span, event,
        #: link, resource and scope attributes are different fields).  By key, then by value:
        #: two subscripts on hashes a string keeps, where a (key, value) tuple would be built and
        #: hashed per attribute (0.8 against 1.2 µs for a SERVER span's dozen here).
        self._pairs: dict[bytes, dict[str, dict[Any, bytes]]] = {}
        #: how many values ``_pairs`` holds per tag (bounded by MAX_CACHED_PAIRS; approximate
        #: under threads, which is all a bound needs)
        self._pair_count: dict[bytes, int] = {}
        #: their encoded bytes per tag (bounded by MAX_CACHED_BYTES, as approximately)
        self._pair_bytes: dict[bytes, int] = {}
        #: field tag -> key -> the field up to a double value's 8 bytes (the value varies)
        self._float_keys: dict[bytes, dict[str, bytes]] = {}
        #: span name -> its encoded field (route and statement names repeat)
        self._names: dict[str, bytes] = {}
        #: id(resource or scope) -> (the object, kept alive so the id stays its own; for a
        #: resource, the attributes object its encoding was made from; encoding)
        self._resources: dict[int, tuple[Any, Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}
        #: (resource, scope) of pre-encoded spans, by the index their first byte holds
        self._groups: list[tuple[Any, Any]] = []
        self._group_index: dict[tuple[int, int], int] = {}
        self._group_lock = threading.Lock()

    # --- attributes -------------------------------------------------------------------
    def attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        """Every attribute as a repeated ``KeyValue`` field with ``tag``; unencodable ones are skipped."""
        if not attributes:
            return b""
        frozen = type(attributes) is FrozenAttributes and tag == b"\x4a"  # a span's, shared
        if frozen and attributes.encoded_by is self:  # type: ignore[attr-defined]
            return attributes.encoded  # type: ignore[attr-defined,no-any-return]
        # The SDK hands out BoundedAttributes (a MutableMapping written in Python, often
        # behind a MappingProxyType); iterate the dict inside it instead.
        inner = getattr(attributes, "_dict", None)
        items = (inner if type(inner) is dict else attributes).items()
        pairs = self._pairs.get(tag)
        if pairs is None:
            pairs = self._pairs.setdefault(tag, {})
        parts: list[bytes] = []
        for key, value in items:
            kind = type(value)
            if kind is str or kind is int:  # exact types only: True == 1 must not share an entry
                try:
                    parts.append(pairs[key][value])
                    continue
                except KeyError:  # not cached yet
                    pass
                try:
                    encoded = _field(tag, encode_key_value(key, value))
                except Exception as error:
                    logger.exception("Failed to encode key %s: %s", key, error)
                    continue
                self._cache_pair(pairs, tag, key, value, encoded)
                parts.append(encoded)
            elif kind is float:
                prefixes = self._float_keys.get(tag)
                prefix = prefixes.get(key) if prefixes is not None else None
                if prefix is None:
                    try:
                        kv = (_string(b"\x0a", key) if key else b"") + b"\x12\x09\x21"
                    except Exception as error:
                        logger.exception("Failed to encode key %s: %s", key, error)
                        continue
                    prefix = _field(tag, kv + bytes(8))[:-8]  # the length counts the 8 bytes to come
                    self._cache_float_key(tag, key, prefix)
                parts.append(prefix + _pack_d(value))
            else:
                try:
                    parts.append(_field(tag, encode_key_value(key, value)))
                except Exception as error:
                    logger.exception("Failed to encode key %s: %s", key, error)
        encoded_all = b"".join(parts)
        if frozen:  # the bytes first: a reader that sees encoded_by sees them
            attributes.encoded = encoded_all  # type: ignore[attr-defined]
            attributes.encoded_by = self  # type: ignore[attr-defined]
        return encoded_all

    def _cache_pair(
        self, pairs: dict[str, dict[Any, bytes]], tag: bytes, key: str, value: Any, encoded: bytes
    ) -> None:
        size = len(encoded)
        if size > MAX_CACHED_PAIR_BYTES:
            return
        count = self._pair_count.get(tag, 0)
        used = self._pair_bytes.get(tag, 0)
        if count >= MAX_CACHED_PAIRS or used + size > MAX_CACHED_BYTES:  # url.path and friends
            pairs.clear()  # vary: start again
            count = used = 0
        by_value = pairs.get(key)
        if by_value is None:
            by_value = pairs.setdefault(key, {})
        by_value[value] = encoded
        self._pair_count[tag] = count + 1
        self._pair_bytes[tag] = used + size

    def _cache_float_key(self, tag: bytes, key: str, prefix: bytes) -> None:
        prefixes = self._float_keys.get(tag)
        if prefixes is None:
            prefixes = self._float_keys.setdefault(tag, {})
        elif len(prefixes) >= MAX_CACHED_PAIRS:
            prefixes.clear()
        prefixes[key] = prefix

    def _resource(self, resource: Any) -> bytes:
        # Valid while the resource holds the same attributes object: a forked worker's identity
        # is written into the shared resource in place (``_setup/fork.py``), after the master
        # may have encoded it, and the worker inherits this cache.
        attributes = resource.attributes if resource is not None else None
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource and cached[1] is attributes:
            return cached[2]
        body = self.attributes(b"\x0a", attributes) if attributes is not None else b""
        if len(self._resources) > 64:
            self._resources.clear()
        self._resources[id(resource)] = (resource, attributes, body)
        return body

    def _scope(self, scope: Any) -> bytes:
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        body = b""
        if scope is not None:
            if scope.name:
                body += _string(b"\x0a", scope.name)
            if scope.version:
                body += _string(b"\x12", scope.version)
            body += self.attributes(b"\x1a", scope.attributes)
        if len(self._scopes) > 256:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, body)
        return body

    # --- spans --------------------------------------------------------------------------
    def span(self, span: Any) -> bytes:
        """One ``Span`` message body."""
        ctx: Any
        parent: Any
        attributes: Any
        status: Any
        if type(span) is ReadableSpan:
            # What the SDK hands processors: read its fields, not its properties (each
            # property is a Python call, a dozen per span; `attributes` even wraps a proxy).
            ctx = span._context
            parent = span._parent
            name = span._name
            kind = span._kind
            start = span._start_time
            end = span._end_time
            attributes = span._attributes
            dropped_attributes = getattr(attributes, "dropped", 0)
            status = span._status
            # BoundedLists: test the deque inside (their __len__ is a Python call)
            events = span._events
            dropped_events = getattr(events, "dropped", 0)
            if not getattr(events, "_dq", events):
                events = ()
            links = span._links
            dropped_links = getattr(links, "dropped", 0)
            if not getattr(links, "_dq", links):
                links = ()
        else:
            ctx = span.get_span_context()
            parent = span.parent
            name = span.name
            kind = span.kind
            start = span.start_time
            end = span.end_time
            attributes = span.attributes
            dropped_attributes = span.dropped_attributes
            status = span.status
            events = span.events
            dropped_events = span.dropped_events
            links = span.links
            dropped_links = span.dropped_links
        return self.span_fields(
            ctx, parent, name, kind, start, end, attributes, dropped_attributes, status,
            events, dropped_events, links, dropped_links,
        )  # fmt: skip

    def span_fields(
        self,
        ctx: Any,
        parent: Any,
        name: str,
        kind: SpanKind,
        start: int | None,
        end: int | None,
        attributes: Mapping[str, Any] | None,
        dropped_attributes: int = 0,
        status: Any = None,
        events: Sequence[Any] = (),
        dropped_events: int = 0,
        links: Sequence[Any] = (),
        dropped_links: int = 0,
    ) -> bytes:
        """One ``Span`` message body from the fields of a span."""
        # SpanContext, SpanKind and Status read through their fields: each of their
        # properties (and an Enum's __hash__) is a Python call.
        if type(ctx) is SpanContext and CONTEXT_IS_TUPLE:
            trace_id, span_id, state = ctx[0], ctx[1], ctx[4]
        else:
            trace_id, span_id, state = ctx.trace_id, ctx.span_id, ctx.trace_state
        parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
        if state is not _DEFAULT_STATE and state:
            parts.append(_string(b"\x1a", ",".join(f"{k}={v}" for k, v in state.items())))
        remote = False
        if parent:
            if type(parent) is SpanContext and CONTEXT_IS_TUPLE:
                parent_id, remote = parent[1], parent[2]
            else:
                parent_id, remote = parent.span_id, parent.is_remote
            parts.append(b"\x22\x08")
            parts.append(parent_id.to_bytes(8, "big"))
        if name:
            encoded_name = self._names.get(name)
            if encoded_name is None:
                encoded_name = _string(b"\x2a", name)
                if len(self._names) >= MAX_CACHED_PAIRS:
                    self._names.clear()
                self._names[name] = encoded_name
            parts.append(encoded_name)
        parts.append(_KIND_BY_VALUE[kind._value_] if type(kind) is SpanKind else _KIND[kind])
        if start:
            parts.append(b"\x39" + _pack_q(start))
        if end:
            parts.append(b"\x41" + _pack_q(end))
        if attributes:
            parts.append(self.attributes(b"\x4a", attributes))
        if dropped_attributes:
            parts.append(b"\x50" + _varint(dropped_attributes))
        if events:
            for event in events:
                body = b""
                if event.timestamp:
                    body += b"\x09" + _pack_q(event.timestamp)
                if event.name:
                    body += _string(b"\x12", event.name)
                body += self.attributes(b"\x1a", event.attributes)
                if event.dropped_attributes:
                    body += b"\x20" + _varint(event.dropped_attributes)
                parts.append(_field(b"\x5a", body))
        if dropped_events:
            parts.append(b"\x60" + _varint(dropped_events))
        if links:
            for link in links:
                lctx = link.context
                body = (
                    b"\x0a\x10"
                    + lctx.trace_id.to_bytes(16, "big")
                    + b"\x12\x08"
                    + lctx.span_id.to_bytes(8, "big")
                )
                body += self.attributes(b"\x22", link.attributes)
                if link.dropped_attributes:
                    body += b"\x28" + _varint(link.dropped_attributes)
                body += b"\x35" + _pack_i(0x300 if lctx.is_remote else 0x100)
                parts.append(_field(b"\x6a", body))
        if dropped_links:
            parts.append(b"\x70" + _varint(dropped_links))
        if status is not None:
            if type(status) is Status:
                code, description = _STATUS_CODES_BY_VALUE[status._status_code._value_], status._description
            else:
                code, description = _STATUS_CODES[status.status_code], status.description
            if not code and not description:
                parts.append(_EMPTY_STATUS)
            else:
                body = _string(b"\x12", description) if description else b""
                if code:
                    body += b"\x18" + _varint(code)
                parts.append(_field(b"\x7a", body))
        parts.append(_FLAGS_REMOTE if remote else _FLAGS_LOCAL)
        return b"".join(parts)

    def pre_encode(self, span: ReadableSpan) -> bytes | None:
        """``span`` encoded now, for :meth:`encode` to put in a batch later (None: keep the span).

        The bytes are a group index (one byte: which resource and scope) followed by the
        span as a ``ScopeSpans.spans`` field, exactly what :meth:`encode` writes for
        ``span``.  Plain bytes hold no references, so the garbage collector does not track
        them: a span that waits seconds in a queue for its batch is no longer a dozen SDK
        objects promoted to the oldest generation and walked by the app's full collections.
        Safe from any thread: the caches are dicts whose single operations the GIL makes
        atomic, and a new group is added under a lock.
        """
        group = self._group(span._resource, span._instrumentation_scope or None)
        if group < 0:
            return None
        return _queued(group, self.span(span))

    def pre_encode_finished(
        self,
        resource: Any,
        scope: Any,
        ctx: Any,
        parent: Any,
        name: str,
        kind: SpanKind,
        start: int,
        end: int,
        attributes: Mapping[str, Any],
        status: Any,
    ) -> bytes | None:
        """What :meth:`pre_encode` returns for the ended span with these fields (no events,
        links or dropped attributes), without the span having to be built."""
        group = self._group(resource, scope or None)
        if group < 0:
            return None
        return _queued(group, self.span_fields(ctx, parent, name, kind, start, end, attributes, 0, status))

    def _group(self, resource: Any, scope: Any) -> int:
        key = (id(resource), id(scope))  # unique: the groups list keeps both objects alive
        index = self._group_index.get(key, -1)
        if index >= 0:
            return index
        with self._group_lock:
            index = self._group_index.get(key, -1)
            if index < 0:
                groups = self._groups
                if len(groups) >= MAX_GROUPS:
                    return -1
                groups.append((resource, scope))  # keeps both alive, so their ids stay theirs
                index = self._group_index[key] = len(groups) - 1
        return index

    def encode(self, spans: Sequence[Any]) -> bytes:
        """An ``ExportTraceServiceRequest`` holding ``spans``, grouped by resource then scope.

        Groups are keyed by encoded content (what the SDK's equality-based grouping amounts
        to), in first-seen order, spans in their given order.
        """
        groups: dict[tuple[bytes, str], dict[tuple[bytes, str], list[bytes | memoryview]]] = {}
        last_resource: Any = _UNSET
        last_scope: Any = _UNSET
        encoded: list[bytes | memoryview] = []
        for span in spans:
            pre_encoded = type(span) is bytes  # from pre_encode()
            if pre_encoded:
                resource, scope = self._groups[span[0]]
            elif type(span) is ReadableSpan:
                resource = span._resource
                scope = span._instrumentation_scope or None
            else:
                resource = span.resource
                scope = span.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:  # a batch is mostly one group
                last_resource, last_scope = resource, scope
                resource_key = (self._resource(resource), getattr(resource, "schema_url", "") or "")
                scopes = groups.get(resource_key)
                if scopes is None:
                    scopes = groups[resource_key] = {}
                scope_key = (self._scope(scope), getattr(scope, "schema_url", "") or "")
                found = scopes.get(scope_key)
                if found is None:
                    found = scopes[scope_key] = []
                encoded = found
            if pre_encoded:
                encoded.append(memoryview(span)[1:])
                continue
            span_body = self.span(span)
            n = len(span_body)
            encoded.append((b"\x12" + bytes((n,)) if n < 0x80 else b"\x12" + _varint(n)) + span_body)
        out = []
        for (resource_body, resource_schema), scopes in groups.items():
            body = [_field(b"\x0a", resource_body)]
            for (scope_body, scope_schema), scope_encoded in scopes.items():
                scope_spans = _field(b"\x0a", scope_body) + b"".join(scope_encoded)
                if scope_schema:
                    scope_spans += _string(b"\x1a", scope_schema)
                body.append(_field(b"\x12", scope_spans))
            if resource_schema:
                body.append(_string(b"\x1a", resource_schema))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)
