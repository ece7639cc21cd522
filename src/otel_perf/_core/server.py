"""A server request as a unit of work, for every framework.

Every server adapter (the ASGI middleware for Starlette/FastAPI, Django and any other ASGI
app; the WSGI middleware for Django, Flask and any other WSGI app) does the same four
things per request, through this module:

1. decide whether the request is ours to answer (the stats endpoint and health path,
   :attr:`ServerCore.admin_paths`) or to leave alone (excluded URLs, :attr:`ServerCore.excluded`,
   :func:`excludes`);
2. start the SERVER span from the incoming trace context (:meth:`ServerCore.start_attributes`)
   and open a :class:`Work` as the current context (each adapter inlines these few steps:
   they run for every request);
3. add ``traceresponse`` / ``Server-Timing`` response headers (:func:`traceresponse`,
   :func:`server_timing`);
4. at the end, name the span by its route template, set the end-of-request attributes and
   turn the unit into RED metrics and findings (:meth:`ServerCore.finish`).

What differs between frameworks is only how they carry headers and how the route template
is found; the adapters supply those and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._analysis.redact import redact_query
from otel_perf._core import guard, request_extras, semconv_dup
from otel_perf._core.capture import HeaderCapture, Pairs
from otel_perf._core.spans import CONTEXT_IS_TUPLE, SpanStarter, ValidAttributes, runtime_context_var
from otel_perf._core.work import Work

if TYPE_CHECKING:

    from otel_perf._core.runtime import Runtime

KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
#: ``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS=true`` (read when a server or client
#: core is built): a method outside the known set is kept as sent, as the official
#: instrumentations keep it, instead of ``_OTHER``
_CAPTURE_ALL_METHODS = [False]


def capture_all_methods(on: bool) -> None:
    _CAPTURE_ALL_METHODS[0] = on


def unknown_method(method: str) -> str:
    """What a method outside :data:`KNOWN_METHODS` is recorded as (the known ones never get here)."""
    if _CAPTURE_ALL_METHODS[0] and method and len(method) <= 64 and method.isprintable():
        return method.upper()
    return "_OTHER"


#: Attribute values cut at this length (paths, queries, routes).
MAX_PATH_ATTR = 2048
#: Distinct connections (scheme, protocol, Host, user agent, both sockets) whose attributes
#: are kept built; cleared whole when full.  A longer Host header or user agent is not kept.
MAX_CACHED_CONNECTIONS = 256
MAX_CACHED_HOST = 300
MAX_USER_AGENT = 512
#: Baggage keys copied onto the SERVER span, so a load-test run's traces can be searched for.
BAGGAGE_SPAN_PREFIX = "perf.loadtest."
#: The span name and metric value of a request that matched no route.
UNMATCHED = ""


def display_route(route: str) -> str:
    return insight.display_route(route)


def tag_from_baggage(span: trace.Span, ctx: Context) -> None:
    """Copy ``perf.loadtest.*`` baggage onto the SERVER span (bounded)."""
    for key, value in baggage.get_all(ctx).items():
        if key.startswith(BAGGAGE_SPAN_PREFIX) and isinstance(value, str):
            span.set_attribute(key[:100], value[:200])


def excludes(pattern: re.Pattern[str], path: str, url: Callable[[Any], str], request: Any) -> bool:
    """Whether an excluded-URL pattern leaves the request alone.

    It does when a pattern matches the request's path or its full URL, ``url(request)``, built
    only when the path did not match.  The official instrumentations match the full URL
    (``http://host/healthz``: so a pattern may name the host); the README has always said
    path, so a pattern anchored at the path (``^/healthz``) excludes too.  Only a request to
    an app whose exclusion list is set pays this.
    """
    if pattern.search(path) is not None:
        return True
    try:
        full = url(request)
    except Exception:  # an environ or scope no URL can be built from (no host...): the path decides
        return False
    return pattern.search(full) is not None


def traceresponse(work: Work) -> bytes:
    """The ``traceresponse`` header value (W3C Trace Context Level 2) for the request's span."""
    ctx = work.context
    if type(ctx) is SpanContext and CONTEXT_IS_TUPLE:  # fields, not three property calls
        return b"00-%032x-%016x-%02x" % (ctx[0], ctx[1], ctx[3])
    return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)


def server_timing(work: Work, start: float) -> bytes:
    """The ``Server-Timing`` header value: total time so far, SQL time and query count."""
    total = (perf_counter() - start) * 1000.0
    return (
        f'total;dur={total:.1f}, db;dur={work.db_time * 1000.0:.1f};desc="{work.query_count} queries"'
    ).encode()


#: Attribute a server adapter sets on an exception that escapes a request: that request's
#: SpanContext, so the server's own error record ("Exception in ASGI application", logged
#: by uvicorn after our middleware has left the request's context) still names its trace.
FAILED_REQUEST = "_otel_perf_span_context"


def mark_failed_request(exc: BaseException, span_context: SpanContext) -> None:
    """Tie ``exc`` to the request it escaped from (a no-op for exceptions that take no attribute)."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, FAILED_REQUEST, span_context)


def failed_request(record: logging.LogRecord) -> SpanContext | None:
    """The SpanContext of the request whose escaping exception ``record`` reports, if any."""
    exc_info = record.exc_info
    if not exc_info or not isinstance(exc_info, tuple) or exc_info[1] is None:
        return None
    found = getattr(exc_info[1], FAILED_REQUEST, None)
    return found if isinstance(found, SpanContext) else None


class ServerCore:
    """What every server adapter of one runtime shares: settings resolved once, the span starter."""

    def __init__(self, runtime: Runtime, framework: str = "", wsgi: bool = False) -> None:
        """``framework``: the official instrumentations' name for it (``FASTAPI``, ``DJANGO``...),
        so ``OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS`` applies as it does there.  ``wsgi``: its
        requests come as WSGI environs (the old conventions name their parts differently)."""
        self.rt = runtime
        self.wsgi = wsgi
        cfg = runtime.config
        #: the stats endpoint and health path (answered before the app sees the request), or None
        self.stats: Any = runtime.stats_endpoint
        self.stats_path = self.stats.path if self.stats is not None else ""
        #: prefixes of the paths the stats endpoint answers (stats, health): a request whose path
        #: starts with one is answered by it when it ``owns`` the path; () while both are off
        self.admin_paths: tuple[str, ...] = self.stats.paths if self.stats is not None else ()
        #: the browser script (served at its path, Server-Timing on HTML), or None
        self.browser: Any = runtime.browser_script
        #: requests whose path or URL matches are passed straight through, unmeasured (excludes())
        self.excluded = cfg.excluded_urls(framework)
        capture_all_methods(cfg.flag("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"))
        self.redact = frozenset(x.lower() for x in cfg.items("OTEL_PERF_REDACT_QUERY_PARAMS"))
        self.subspans = cfg.flag("OTEL_PERF_ASGI_SUBSPANS")
        #: OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_* (nothing is read while unset)
        self.capture = HeaderCapture("SERVER")
        self.spans = SpanStarter(runtime.tracer)
        self.context_var = runtime_context_var()
        #: the opt-in per-request extras (access log, user, tenant), or None; while on, finish()
        #: is the version that calls them (so while off a request pays nothing)
        self.extras = request_extras.build(runtime)
        #: (scheme, protocol, Host, listening socket, peer, user agent) -> their span attributes:
        #: the same for every request of a keep-alive connection, built once for it
        self._connections: dict[tuple[Any, ...], dict[str, Any]] = {}
        if self.extras is not None:
            self.finish = self._finish_with_extras  # type: ignore[method-assign]
        #: the old HTTP metrics while OTEL_SEMCONV_STABILITY_OPT_IN has http/dup (else None):
        #: then the span starts and ends with the old attributes too, and each request is
        #: recorded in the old metrics as well
        self.old: semconv_dup.OldHttpMetrics | None = runtime.old_http
        if self.old is not None:
            self._finish_stable = self.finish
            self.start_attributes = self._start_attributes_dup  # type: ignore[method-assign]
            self.finish = self._finish_dup  # type: ignore[method-assign]

    def start_attributes(
        self,
        method: str,
        original_method: str,
        path: str,
        query: str,
        scheme: str,
        version: str,
        host: str | bytes = "",
        server: tuple[str, int] | None = None,
        client: tuple[str, int] | None = None,
        user_agent: str | bytes = "",
        headers: Callable[[], Pairs] | None = None,
    ) -> dict[str, Any]:
        """The SERVER span's attributes known at start (built only when the span records).

        Stable HTTP semconv, as the official instrumentations set them: ``server.address``
        and ``server.port`` from the Host header (else the listening socket), ``client.*`` from
        the peer, ``http.request.method_original`` for a method outside the known set.
        ``host`` and ``user_agent`` may be the raw header bytes (Latin-1), decoded only when
        the connection's attributes are built.
        """
        attrs = ValidAttributes()
        attrs[n.A_METHOD] = method
        attrs["url.path"] = path[:MAX_PATH_ATTR]
        if method != original_method:
            attrs["http.request.method_original"] = original_method[:64]
        if query:
            attrs["url.query"] = redact_query(query[:MAX_PATH_ATTR], self.redact)
        # The rest is the same for every request of a connection: built once for it
        try:
            attrs.update(self._connections[scheme, version, host, server, client, user_agent])
        except (KeyError, TypeError):  # TypeError: a socket given as a list (unhashable)
            attrs.update(self._connection_attributes(scheme, version, host, server, client, user_agent))
        if headers is not None and self.capture.request_names:
            captured = dict(attrs)  # the shared start attributes stay unchanged
            captured.update(self.capture.request(headers()))
            return captured
        return attrs

    def _start_attributes_dup(
        self,
        method: str,
        original_method: str,
        path: str,
        query: str,
        scheme: str,
        version: str,
        host: str | bytes = "",
        server: tuple[str, int] | None = None,
        client: tuple[str, int] | None = None,
        user_agent: str | bytes = "",
        headers: Callable[[], Pairs] | None = None,
    ) -> dict[str, Any]:
        """:meth:`start_attributes` and the old ones (http/dup)."""
        attrs = ServerCore.start_attributes(
            self, method, original_method, path, query, scheme, version, host, server, client, user_agent,
            headers,
        )  # fmt: skip
        host_text = host.decode("latin-1") if isinstance(host, bytes) else host
        agent = user_agent.decode("latin-1") if isinstance(user_agent, bytes) else user_agent
        old = semconv_dup.server_span_attributes(
            method, attrs.get("url.path", ""), attrs.get("url.query", ""), scheme, version, host_text[:256],
            server, client, agent[:MAX_USER_AGENT], self.wsgi,
        )  # fmt: skip
        attrs.update(old)
        return attrs

    def _connection_attributes(
        self,
        scheme: str,
        version: str,
        host: str | bytes,
        server: Any,
        client: Any,
        user_agent: str | bytes,
    ) -> dict[str, Any]:
        """``url.scheme``, ``network.protocol.version``, ``server.*``, ``client.*`` and the user
        agent of one connection, kept for its next requests when they can be."""
        attrs: dict[str, Any] = {n.A_URL_SCHEME: str(scheme)}
        if version:
            attrs[n.A_PROTOCOL_VERSION] = version
        host_text = host.decode("latin-1") if isinstance(host, bytes) else host
        agent = user_agent.decode("latin-1") if isinstance(user_agent, bytes) else user_agent
        attrs.update(_server_attributes(host_text, server))
        if client:
            attrs["client.address"] = str(client[0])[:256]
            if client[1]:
                attrs["client.port"] = int(client[1])
        if agent:
            attrs["user_agent.original"] = agent[:MAX_USER_AGENT]
        if len(host) <= MAX_CACHED_HOST and len(user_agent) <= MAX_USER_AGENT:
            connections = self._connections
            try:
                if len(connections) >= MAX_CACHED_CONNECTIONS:
                    connections.clear()
                connections[scheme, version, host, server, client, user_agent] = attrs
            except TypeError:  # unhashable (a socket given as a list): built each time
                pass
        return attrs

    def finish(
        self,
        work: Work,
        route: str,
        status: int,
        error_type: str,
        seconds: float,
        scheme: str = "http",
        version: str = "",
        response_size: int = -1,
        request_size: int = -1,
        exc: BaseException | None = None,
        response_headers: Callable[[], Pairs] | None = None,
    ) -> None:
        """Name the span by ``route``, set its end attributes, record RED metrics and findings, end it.

        ``exc``: the exception that escaped the app (an ``exception`` event on the span).
        """
        if len(route) > MAX_PATH_ATTR:
            route = route[:MAX_PATH_ATTR]
        work.name = route
        work.done = True
        method = work.method
        if not error_type and status >= 500:
            error_type = str(status)
        span = work.span
        recording = type(span) is not NonRecordingSpan and span.is_recording()  # most are not: no call
        if recording:
            if route:  # semconv: a method outside the known set is named HTTP
                span.update_name(f"{method if method != '_OTHER' else 'HTTP'} {route}")
            attrs: dict[str, Any] = ValidAttributes()
            if route:
                attrs[n.A_ROUTE] = route
            if status:
                attrs[n.A_STATUS] = int(status)
            if error_type:
                attrs[n.A_ERROR_TYPE] = error_type
            attrs[n.A_PERF_QUERY_COUNT] = work.query_count
            attrs[n.A_PERF_DB_DURATION] = work.db_time
            if response_headers is not None and self.capture.response_names:
                attrs = {**attrs, **self.capture.response(response_headers())}
            self.spans.set_attributes(span, attrs)
            if exc is not None:
                span.add_event("exception", self.rt.scrubber.exception(exc))
            if error_type:
                span.set_status(Status(StatusCode.ERROR))
        # RED metrics and queries per request, for every request (sampled or not); the
        # exemplar only from a sampled one.  The findings only past their thresholds.
        rt = self.rt
        http_key = (route, method, status, error_type, scheme, version)
        span_id = work.span_id
        query_count = work.query_count
        trace_id = work.trace_id if span_id else 0
        rt.inst.request_metrics.record(
            seconds, response_size, query_count, http_key, (route, method), trace_id, span_id
        )
        if request_size >= 0:
            rt.inst.request_size.record(request_size, http_key)
        if seconds >= rt.slow_request_s or query_count >= rt.n_plus_one_threshold:
            insight.request_findings(rt, work, route, method, status, seconds)
        if recording:  # ending a span that does not record does nothing
            self.spans.end(span)

    def _finish_dup(
        self,
        work: Work,
        route: str,
        status: int,
        error_type: str,
        seconds: float,
        scheme: str = "http",
        version: str = "",
        response_size: int = -1,
        request_size: int = -1,
        exc: BaseException | None = None,
        response_headers: Callable[[], Pairs] | None = None,
    ) -> None:
        """:meth:`finish` (or its version with the extras), with ``http.status_code`` on the span and
        the request recorded in the old metrics too (http/dup), as the official ASGI instrumentation
        records it: milliseconds rounded, under the old attributes and the route as ``http.target``;
        the sizes of a response that had a body and of a request that declared one (the official
        WSGI instrumentation records no old size metric, so a WSGI app's are left out too)."""
        span = work.span
        if status and type(span) is not NonRecordingSpan and span.is_recording():
            span.set_attribute("http.status_code", int(status))
        self._finish_stable(
            work, route, status, error_type, seconds, scheme, version, response_size, request_size, exc,
            response_headers,
        )  # fmt: skip
        old = self.old
        assert old is not None
        host, server_name, port, host_name = semconv_dup.server_request_parts(work.scope)
        key = (
            work.method, host, scheme, status or None, version, server_name, port or None, work.name,
            host_name,
        )  # fmt: skip
        trace_id = work.trace_id if work.span_id else 0
        old.server_duration.record(max(round(seconds * 1000), 0), key, trace_id, work.span_id)
        if self.wsgi:
            return
        if response_size > 0:
            old.server_response_size.record(response_size, key, trace_id, work.span_id)
        if request_size > 0:
            old.server_request_size.record(request_size, key, trace_id, work.span_id)

    def _finish_with_extras(
        self,
        work: Work,
        route: str,
        status: int,
        error_type: str,
        seconds: float,
        scheme: str = "http",
        version: str = "",
        response_size: int = -1,
        request_size: int = -1,
        exc: BaseException | None = None,
        response_headers: Callable[[], Pairs] | None = None,
    ) -> None:
        """:meth:`finish` with the user and tenant on the span, then the access log and tenant metric."""
        extras = self.extras
        assert extras is not None
        extras.before_finish(work)
        if response_size >= 0:
            work.response_size = response_size  # type: ignore[attr-defined]
        ServerCore.finish(
            self, work, route, status, error_type, seconds, scheme, version, response_size, request_size,
            exc, response_headers,
        )  # fmt: skip
        extras.after_finish(work, route, status, error_type, seconds)


def server_stopped(runtime: Runtime) -> None:
    """The server has stopped serving: report, and export what was recorded (bounded).

    The loop monitor reports nothing while the flush runs: it runs on the event loop's thread
    (uvicorn is still inside its serve coroutine), and an unreachable collector holding it for
    the timeout was reported as the app blocking the loop.  The monitor keeps going, for a
    server started again in this process.
    """
    pipeline = runtime.pipeline
    if pipeline is None:
        return
    try:
        timeout = runtime.config.number("OTEL_PERF_SHUTDOWN_TIMEOUT")
        if runtime.loop_monitor is not None:
            runtime.loop_monitor.quiet(timeout + 1.0)
        pipeline.report_once()
        pipeline.flush(timeout)
    except Exception as exc:
        guard.internal_error("server.stopped", exc)


def supervising(runtime: Runtime, original: Any, *, workers: bool = True) -> Any:
    """Wrap a supervisor's main loop (it serves no request): its process prints no exit report.

    ``workers``: it runs several workers at once (not a reloader's one at a time), so the
    stats endpoint of each answers for all of them (a folder they share, made here).
    """
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if runtime.pipeline is not None:
            runtime.pipeline.supervisor = True
        done = None
        stats = runtime.stats_endpoint
        if workers and stats is not None:
            try:
                done = stats.share.supervise()
            except Exception as exc:
                guard.internal_error("server.supervise", exc)
        try:
            return original(self, *args, **kwargs)
        finally:
            if done is not None:
                done()

    return run


def _server_attributes(host: str, server: tuple[str, int] | None) -> dict[str, Any]:
    """``server.address`` and ``server.port`` from a Host header, else from the listening socket."""
    address, port = _host_and_port(host)
    if not address and server:
        address = str(server[0])
        port = server[1] if len(server) > 1 and isinstance(server[1], int) else 0  # (path, None): a socket
    attrs: dict[str, Any] = {}
    if address:
        attrs[n.A_SERVER_ADDRESS] = address[:256]
        if port:
            attrs[n.A_SERVER_PORT] = port
    return attrs


def _host_and_port(host: str) -> tuple[str, int]:
    """``server.address`` and ``server.port`` from a Host header (``[::1]:8000``, ``example.com``)."""
    if not host:
        return "", 0
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name or not port.isdigit():
        return host.strip("[]"), 0
    return name.strip("[]"), int(port)


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of header ``name`` (lower-case) in an ASGI-style header list, or b""."""
    for key, value in headers:
        if key == name:
            return value
    return b""
