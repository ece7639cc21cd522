"""The server side: one lean ASGI middleware per app.

Per request it creates one SERVER span (through the SDK tracer, so samplers, processors
and propagators are standard), attaches it as the current context, opens a :class:`Work`
for the insight counters, adds ``traceresponse`` (and optionally ``Server-Timing``)
headers, and at the end records RED metrics keyed by the route *template* and evaluates
the findings.  Requests to excluded URLs pass straight through; the stats endpoint is
answered here before the app sees the request.

Why not the contrib ``OpenTelemetryMiddleware``: it creates three spans per request,
collects a dozen attributes and records SDK histograms on every call, which costs the
app 75-85% of its throughput on a trivial endpoint (see FIELD-NOTES and ``bench/``).
This middleware keeps the same span shape and semantic conventions at a fraction of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_perf import _names as n
from otel_perf._analysis import insight
from otel_perf._analysis.redact import redact_query
from otel_perf._analysis.work import Work, current_work
from otel_perf._instrumentation import asgi_browser
from otel_perf._instrumentation.fastspan import CONTEXT_IS_TUPLE, SpanStarter, runtime_context_var
from otel_perf._setup import guard
from otel_perf._setup.runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
_PROPAGATION_HEADERS = (b"traceparent", b"tracestate", b"baggage")
MAX_PATH_ATTR = 2048
#: Bumped in a forked child, so per-process set-up done on the request path runs again there.
_fork_generation = [0]


def _after_fork() -> None:
    _fork_generation[0] += 1


os.register_at_fork(after_in_child=_after_fork)


def route_template(scope: Scope) -> str:
    """The matched route's template (``/items/{item_id}``), including any mount prefix."""
    route = scope.get("route")
    if route is None:
        return ""
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return ""
    root = scope.get("root_path", "")
    app_root = scope.get("app_root_path", root)
    if root and isinstance(root, str) and isinstance(app_root, str) and len(root) > len(app_root):
        path = root[len(app_root) :] + path
    return path


class _HeaderGetter:
    """Propagator getter over ASGI's list of (bytes, bytes) headers."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        k = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for hk, v in carrier if hk == k]
        return values or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


#: Baggage keys copied onto the SERVER span, so a load-test run's traces can be searched for.
BAGGAGE_SPAN_PREFIX = "perf.loadtest."


def _tag_from_baggage(span: trace.Span, ctx: Context) -> None:
    for key, value in baggage.get_all(ctx).items():
        if key.startswith(BAGGAGE_SPAN_PREFIX) and isinstance(value, str):
            span.set_attribute(key[:100], value[:200])


def _traceresponse(work: Work) -> bytes:
    """The ``traceresponse`` header value (W3C Trace Context Level 2) for the request's span."""
    ctx = work.context
    if type(ctx) is SpanContext and CONTEXT_IS_TUPLE:  # fields, not three property calls
        return b"00-%032x-%016x-%02x" % (ctx[0], ctx[1], ctx[3])
    return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, ctx.trace_flags)


class _Responder:
    """The ``send`` the app is given: notes the status and adds our response headers.

    An object rather than a closure: a closure over the request's variables would turn
    each of them into a cell, a dozen more objects per request for the collector to count.
    """

    __slots__ = ("middleware", "send", "start", "status", "traceresponse", "work")

    def __init__(self, middleware: PerfMiddleware, send: Send, work: Work, start: float) -> None:
        self.middleware = middleware
        self.send = send
        self.work = work
        self.start = start
        self.status = 0
        rt = middleware.rt
        # The common case (traceresponse only) is done inline; Server-Timing takes the helper.
        self.traceresponse = rt.traceresponse and not rt.server_timing and work.trace_id

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.traceresponse:
                header = (b"traceresponse", _traceresponse(self.work))
                message["headers"] = [*(message.get("headers") or ()), header]
            elif self.middleware.rt.server_timing:
                try:
                    self.middleware._response_headers(message, self.work, self.start)
                except Exception as exc:
                    guard.internal_error("asgi.headers", exc)
        await self.send(message)


class PerfMiddleware:
    """ASGI middleware wrapping an app (installed outermost by the framework patch)."""

    def __init__(self, app: ASGIApp, runtime: Runtime, stats: Any = None) -> None:
        self.app = app
        self.rt = runtime
        self.stats = stats
        cfg = runtime.config
        self.stats_path = cfg.text("OTEL_PERF_STATS_PATH") if cfg.text("OTEL_PERF_STATS_TOKEN") else ""
        patterns = cfg.items("OTEL_PYTHON_EXCLUDED_URLS")
        self.excluded = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
        self.redact = frozenset(x.lower() for x in cfg.items("OTEL_PERF_REDACT_QUERY_PARAMS"))
        self.subspans = cfg.flag("OTEL_PERF_ASGI_SUBSPANS")
        self.loop_monitor: Any = None
        self._monitor_generation = -1
        self.spans = SpanStarter(runtime.tracer)
        self._context_var = runtime_context_var()
        self._attributes_at_start = self._start_attributes  # bound once, not per request
        # otel-perf browser (issue #22): the script (answered below) and, inside the span, the
        # HTML Server-Timing header; None while off, and then requests pay one attribute check.
        self.browser = asgi_browser.script_for(runtime)
        if self.browser is not None:
            self.app = asgi_browser.HtmlServerTimingApp(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine frame per request: the prologue and epilogue are inlined here
        # rather than split into helpers, and nothing is allocated that a request does
        # not need (no attribute dict unless the span records, one closure for send).
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if self.stats_path and (path == self.stats_path or path.startswith(self.stats_path + "/")):
            await self.stats.handle(scope, receive, send)
            return
        if self.browser is not None and path == self.browser.path:  # otel-perf browser (issue #22)
            await asgi_browser.serve_script(self.browser, scope, send)
            return
        if self.excluded is not None and self.excluded.search(path):
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
            if method not in _KNOWN_METHODS:
                method = "_OTHER"
            parent = None
            headers = scope.get("headers") or ()
            for key, _ in headers:
                if key in _PROPAGATION_HEADERS:
                    parent = propagate.extract(headers, getter=_GETTER)  # type: ignore[arg-type]
                    break
            span = self.spans.start(
                method, parent, SpanKind.SERVER, self._attributes_at_start, None, (scope, method)
            )
            if parent is not None and span.is_recording():
                _tag_from_baggage(span, parent)
            work = Work("request", "", span, rt.max_statements, method, scope)
            var = self._context_var
            if var is not None:  # context.attach(trace.set_span_in_context(span, parent)), inlined
                values = (parent if parent is not None else var.get()).copy()
                values[_SPAN_KEY] = span
                ctx_token = var.set(Context(values))
            else:
                ctx_token = context.attach(trace.set_span_in_context(span, parent))
            work_token = current_work.set(work)
            active = rt.active
            active[method] = active.get(method, 0) + 1
            # The loop monitor's task -> request map, filled inline (two calls fewer per request)
            task = monitor.current_task() if monitor is not None else None
            if task is not None:
                monitor.requests[id(task)] = work
            start = perf_counter()
        except Exception as exc:
            guard.internal_error("asgi.start", exc)
            await self.app(scope, receive, send)
            return

        responder = _Responder(self, send, work, start)
        error_type = ""
        try:
            if self.subspans and span.is_recording():
                await self.app(scope, self._traced_receive(receive), self._traced_send(responder))
            else:
                await self.app(scope, receive, responder)
        except BaseException as exc:
            error_type = type(exc).__qualname__
            if responder.status == 0:
                responder.status = 500
            if span.is_recording():
                span.set_attribute("exception.type", error_type)
            raise
        finally:
            seconds = perf_counter() - start
            try:
                self._finish(scope, work, responder.status, error_type, seconds)
            except Exception as exc:
                guard.internal_error("asgi.finish", exc)
            finally:
                current_work.reset(work_token)
                if var is None:
                    context.detach(ctx_token)
                else:
                    try:
                        var.reset(ctx_token)
                    except Exception:  # what context.detach does: log it
                        context.detach(ctx_token)
                active[method] = active.get(method, 1) - 1
                if task is not None:
                    monitor.requests.pop(id(task), None)

    def _start_attributes(self, scope: Scope, method: str) -> dict[str, Any]:
        """The SERVER span's attributes known at start (built only when the span records)."""
        path = scope.get("path", "")
        attrs: dict[str, Any] = {
            "http.request.method": method,
            "url.path": path[:MAX_PATH_ATTR],
            "url.scheme": scope.get("scheme", "http"),
        }
        query = scope.get("query_string", b"")
        if query:
            q = query.decode("latin-1")[:MAX_PATH_ATTR]
            attrs["url.query"] = redact_query(q, self.redact)
        version = scope.get("http_version")
        if version:
            attrs["network.protocol.version"] = version
        return attrs

    def _response_headers(self, message: Message, work: Work, start: float) -> None:
        rt = self.rt
        headers = list(message.get("headers") or ())
        if rt.traceresponse and work.trace_id:
            headers.append((b"traceresponse", _traceresponse(work)))
        if rt.server_timing:
            total = (perf_counter() - start) * 1000.0
            value = (
                f'total;dur={total:.1f}, db;dur={work.db_time * 1000.0:.1f};desc="{work.query_count} queries"'
            )
            headers.append((b"server-timing", value.encode()))
        message["headers"] = headers

    def _finish(self, scope: Scope, work: Work, status: int, error_type: str, seconds: float) -> None:
        route = route_template(scope)
        if len(route) > MAX_PATH_ATTR:
            route = route[:MAX_PATH_ATTR]
        work.name = route
        method = work.method
        if not error_type and status >= 500:
            error_type = str(status)
        span = work.span
        recording = type(span) is not NonRecordingSpan and span.is_recording()  # most are not: no call
        if recording:
            if route:
                span.update_name(f"{method} {route}")
            attrs: dict[str, Any] = {}
            if route:
                attrs[n.A_ROUTE] = route
            if status:
                attrs[n.A_STATUS] = status
            if error_type:
                attrs[n.A_ERROR_TYPE] = error_type
            attrs[n.A_PERF_QUERY_COUNT] = work.query_count
            attrs[n.A_PERF_DB_DURATION] = work.db_time
            self.spans.set_attributes(span, attrs)
            if error_type:
                span.set_status(Status(StatusCode.ERROR))
        insight.finish_request(self.rt, work, route, method, status, seconds, error_type)
        if recording:  # ending a span that does not record does nothing
            span.end()

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
