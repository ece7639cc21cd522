"""ASGI: one lean middleware per app, for Starlette/FastAPI, Django's ASGI handler and any ASGI app.

Per request it creates one SERVER span (through the SDK tracer, so samplers, processors
and propagators are standard), attaches it as the current context, opens a :class:`Work`
for the insight counters, adds ``traceresponse`` (and optionally ``Server-Timing``)
headers, and at the end hands the unit to :class:`~otel_perf._core.server.ServerCore`,
which names the span by the route template, records the RED metrics and evaluates the
findings.  Requests (and websockets) to excluded URLs pass through with no span and no
unit, in a context where instrumentation is suppressed (:func:`~otel_perf._core.suppression.untraced`):
their statements, commands and outgoing calls are not recorded either.  The stats endpoint is
answered here before the app sees the request.  How the route template is found is the
framework adapter's part (``route_of``).

Why not the contrib ``OpenTelemetryMiddleware``: it creates three spans per request,
collects a dozen attributes and records SDK histograms on every call, which costs the
app 75-85% of its throughput on a trivial endpoint (see FIELD-NOTES and ``bench/``).
This middleware keeps the same span shape and semantic conventions at a fraction of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_perf import _names as n
from otel_perf._core import guard
from otel_perf._core.runtime import Runtime
from otel_perf._core.server import (
    KNOWN_METHODS,
    MAX_PATH_ATTR,
    ServerCore,
    excludes,
    header_value,
    mark_failed_request,
    server_timing,
    tag_from_baggage,
    traceresponse,
    unknown_method,
)
from otel_perf._core.suppression import untraced
from otel_perf._core.work import Work, current_work
from otel_perf._integrations import apps, asgi_browser

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: (scope, work) -> the route template of a finished request ("" when none matched)
RouteOf = Callable[[Scope, Work], str]

_PROPAGATION_HEADERS = (b"traceparent", b"tracestate", b"baggage")
#: Bumped in a forked child, so per-process set-up done on the request path runs again there.
_fork_generation = [0]


def _after_fork() -> None:
    _fork_generation[0] += 1


os.register_at_fork(after_in_child=_after_fork)


#: Scope key of a request whose 5xx response is complete but which has not ended yet (its
#: responder): a background task starting ends it (:func:`end_sent_response`).
RESPONSE_SENT = "otel_perf.response_sent"


def end_sent_response() -> None:
    """A background task starts: the current request, if its 5xx response is complete, ends now.

    No exception of the request can follow once the app runs its background tasks, so the
    request ends as every other does, when its response was complete (the task's time and
    queries are its own job's).
    """
    work = current_work.get()
    if work is None or work.kind != "request" or not isinstance(work.scope, MutableMapping):
        return
    responder = work.scope.pop(RESPONSE_SENT, None)
    if isinstance(responder, _Responder):
        responder.middleware._complete(responder, "", None)


def route_from_work(scope: Scope, work: Work) -> str:
    """The route an adapter put on the unit while the request ran (Django's resolver, ...)."""
    return work.name


class _HeaderGetter:
    """Propagator getter over ASGI's list of (bytes, bytes) headers."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        k = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for hk, v in carrier if hk == k]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


#: methods whose requests usually carry a body (their Content-Length is read for the size metric)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "QUERY"})


def _request_size(scope: Scope) -> int:
    value = header_value(scope.get("headers") or (), b"content-length")
    return int(value) if value.isdigit() else -1


def request_url(scope: Scope) -> str:
    """The request's URL as the official ASGI instrumentation matches excluded URLs against:
    ``scheme://host/path``, the host from the ``Host`` header (else the server's address and a
    port other than 80), no query string."""
    host = ""
    for key, value in scope.get("headers") or ():
        if key == b"host":
            host = value.decode("latin-1")
            break
    if not host:
        server = scope.get("server") or ("0.0.0.0", 80)
        host = str(server[0]) if server[1] in (80, None) else f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme') or 'http'}://{host}{scope.get('path', '')}"


def _decoded(headers: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class _Responder:
    """The ``send`` the app is given: notes the status and adds our response headers.

    It also ends the request when its response is complete (the last body message is sent):
    what the app runs after that, such as Starlette's ``BackgroundTasks``, is not the
    request's time, nor its queries (the background job adapter makes each task a unit of
    its own).

    An object rather than a closure: a closure over the request's variables would turn
    each of them into a cell, a dozen more objects per request for the collector to count.
    """

    __slots__ = (
        "active_key", "headers", "middleware", "send", "size", "start", "status", "traceresponse", "work",
    )  # fmt: skip

    def __init__(
        self, middleware: PerfMiddleware, send: Send, work: Work, start: float, active_key: tuple[str, str]
    ) -> None:
        self.middleware = middleware
        self.send = send
        #: (method, scheme): the request's entry in the runtime's active-requests count
        self.active_key = active_key
        #: the request, until it is recorded (then None)
        self.work: Work | None = work
        self.start = start
        self.status = 0
        #: response body bytes sent so far
        self.size = 0
        self.headers: Any = ()
        # The common case (traceresponse only) is done inline; Server-Timing takes the helper.
        self.traceresponse = middleware.inline_traceresponse and work.trace_id

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = headers = message.get("headers") or ()
            if self.traceresponse:
                header = (b"traceresponse", traceresponse(self.work))  # type: ignore[arg-type]
                message["headers"] = [*headers, header]
            elif self.middleware.rt.server_timing:
                try:
                    self.middleware._response_headers(message, self.work, self.start)  # type: ignore[arg-type]
                except Exception as exc:
                    guard.internal_error("asgi.headers", exc)
            await self.send(message)
            return
        if kind == "http.response.body":
            body = message.get("body")
            if body:
                self.size += len(body)
        await self.send(message)
        # The last body message (or a path send): the response is complete.  A 5xx is left to
        # the app's return: Starlette's error middleware sends its 500 and then re-raises, and
        # the exception belongs to this request (its event, error.type).  A 5xx the endpoint
        # returned may have background tasks, though: the first to start ends the request
        # (end_sent_response), so it is no longer than its response there either.
        if not message.get("more_body"):
            if self.status < 500:
                self.middleware._complete(self, "", None)
            elif self.work is not None:
                self.work.scope[RESPONSE_SENT] = self

    def headers_of_response(self) -> list[tuple[str, str]]:
        return _decoded(self.headers)


class PerfMiddleware:
    """ASGI middleware wrapping an app (installed outermost by the framework adapter).

    ``route_of(scope, work)`` gives the route template at the end of the request;
    ``work_type`` is the adapter's :class:`Work` (it may know the route while the request runs);
    ``framework`` names what was instrumented (startup log, exit report).
    """

    def __init__(
        self,
        app: ASGIApp,
        runtime: Runtime,
        route_of: RouteOf = route_from_work,
        work_type: type[Work] = Work,
        framework: str = "ASGI",
        excluded_env: str = "ASGI",
    ) -> None:
        self.app = app
        self.rt = runtime
        self.framework = framework
        runtime.apps.add(framework)
        if framework != "ASGI":  # a framework's app: a generic wrapper around it stands down
            apps.framework_middleware_built()
        self.core = core = ServerCore(runtime, excluded_env)
        self.route_of = route_of
        self.work_type = work_type
        self.admin_paths = core.admin_paths
        self.excluded = core.excluded
        self.subspans = core.subspans
        self.loop_monitor: Any = runtime.loop_monitor
        self._monitor_generation = -1
        self.spans = core.spans
        self._context_var = core.context_var
        self._attributes_at_start = self._start_attributes  # bound once, not per request
        self._capture_response = bool(core.capture.response_names)
        #: traceresponse without Server-Timing: written by the responder itself
        self.inline_traceresponse = runtime.traceresponse and not runtime.server_timing
        # The browser script (answered below) and, inside the span, the HTML Server-Timing
        # header; None while off, and then requests pay one attribute check.
        self.browser = core.browser
        if self.browser is not None:
            self.app = asgi_browser.HtmlServerTimingApp(app, route_of)
        # User and tenant (opt-in): identified inside the traced app.  The access log needs no
        # wrapper: the responder counts the body bytes it hands to the server core.
        if core.extras is not None and core.extras.identifies:
            self.app = core.extras.asgi(self.app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine frame per request: the prologue and epilogue are inlined here
        # rather than split into helpers (ServerCore.begin/end do the same for other
        # adapters), and nothing is allocated that a request does not need (no attribute
        # dict unless the span records, one object for send).
        if scope["type"] != "http":
            if scope["type"] != "websocket":  # lifespan: start-up and shutdown keep their telemetry
                await self.app(scope, receive, send)
            elif self._is_excluded(scope) or ("router" in scope and self._nested(scope)):
                await self._untraced(scope, receive, send)
            else:
                await self._websocket(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.admin_paths and path.startswith(self.admin_paths) and self.core.stats.owns(path):
            await self.core.stats.handle(scope, receive, send)
            return
        if self.browser is not None and path == self.browser.path:
            await asgi_browser.serve_script(self.browser, scope, send)
            return
        if self.excluded is not None and excludes(self.excluded, path, request_url, scope):
            await self._untraced(scope, receive, send)
            return
        if "router" in scope and self._nested(scope):  # an app mounted in an app we measure
            await self.app(scope, receive, send)
            return
        rt = self.rt
        monitor = self.loop_monitor
        try:
            if monitor is not None and self._monitor_generation != _fork_generation[0]:
                # Once per process (and again after a fork), not per request: starting is
                # idempotent, but checking costs a getpid() syscall each time.
                monitor.ensure_started()
                self._monitor_generation = _fork_generation[0]
            method = scope.get("method", "GET")
            if method not in KNOWN_METHODS:
                method = unknown_method(method)
            scheme = scope.get("scheme") or "http"
            parent = None
            headers = scope.get("headers") or ()
            for key, _ in headers:
                if key in _PROPAGATION_HEADERS:
                    parent = propagate.extract(headers, getter=_GETTER)  # type: ignore[arg-type]
                    break
            span = self.spans.start(
                method if method != "_OTHER" else "HTTP",
                parent,
                SpanKind.SERVER,
                self._attributes_at_start,
                None,
                (scope, method),
            )
            if parent is not None and span.is_recording():
                tag_from_baggage(span, parent)
            work = self.work_type("request", "", span, rt.max_statements, method, scope)
            var = self._context_var
            if var is not None:  # context.attach(trace.set_span_in_context(span, parent)), inlined
                values = (parent if parent is not None else var.get()).copy()
                values[_SPAN_KEY] = span
                ctx_token = var.set(Context(values))
            else:
                ctx_token = context.attach(trace.set_span_in_context(span, parent))
            work_token = current_work.set(work)
            active = rt.active
            active_key = (method, scheme)
            active[active_key] = active.get(active_key, 0) + 1
            # The loop monitor's task -> request map, filled inline (two calls fewer per request)
            task = monitor.current_task() if monitor is not None else None
            if task is not None:
                monitor.requests[id(task)] = work
            start = perf_counter()
        except Exception as exc:
            guard.internal_error("asgi.start", exc)
            await self.app(scope, receive, send)
            return

        responder = _Responder(self, send, work, start, active_key)
        error_type = ""
        failure: BaseException | None = None
        try:
            if self.subspans and span.is_recording():
                await self.app(scope, self._traced_receive(receive), self._traced_send(responder))
            else:
                await self.app(scope, receive, responder)
        except BaseException as exc:
            if responder.work is not None:  # else: raised after the response (a background task's)
                error_type = type(exc).__qualname__
                failure = exc
                if responder.status == 0:
                    responder.status = 500
                mark_failed_request(exc, work.context)
            raise
        finally:
            try:
                if responder.work is not None:  # no complete response: the request ends here
                    self._complete(responder, error_type, failure)
            finally:
                current_work.reset(work_token)
                if var is None:
                    context.detach(ctx_token)
                else:
                    try:
                        var.reset(ctx_token)
                    except Exception:  # what context.detach does: log it
                        context.detach(ctx_token)
                if task is not None:
                    monitor.requests.pop(id(task), None)

    def _complete(self, responder: _Responder, error_type: str, failure: BaseException | None) -> None:
        """The request is over (its response complete, or the app returned or raised): record it once."""
        work = responder.work
        if work is None:  # recorded already (a message after the last body: trailers)
            return
        responder.work = None
        seconds = perf_counter() - responder.start
        scope = work.scope
        # No longer active (what runs after the response, background tasks, is not the request)
        active = self.rt.active
        active_key = responder.active_key
        active[active_key] = active.get(active_key, 1) - 1
        if responder.status >= 500:
            scope.pop(RESPONSE_SENT, None)
        try:
            self.core.finish(
                work,
                self.route_of(scope, work),
                responder.status,
                error_type,
                seconds,
                active_key[1],  # the scheme
                scope.get("http_version") or "",
                responder.size,
                _request_size(scope) if work.method in _BODY_METHODS else -1,
                failure,
                responder.headers_of_response if self._capture_response else None,
            )
        except Exception as exc:
            guard.internal_error("asgi.finish", exc)

    def _is_excluded(self, scope: Scope) -> bool:
        excluded = self.excluded
        return excluded is not None and excludes(excluded, scope.get("path", ""), request_url, scope)

    def _nested(self, scope: Scope) -> bool:
        """Whether ``scope`` is a request an outer app measures already: an app mounted in it
        (Starlette's ``Mount`` hands the sub-app the very scope the outer app got, which its
        router has marked with ``"router"``: the outermost app's request is not, so it pays one
        key lookup).  It is that request's, measured once: one SERVER span, one point, one
        ``traceresponse``."""
        outer = current_work.get()
        if outer is None or outer.scope is not scope:
            return False
        self._join(outer)
        return True

    def _join(self, outer: Work) -> None:
        """A request of this framework inside a unit a generic ASGI wrapper began: ours now."""
        if self.work_type is not Work and type(outer) is Work:
            with contextlib.suppress(TypeError):  # same slots: the outer unit reports as ours
                outer.__class__ = self.work_type

    async def _untraced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request or websocket to an excluded URL: no span, no unit, instrumentation suppressed.

        Inside a request an outer layer measures (nested apps) it is that request's, passed through.
        """
        outer = current_work.get()
        if outer is not None and outer.kind == "request":
            await self.app(scope, receive, send)
            return
        token = context.attach(untraced())
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket connection: one SERVER span for its whole life, named by its route.

        As the official ASGI instrumentation does: no HTTP metrics (a connection is not a
        request); statements run while it is open count towards it.
        """
        path: str = scope.get("path", "")
        headers = scope.get("headers") or ()
        parent = None
        if any(key in _PROPAGATION_HEADERS for key, _ in headers):
            parent = propagate.extract(headers, getter=_GETTER)  # type: ignore[arg-type]
        span = self.spans.start(path, parent, SpanKind.SERVER, self._websocket_attributes, None, (scope,))
        work = self.work_type("request", "", span, self.rt.max_statements, "", scope)
        ctx_token = context.attach(trace.set_span_in_context(span, parent))
        work_token = current_work.set(work)
        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            failure = exc
            mark_failed_request(exc, work.context)
            raise
        finally:
            work.done = True
            current_work.reset(work_token)
            context.detach(ctx_token)
            if span.is_recording():
                try:
                    route = self.route_of(scope, work)
                    if route:
                        span.update_name(route)
                        span.set_attribute(n.A_ROUTE, route)
                    span.set_attribute(n.A_PERF_QUERY_COUNT, work.query_count)
                    if failure is not None:
                        span.set_attribute(n.A_ERROR_TYPE, type(failure).__qualname__)
                        span.add_event("exception", self.rt.scrubber.exception(failure))
                        span.set_status(Status(StatusCode.ERROR))
                except Exception as exc:
                    guard.internal_error("asgi.websocket", exc)
                span.end()

    def _websocket_attributes(self, scope: Scope) -> dict[str, Any]:
        attrs = self._start_attributes(scope, "GET")
        del attrs[n.A_METHOD]  # a connection, not a request
        attrs.pop("http.method", None)  # its old name (http/dup)
        return attrs

    def _start_attributes(self, scope: Scope, method: str) -> dict[str, Any]:
        """The SERVER span's attributes known at start (built only when the span records)."""
        query = scope.get("query_string", b"")
        headers = scope.get("headers") or ()
        host = user_agent = b""
        for key, value in headers:  # one pass for both
            if key == b"host":
                host = value
            elif key == b"user-agent":
                user_agent = value
        return self.core.start_attributes(
            method,
            scope.get("method", "GET"),
            scope.get("path", ""),
            query.decode("latin-1") if query else "",
            scope.get("scheme") or "http",
            scope.get("http_version") or "",
            host,  # raw: decoded once per connection
            scope.get("server"),
            scope.get("client"),
            user_agent,
            (lambda: _decoded(headers)) if self.core.capture.request_names else None,
        )

    def _response_headers(self, message: Message, work: Work, start: float) -> None:
        rt = self.rt
        headers = list(message.get("headers") or ())
        if rt.traceresponse and work.trace_id:
            headers.append((b"traceresponse", traceresponse(work)))
        if rt.server_timing:
            headers.append((b"server-timing", server_timing(work, start)))
        message["headers"] = headers

    def _traced_receive(self, receive: Receive) -> Receive:
        tracer = self.rt.tracer

        async def wrapped() -> Message:
            with tracer.start_as_current_span("http receive", kind=SpanKind.INTERNAL) as span:
                message = await receive()
                span.set_attribute("asgi.event.type", message.get("type", ""))
                return message

        return wrapped

    def _traced_send(self, send: Send) -> Send:
        tracer = self.rt.tracer

        async def wrapped(message: Message) -> None:
            with tracer.start_as_current_span("http send", kind=SpanKind.INTERNAL) as span:
                span.set_attribute("asgi.event.type", message.get("type", ""))
                await send(message)

        return wrapped


__all__ = ["MAX_PATH_ATTR", "PerfMiddleware", "RouteOf", "end_sent_response", "route_from_work"]
