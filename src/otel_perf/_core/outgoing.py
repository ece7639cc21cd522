"""An outgoing HTTP call, for every client library: span, propagation, metrics, rate limits.

Every HTTP client adapter (httpx, requests, urllib3, aiohttp) finds the one place where its
library sends a request and wraps it in :meth:`OutgoingCalls.start` / :meth:`OutgoingCalls.end`:

* a CLIENT span (stable HTTP semconv: ``http.request.method``, ``url.full`` with sensitive
  query parameters redacted and credentials removed, ``server.address``/``server.port``,
  ``http.response.status_code``, ``network.protocol.version``, ``error.type``), started
  through the sampler like every span of ours;
* W3C ``traceparent`` (and the other configured propagators) injected into the request;
* ``http.client.request.duration`` by host, method, status and error, for every call,
  sampled or not, with an exemplar when the span is sampled;
* rate-limit headroom gauges and 429 counts per host, from the response headers.

While a call runs, HTTP instrumentation is suppressed in its context (the standard
``suppress_http_instrumentation`` key), so a library under another (``requests`` over
``urllib3``), ours or an official one, does not record the same call twice; and a call made
where instrumentation is suppressed (the exporters' own requests, a request to an excluded URL
being served) is not recorded at all: no span, no metric, no ``traceparent``.

A URL matching ``OTEL_PYTHON_<LIBRARY>_EXCLUDED_URLS`` (``REQUESTS``, ``URLLIB3``,
``AIOHTTP_CLIENT``, ``HTTPX``), or ``OTEL_PYTHON_EXCLUDED_URLS`` when that is unset, as for
the official instrumentations' ``get_excluded_urls``, is sent untouched: no span, no
metric, no ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from otel_perf import _names as n
from otel_perf._analysis import ratelimit
from otel_perf._analysis.redact import safe_url
from otel_perf._core import guard, semconv_dup
from otel_perf._core.capture import HeaderCapture, Pairs
from otel_perf._core.server import (
    KNOWN_METHODS,
    MAX_PATH_ATTR,
    MAX_USER_AGENT,
    capture_all_methods,
    unknown_method,
)
from otel_perf._core.spans import SpanStarter
from otel_perf._core.suppression import SUPPRESS_HTTP_KEY, is_http_instrumentation_enabled

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

_ERROR = Status(StatusCode.ERROR)
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: what an HTTP version looks like on the wire -> ``network.protocol.version``
_VERSIONS = {10: "1.0", 11: "1.1", 20: "2", 30: "3", 9: "0.9"}


def protocol_version(raw: object) -> str:
    """``network.protocol.version`` from what a library reports (11, b"HTTP/1.1", "HTTP/2", ...)."""
    if isinstance(raw, int):
        return _VERSIONS.get(raw, "")
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1", "replace")
    if isinstance(raw, str) and raw:
        version = raw.upper().removeprefix("HTTP/")
        return "2" if version == "2.0" else "3" if version == "3.0" else version[:8]
    return ""


class Call:
    """One call in flight: what :meth:`OutgoingCalls.end` needs."""

    __slots__ = ("host", "method", "port", "recorded", "scheme", "span", "start", "token")

    def __init__(
        self,
        span: trace.Span,
        host: str,
        port: int,
        method: str,
        token: Any,
        recorded: bool = True,
        scheme: str = "",
    ) -> None:
        self.span = span
        self.host = host
        self.port = port
        self.method = method
        self.token = token
        #: False for an excluded URL: nothing is recorded, layers below are only kept quiet
        self.recorded = recorded
        #: the URL's scheme (the old metric's ``http.scheme``)
        self.scheme = scheme
        self.start = perf_counter()

    def peer(self) -> tuple[str, int]:
        """The URL's host and port as the connection's peer, where the library keeps no socket
        to ask (requests, as the official requests instrumentation reports it)."""
        return self.host, self.port


class OutgoingCalls:
    """The outgoing-call recorder of one runtime for one client library (``library`` names
    its excluded-URL variable: ``requests``, ``urllib3``, ``aiohttp_client``, ``httpx``)."""

    def __init__(self, runtime: Runtime, library: str = "") -> None:
        self.rt = runtime
        self.spans = SpanStarter(runtime.tracer)
        self.redact = frozenset(x.lower() for x in runtime.config.items("OTEL_PERF_REDACT_QUERY_PARAMS"))
        self.capture = HeaderCapture("CLIENT")
        self.excluded = runtime.config.excluded_urls(library)
        capture_all_methods(runtime.config.flag("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"))
        #: the old HTTP metrics while OTEL_SEMCONV_STABILITY_OPT_IN has http/dup (else None): then
        #: spans carry the old attributes too and calls are recorded in http.client.duration as well
        self.old: semconv_dup.OldHttpMetrics | None = runtime.old_http
        if self.old is not None:
            self._start_attributes = self._start_attributes_dup  # type: ignore[method-assign]
            self._record_stable = self._record
            self._record = self._record_dup  # type: ignore[method-assign]

    def safe_url(self, url: str) -> str:
        """``url`` as it may be exported: no user or password, sensitive parameters redacted."""
        return safe_url(url, self.redact, MAX_PATH_ATTR)

    def start(
        self,
        method: str,
        url: str,
        host: str,
        port: int | None,
        scheme: str,
        set_header: Callable[[str, str], None],
        headers: Callable[[], Pairs] | None = None,
        attach: bool = True,
        header: Callable[[str], Any] | None = None,
    ) -> Call | None:
        """Begin a call: span, propagation headers (through ``set_header``), suppression.

        ``headers()`` gives the request's headers, read only when header capture is on;
        ``header(name)`` one of them, for ``user_agent.original`` (read only for recorded spans).
        ``attach=False``: leave the current context alone (the span is not made current and
        nested HTTP instrumentation is not suppressed), for libraries whose start and end
        hooks may not run in one context (aiohttp's trace hooks) and that send through no
        other instrumented library.

        None when HTTP instrumentation is suppressed here (an outer layer records this call,
        or it is an exporter's own request): send it untouched and do not call :meth:`end`.
        For an excluded URL, a call that records nothing at :meth:`end` (no span, no metric,
        no ``traceparent``) but keeps the libraries under this one from recording it.
        Never raises.
        """
        try:
            if not is_http_instrumentation_enabled():
                return None
            excluded = self.excluded
            if excluded is not None and excluded.search(url):
                # Not recorded, and not by a library underneath either (urllib3 under requests).
                if not attach:
                    return None
                token = context.attach(context.set_value(SUPPRESS_HTTP_KEY, True))
                return Call(trace.INVALID_SPAN, host, 0, "", token, recorded=False)
            known = method.upper()
            if known not in KNOWN_METHODS:
                known = unknown_method(known)
            span = self.spans.start(
                "HTTP" if known == "_OTHER" else known,
                None,
                SpanKind.CLIENT,
                self._start_attributes,
                None,
                (known, method, url, host, port, scheme),
            )
            if (header is not None or headers is not None) and span.is_recording():
                self._request_attributes(span, header, headers)
            ctx = trace.set_span_in_context(span)
            propagate.inject(_Carrier(set_header), context=ctx)
            port = port or _DEFAULT_PORTS.get(scheme, 0)
            if not attach:
                return Call(span, host, port, known, None, True, scheme)
            token = context.attach(context.set_value(SUPPRESS_HTTP_KEY, True, ctx))
            return Call(span, host, port, known, token, True, scheme)
        except Exception as exc:
            guard.internal_error("outgoing.start", exc)
            return None

    def _request_attributes(
        self, span: Any, header: Callable[[str], Any] | None, headers: Callable[[], Pairs] | None
    ) -> None:
        attrs: dict[str, Any] = {}
        agent = header("User-Agent") if header is not None else None
        if isinstance(agent, bytes):
            agent = agent.decode("latin-1")
        if isinstance(agent, str) and agent:
            attrs["user_agent.original"] = agent[:MAX_USER_AGENT]
        if headers is not None and self.capture.request_names:
            attrs.update(self.capture.request(headers()))
        if attrs:
            span.set_attributes(attrs)

    def _start_attributes(
        self, method: str, original: str, url: str, host: str, port: int | None, scheme: str
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {n.A_METHOD: method, "url.full": self.safe_url(url)}
        if method != original:
            attrs["http.request.method_original"] = original[:64]
        if host:
            attrs[n.A_SERVER_ADDRESS] = host
        if port is None:
            port = _DEFAULT_PORTS.get(scheme)
        if port:
            attrs["server.port"] = port
        return attrs

    def _start_attributes_dup(
        self, method: str, original: str, url: str, host: str, port: int | None, scheme: str
    ) -> dict[str, Any]:
        """:meth:`_start_attributes` and the old ones (http/dup), as the official httpx instrumentation
        sets them."""
        attrs = OutgoingCalls._start_attributes(self, method, original, url, host, port, scheme)
        attrs["http.method"] = method
        attrs["http.url"] = attrs["url.full"]
        if host:
            attrs["http.host"] = host
        named = _named_port(port, scheme)
        if named:
            attrs["net.peer.port"] = named
        return attrs

    def _record_dup(
        self,
        call: Call,
        seconds: float,
        status: int,
        version: object,
        header: Callable[[str], str | None] | None,
        error: BaseException | None,
        headers: Callable[[], Pairs] | None,
        peer: Callable[[], Any] | None,
        sizes: tuple[int | None, int] | None = None,
    ) -> None:
        """:meth:`_record`, with ``http.status_code`` and ``http.flavor`` on the span and the call in
        ``http.client.duration`` too (milliseconds, rounded, under the old attributes), and its
        sizes in ``http.client.request.size`` / ``http.client.response.size``."""
        span = call.span
        protocol = protocol_version(version)
        if type(span) is not NonRecordingSpan and span.is_recording():
            old_attrs: dict[str, Any] = {}
            if status:
                old_attrs["http.status_code"] = status
            if protocol:
                old_attrs["http.flavor"] = protocol
            if old_attrs:
                span.set_attributes(old_attrs)
        self._record_stable(call, seconds, status, version, header, error, headers, peer, sizes)
        old = self.old
        assert old is not None
        port = _named_port(call.port, call.scheme)
        key = (status or None, call.host, call.method, protocol, call.scheme, port, call.host)
        ctx = span.get_span_context()
        sampled = ctx.trace_flags.sampled
        old.client_duration.record(
            max(round(seconds * 1000), 0), key, ctx.trace_id if sampled else 0, ctx.span_id if sampled else 0
        )
        if sizes is not None:
            if sizes[0] is not None:
                old.client_request_size.record(sizes[0], key)
            old.client_response_size.record(sizes[1], key)

    def end(
        self,
        call: Call,
        status: int,
        version: object = None,
        header: Callable[[str], str | None] | None = None,
        error: BaseException | None = None,
        headers: Callable[[], Pairs] | None = None,
        peer: Callable[[], Any] | None = None,
        sizes: tuple[int | None, int] | None = None,
    ) -> None:
        """Finish a call: ``status`` 0 when there is no response (``error`` says why). Never raises.

        ``peer()`` gives the connected socket's (address, port), read only for recorded spans.
        ``sizes``: the request body's size (None: unknown) and the response's ``Content-Length``
        (0 when it has none), for a client that knows them (urllib3, as the official urllib3
        instrumentation records them).

        ``header(name)`` reads one response header (rate limits); ``headers()`` all of them,
        only when response header capture is on.
        """
        seconds = perf_counter() - call.start
        if call.token is not None:
            try:
                context.detach(call.token)
            except Exception as exc:  # detached in another context: the API logs it; go on
                guard.internal_error("outgoing.detach", exc)
        if not call.recorded:
            return
        try:
            self._record(call, seconds, status, version, header, error, headers, peer, sizes)
        except Exception as exc:
            guard.internal_error("outgoing.end", exc)

    def _record(
        self,
        call: Call,
        seconds: float,
        status: int,
        version: object,
        header: Callable[[str], str | None] | None,
        error: BaseException | None,
        headers: Callable[[], Pairs] | None,
        peer: Callable[[], Any] | None,
        sizes: tuple[int | None, int] | None = None,
    ) -> None:
        inst = self.rt.inst
        host = call.host
        error_type = type(error).__qualname__ if error is not None else str(status) if status >= 400 else ""
        span = call.span
        protocol = protocol_version(version)
        # status 0: no response, so no http.response.status_code (None is left out of the point)
        key = (host, call.method, status or None, error_type, call.port or None, protocol)
        recording = type(span) is not NonRecordingSpan and span.is_recording()
        if recording:
            ctx = span.get_span_context()
            inst.client_duration.record(seconds, key, ctx.trace_id, ctx.span_id)
            attrs: dict[str, Any] = {}
            if status:
                attrs[n.A_STATUS] = status
            if protocol:
                attrs["network.protocol.version"] = protocol
            if error_type:
                attrs[n.A_ERROR_TYPE] = error_type
            if headers is not None and self.capture.response_names:
                attrs.update(self.capture.response(headers()))
            address = peer() if peer is not None else None
            if isinstance(address, tuple) and len(address) >= 2:
                attrs["network.peer.address"] = str(address[0])
                attrs["network.peer.port"] = int(address[1])
            self.spans.set_attributes(span, attrs)
            if error is not None:
                span.add_event("exception", self.rt.scrubber.exception(error))
            if error_type:
                span.set_status(_ERROR)
            span.end()
        else:
            inst.client_duration.record(seconds, key)
        if sizes is not None:
            request_size, response_size = sizes
            if request_size is not None:
                inst.client_request_size.record(request_size, key)
            inst.client_response_size.record(response_size, key)
        if status == 429:
            inst.throttled.add(1, (host,))
        if header is not None and status:
            limits = ratelimit.parse(header)
            if limits:
                by_host = (host,)
                if limits.remaining is not None:
                    inst.ratelimit_remaining.set(limits.remaining, by_host)
                if limits.limit is not None:
                    inst.ratelimit_limit.set(limits.limit, by_host)
                if limits.reset_seconds is not None:
                    inst.ratelimit_reset.set(limits.reset_seconds, by_host)


def _named_port(port: int | None, scheme: str) -> int | None:
    """The old ``net.peer.port``: a port the URL names, not its scheme's default (None)."""
    return port if port and port != _DEFAULT_PORTS.get(scheme) else None


class _Carrier(MutableMapping[str, str]):
    """Just enough of a mapping for ``propagate.inject``: writes go to the adapter's setter."""

    __slots__ = ("_set",)

    def __init__(self, set_header: Callable[[str, str], None]) -> None:
        self._set = set_header

    def __setitem__(self, key: str, value: str) -> None:
        self._set(key, value)

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0
