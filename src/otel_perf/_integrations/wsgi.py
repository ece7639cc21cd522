"""WSGI: one lean request handler for Django, Flask and any other WSGI app.

The WSGI twin of :mod:`otel_perf._integrations.asgi`.  Per request it starts one SERVER
span from the incoming trace context (through the SDK tracer), opens a :class:`Work` for
the insight counters and makes both current while the app runs, adds ``traceresponse``
(and ``Server-Timing`` when enabled) in ``start_response``, and at the end hands the unit
to :class:`~otel_perf._core.server.ServerCore`, which names the span by the route
template, records the RED metrics and evaluates the findings.  The stats endpoint and the
browser script are answered before the app sees the request; a request to an excluded URL
is passed through with no span and no unit, in a context where instrumentation is suppressed
(:func:`~otel_perf._core.suppression.untraced`) while the app runs and while each chunk of a body it
streams is made, so its statements, commands and outgoing calls are not recorded either.

When the unit ends: a body that is already complete when the app returns (a list, Django's
``HttpResponse``, a server's file wrapper, whose ``sendfile`` path is kept) ends it there.
Any other body (Flask's, a streaming response) is wrapped: the request's context is current
again while each chunk is produced, so queries a streaming body runs count for its request,
and the unit ends when the body is exhausted, fails or is closed, whichever comes first
(uvicorn's WSGI bridge never calls ``close()``).  Nothing stays attached to the server's
thread between chunks.

How the route template is found is the framework adapter's part: Django's resolver puts it
on the unit while the request runs (:attr:`Work.name`); Flask's matched ``url_rule`` is read
from the request werkzeug keeps in the environ (``werkzeug.request``).  Both are read by
:func:`route_from_work`, the default, so a framework app inside another WSGI middleware that
we wrap generically still gets its route.  A request that arrives while another request's
unit is current (a framework app inside a generically wrapped one) is that unit's: it is
passed straight through, never measured twice.

Generic apps: :func:`wrap_generic` is what the server adapters (gunicorn's workers, uvicorn's
``--interface wsgi``) call with the app they loaded; it wraps an app that is not one a
framework adapter instruments in :class:`PerfWSGIMiddleware` (spans and metrics by method,
``http.route`` unset), and says so at startup.  This module is the ``wsgi`` row of the
registry: its ``install`` only arms that wrapping.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from time import perf_counter
from typing import Any
from wsgiref.util import request_uri

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY

from otel_perf._core import guard
from otel_perf._core.runtime import Runtime
from otel_perf._core.server import (
    KNOWN_METHODS,
    ServerCore,
    excludes,
    mark_failed_request,
    server_timing,
    tag_from_baggage,
    unknown_method,
)
from otel_perf._core.spans import CONTEXT_IS_TUPLE
from otel_perf._core.suppression import untraced
from otel_perf._core.work import Work, current_work
from otel_perf._integrations import apps

logger = logging.getLogger("otel_perf")

Environ = MutableMapping[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
#: (environ, work) -> the route template of a finished request ("" when none matched)
RouteOf = Callable[[Environ, Work], str]

#: ``rt.active`` is shared with the ASGI middleware (one event-loop thread); WSGI requests
#: run in many threads at once, so their updates take this lock (a new one in a forked child:
#: a thread of the parent may have held it at the fork).
_ACTIVE_LOCK = threading.Lock()


def _after_fork() -> None:
    global _ACTIVE_LOCK
    _ACTIVE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
#: Bodies complete when the app returns: the unit ends there.
_BUFFERED = (list, tuple)
#: (environ, body) -> whether ``body`` is complete when the app returns (nothing of the app runs
#: while it is sent), so the unit can end there.
Complete = Callable[[Environ, Any], bool]


def complete_body(environ: Environ, body: Any) -> bool:
    """A list or tuple, or a Django ``HttpResponse`` (not streaming): complete already."""
    return type(body) in _BUFFERED or getattr(body, "streaming", None) is False
_REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def route_from_work(environ: Environ, work: Work) -> str:
    """The route of a WSGI request: the one an adapter put on the unit, else Flask's matched rule.

    Django's resolver hook sets ``work.name``; a Flask (werkzeug) request object is kept in
    the environ by werkzeug itself (``werkzeug.request``, its documented ``populate_request``)
    while the request context is live, and its ``url_rule`` is the matched rule
    (``/orders/<int:order_id>``).  Flask clears that entry when the context ends, so the
    handler reads the route in ``start_response``, which Flask calls inside the context.
    """
    name = work.name
    if name:
        return name
    request = environ.get("werkzeug.request")
    if request is None:
        return ""
    rule = getattr(request, "url_rule", None)
    route = getattr(rule, "rule", None)
    return route if isinstance(route, str) else ""


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "QUERY"})


def _request_size(environ: Environ) -> int:
    value = environ.get("CONTENT_LENGTH") or ""
    return int(value) if isinstance(value, str) and value.isdigit() else -1


def _response_size(responder: _Responder) -> int:
    """Body bytes: the Content-Length the app set, else what was counted while streaming."""
    for key, value in responder.headers:
        if key.lower() == "content-length":
            return int(value) if value.isdigit() else -1
    return responder.size


def _request_headers(environ: Environ) -> list[tuple[str, str]]:
    out = [(k[5:].lower().replace("_", "-"), _text(v)) for k, v in environ.items()
           if k.startswith("HTTP_") and isinstance(v, str)]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        value = environ.get(key)
        if value:
            out.append((key.lower().replace("_", "-"), value))
    return out


class WsgiWork(Work):
    """A WSGI request (``scope`` is its environ): the route is known once the framework matched it."""

    __slots__ = ()

    def current_route(self) -> str:
        environ = self.scope
        return route_from_work(environ, self) if isinstance(environ, dict) else ""


class _EnvironGetter:
    """Propagator getter over the WSGI environ (``traceparent`` is ``HTTP_TRACEPARENT``)."""

    def get(self, carrier: Environ, key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Environ) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


_GETTER = _EnvironGetter()


def _traceresponse(work: Work) -> str:
    ctx = work.context
    if CONTEXT_IS_TUPLE:  # fields, not three property calls
        return f"00-{ctx[0]:032x}-{ctx[1]:016x}-{ctx[3]:02x}"
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def _text(value: str) -> str:
    """A WSGI environ string (latin-1 decoded bytes) as the UTF-8 text it was sent as."""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # not a PEP 3333 "bytes as latin-1" string: already text
        return value


class _Responder:
    """The ``start_response`` the app is given: notes the status and adds our headers."""

    __slots__ = ("headers", "server", "size", "start", "start_response", "status", "work")

    def __init__(self, server: WsgiServer, start_response: StartResponse, work: Work, start: float) -> None:
        self.server = server
        self.start_response = start_response
        self.work = work
        self.start = start
        self.status = 0
        #: the response's headers as the app gave them; body bytes counted while streamed (-1: not)
        self.headers: list[tuple[str, str]] = []
        self.size = -1

    @property
    def environ(self) -> Environ:
        environ: Environ = self.work.scope
        return environ

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        try:
            self.status = int(status[:3])
        except (TypeError, ValueError):
            self.status = 0
        self.headers = headers
        work = self.work
        server = self.server
        if not work.name:  # read while the framework's request is live (Flask clears it after)
            try:
                work.name = server.route_of(work.scope, work)
            except Exception as exc:
                guard.internal_error("wsgi.route", exc)
        # The common case (traceresponse only) is done inline; the rest takes the helper.
        if server.inline_traceresponse and work.trace_id:
            headers = [*headers, ("traceresponse", _traceresponse(work))]
        elif server.extra_headers:
            try:
                headers = server.response_headers(headers, self)
            except Exception as exc:
                guard.internal_error("wsgi.headers", exc)
        return self.start_response(status, headers, exc_info)


class _Body:
    """A body the app is still producing: the request's context is current while each chunk is made.

    The unit ends at the first of: the body is exhausted, producing a chunk raises, the
    server closes it.
    """

    __slots__ = ("body", "ctx", "finished", "iterator", "responder", "server", "work")

    def __init__(
        self, server: WsgiServer, body: Iterable[bytes], work: Work, ctx: Context, responder: _Responder
    ) -> None:
        self.server = server
        self.body = body
        self.work = work
        self.ctx = ctx
        self.responder = responder
        self.iterator: Iterator[bytes] | None = None
        self.finished = False

    def __iter__(self) -> _Body:
        self.iterator = iter(self.body)
        return self

    def __next__(self) -> bytes:
        iterator = self.iterator
        if iterator is None:
            iterator = self.iterator = iter(self.body)
        var = self.server.context_var
        ctx_token = var.set(self.ctx) if var is not None else context.attach(self.ctx)
        work_token = current_work.set(self.work)
        try:
            chunk = next(iterator)
            responder = self.responder
            responder.size = (responder.size if responder.size > 0 else 0) + len(chunk)
            return chunk
        except StopIteration:
            self._finish("")
            raise
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                mark_failed_request(exc, self.work.context)
                self._finish(type(exc).__qualname__, exc)
            raise
        finally:
            current_work.reset(work_token)
            if var is not None:
                var.reset(ctx_token)
            else:
                context.detach(ctx_token)

    def close(self) -> None:
        # In the request's context, as each chunk is made: the body's own clean-up may query,
        # and a request the server gave up on (the client left) ends here, its access-log line
        # and findings still naming its trace.
        var = self.server.context_var
        ctx_token = var.set(self.ctx) if var is not None else context.attach(self.ctx)
        work_token = current_work.set(self.work)
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            try:
                self._finish("")
            finally:
                current_work.reset(work_token)
                if var is not None:
                    var.reset(ctx_token)
                else:
                    context.detach(ctx_token)

    def _finish(self, error_type: str, exc: BaseException | None = None) -> None:
        if not self.finished:
            self.finished = True
            self.server.finish(self.work, self.responder, error_type, exc)


class _UntracedBody:
    """The body of an excluded request the app is still producing: each chunk is made, and the
    body closed, in the request's context (instrumentation suppressed)."""

    __slots__ = ("body", "ctx", "iterator")

    def __init__(self, body: Iterable[bytes], ctx: Context) -> None:
        self.body = body
        self.ctx = ctx
        self.iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _UntracedBody:
        return self

    def __next__(self) -> bytes:
        token = context.attach(self.ctx)
        try:
            iterator = self.iterator
            if iterator is None:
                iterator = self.iterator = iter(self.body)
            return next(iterator)
        finally:
            context.detach(token)

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            token = context.attach(self.ctx)
            try:
                close()
            finally:
                context.detach(token)


class WsgiServer:
    """The per-request work for WSGI apps of one framework (shared by its apps and threads).

    ``route_of(environ, work)`` gives the route template at the end of the request;
    ``work_type`` is the adapter's :class:`Work`; ``framework`` names what was instrumented;
    ``complete(environ, body)`` says whether a body the app returned is complete already (the
    framework knows: Flask's response says whether it streams).
    """

    def __init__(
        self,
        runtime: Runtime,
        route_of: RouteOf = route_from_work,
        work_type: type[Work] = WsgiWork,
        framework: str = "WSGI",
        complete: Complete = complete_body,
        query_in_url: bool = False,
    ) -> None:
        self.rt = runtime
        self.framework = framework
        self.complete = complete
        # OTEL_PYTHON_DJANGO_EXCLUDED_URLS / _FLASK_ as the official instrumentations read them
        self.core = core = ServerCore(runtime, framework.upper(), wsgi=True)
        self.route_of = route_of
        self.work_type = work_type
        self.stats_path = core.stats_path
        #: the stats and health paths' prefixes (() while both are off)
        self.admin_paths = core.admin_paths
        self.excluded = core.excluded
        #: the request's URL as the framework's official instrumentation matches excluded URLs
        #: against: ``scheme://host/script/path``, with the query string for Flask (its
        #: ``request.url``), without for Django (``build_absolute_uri("?")``)
        self.url_of: Callable[[Any], str] = (
            request_uri if query_in_url else functools.partial(request_uri, include_query=False)
        )
        self.spans = core.spans
        self.context_var = core.context_var
        self.browser = core.browser
        self.inline_traceresponse = (
            runtime.traceresponse and not runtime.server_timing and self.browser is None
        )
        self.extra_headers = runtime.traceresponse or runtime.server_timing or self.browser is not None
        self._attributes_at_start = self._start_attributes  # bound once, not per request
        self._capture_response = bool(core.capture.response_names)
        self.extras = core.extras if core.extras is not None and core.extras.identifies else None

    def handle(self, app: WSGIApp, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request through ``app``, measured."""
        path: str = environ.get("PATH_INFO", "")
        admin = self.admin_paths
        if admin and path.startswith(admin) and self.core.stats.owns(path):
            return self._stats(environ, start_response)
        if self.browser is not None and path == self.browser.path:
            answered = self._browser_script(environ, start_response)
            if answered is not None:
                return answered
        if self.excluded is not None and excludes(self.excluded, path, self.url_of, environ):
            return self._untraced(app, environ, start_response)
        outer = current_work.get()
        if outer is not None and outer.kind == "request":  # inside a unit already (nested apps)
            self._join(outer)
            return app(environ, start_response)
        rt = self.rt
        try:
            method = environ.get("REQUEST_METHOD") or "GET"
            if method not in KNOWN_METHODS:
                method = unknown_method(method)
            scheme = environ.get("wsgi.url_scheme") or "http"
            parent = None
            if "HTTP_TRACEPARENT" in environ or "HTTP_BAGGAGE" in environ:
                parent = propagate.extract(environ, getter=_GETTER)  # type: ignore[arg-type]
            span = self.spans.start(
                method if method != "_OTHER" else "HTTP",
                parent,
                SpanKind.SERVER,
                self._attributes_at_start,
                None,
                (environ, method),
            )
            if parent is not None and span.is_recording():
                tag_from_baggage(span, parent)
            work = self.work_type("request", "", span, rt.max_statements, method, environ)
            var = self.context_var
            if var is not None:  # context.attach(trace.set_span_in_context(span, parent)), inlined
                values = (parent if parent is not None else var.get()).copy()
                values[_SPAN_KEY] = span
                ctx = Context(values)
                ctx_token = var.set(ctx)
            else:
                ctx = trace.set_span_in_context(span, parent)
                ctx_token = context.attach(ctx)
            work_token = current_work.set(work)
            if self.extras is not None:  # opt-in user and tenant (OTEL_PERF_ENDUSER_FROM, ...)
                self.extras.identify(work, lambda name: environ.get("HTTP_" + name.upper().replace("-", "_")))
            active = rt.active
            active_key = (method, scheme)
            with _ACTIVE_LOCK:
                active[active_key] = active.get(active_key, 0) + 1
            start = perf_counter()
        except Exception as exc:
            guard.internal_error("wsgi.start", exc)
            return app(environ, start_response)

        responder = _Responder(self, start_response, work, start)
        try:
            body = app(environ, responder)
            if self.complete(environ, body):  # nothing of the app runs while it is sent
                if type(body) in _BUFFERED:  # its size, when no Content-Length says it
                    responder.size = sum(map(len, body))
                self.finish(work, responder, "")
                return body
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None and type(wrapper) is type and type(body) is wrapper:
                self.finish(work, responder, "")  # the server sends the file itself (sendfile)
                return body
            return _Body(self, body, work, ctx, responder)
        except BaseException as exc:
            mark_failed_request(exc, work.context)
            self.finish(work, responder, type(exc).__qualname__, exc)
            raise
        finally:
            current_work.reset(work_token)
            if var is None:
                context.detach(ctx_token)
            else:
                try:
                    var.reset(ctx_token)
                except Exception:  # what context.detach does: log it
                    context.detach(ctx_token)

    def _untraced(self, app: WSGIApp, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """A request to an excluded URL: no span, no unit, instrumentation suppressed while it runs.

        A body the app is still producing keeps that context for each chunk (:class:`_UntracedBody`).
        Whether it is complete is the generic test's to say: a framework's own (``complete``) may
        read what its adapter put on the unit (Flask's), and this request has none.  Inside a
        request an outer layer measures (nested apps) it is that request's, passed through.
        """
        outer = current_work.get()
        if outer is not None and outer.kind == "request":
            return app(environ, start_response)
        ctx = untraced()
        token = context.attach(ctx)
        try:
            body = app(environ, start_response)
            if complete_body(environ, body):
                return body
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None and type(wrapper) is type and type(body) is wrapper:
                return body  # the server sends the file itself (sendfile)
            return _UntracedBody(body, ctx)
        finally:
            context.detach(token)

    def finish(
        self, work: Work, responder: _Responder, error_type: str, exc: BaseException | None = None
    ) -> None:
        """End the request's unit: span attributes, RED metrics, findings (once per request)."""
        status = responder.status
        if error_type and not status:
            status = 500
        environ: Environ = work.scope
        scheme = environ.get("wsgi.url_scheme") or "http"
        try:
            seconds = perf_counter() - responder.start
            route = work.name or self.route_of(environ, work)
            protocol = environ.get("SERVER_PROTOCOL") or ""
            self.core.finish(
                work,
                route,
                status,
                error_type,
                seconds,
                scheme,
                protocol[5:] if protocol.upper().startswith("HTTP/") else "",
                _response_size(responder),
                _request_size(environ) if work.method in _BODY_METHODS else -1,
                exc,
                (lambda: responder.headers) if self._capture_response else None,
            )
        except Exception as exc_:
            guard.internal_error("wsgi.finish", exc_)
        finally:
            active = self.rt.active
            key = (work.method, scheme)
            with _ACTIVE_LOCK:
                active[key] = active.get(key, 1) - 1

    def _join(self, outer: Work) -> None:
        """A request of this framework inside a unit begun outside it: the unit becomes ours."""
        if self.work_type is not WsgiWork and type(outer) in (Work, WsgiWork):
            with contextlib.suppress(TypeError):  # same slots: the outer unit reports as ours
                outer.__class__ = self.work_type

    def _start_attributes(self, environ: Environ, method: str) -> dict[str, Any]:
        """The SERVER span's attributes known at start (built only when the span records)."""
        path = _text(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        query = environ.get("QUERY_STRING") or ""
        protocol = environ.get("SERVER_PROTOCOL") or ""
        server_port = str(environ.get("SERVER_PORT") or "")  # uvicorn's WSGI middleware sets an int
        server = (str(environ.get("SERVER_NAME") or ""), int(server_port) if server_port.isdigit() else 0)
        client = None
        remote = environ.get("REMOTE_ADDR")
        if remote:
            remote_port = environ.get("REMOTE_PORT") or ""
            client = (str(remote), int(remote_port) if str(remote_port).isdigit() else 0)
        return self.core.start_attributes(
            method,
            environ.get("REQUEST_METHOD") or "GET",
            path,
            _text(query) if query else "",
            environ.get("wsgi.url_scheme") or "http",
            protocol[5:] if protocol.upper().startswith("HTTP/") else "",
            environ.get("HTTP_HOST") or "",
            server if server[0] else None,
            client,
            _text(environ.get("HTTP_USER_AGENT") or ""),
            (lambda: _request_headers(environ)) if self.core.capture.request_names else None,
        )

    def response_headers(
        self, headers: list[tuple[str, str]], responder: _Responder
    ) -> list[tuple[str, str]]:
        """Every header of ours: traceresponse, Server-Timing, the browser's HTML Server-Timing."""
        rt = self.rt
        work = responder.work
        extra: list[tuple[str, str]] = []
        if rt.traceresponse and work.trace_id:
            extra.append(("traceresponse", _traceresponse(work)))
        if rt.server_timing:
            extra.append(("Server-Timing", server_timing(work, responder.start).decode("ascii")))
        if self.browser is not None and work.trace_id and _is_html(headers):
            from otel_perf._export.browser import server_timing as browser_timing

            route = self.route_of(responder.environ, work)
            extra.append(("Server-Timing", browser_timing(work.context, route).decode("ascii")))
        return [*headers, *extra] if extra else headers

    def _stats(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        headers = [
            (b"authorization", str(environ.get("HTTP_AUTHORIZATION", "")).encode("latin-1", "replace"))
        ]
        status, response_headers, body = self.core.stats.respond(
            environ.get("REQUEST_METHOD") or "GET",
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING") or "",
            headers,
        )
        start_response(
            _status_line(status), [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response_headers]
        )
        return [body]

    def _browser_script(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes] | None:
        response = self.browser.respond(
            environ.get("REQUEST_METHOD") or "GET",
            environ.get("PATH_INFO", ""),
            str(environ.get("HTTP_IF_NONE_MATCH", "")).encode("latin-1", "replace"),
            str(environ.get("HTTP_ACCEPT_ENCODING", "")).encode("latin-1", "replace"),
        )
        if response is None:
            return None
        start_response(
            _status_line(response.status),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers],
        )
        return [response.body]


def _status_line(status: int) -> str:
    return f"{status} {_REASONS.get(status, 'Unknown')}"


def _is_html(headers: Iterable[tuple[str, str]]) -> bool:
    for key, value in headers:
        if key.lower() == "content-type":
            return value[:9].lower() == "text/html"
    return False


class PerfWSGIMiddleware:
    """A WSGI app measured by :class:`WsgiServer` (generic apps; frameworks patch their own call)."""

    def __init__(
        self,
        app: WSGIApp,
        runtime: Runtime,
        route_of: RouteOf = route_from_work,
        work_type: type[Work] = WsgiWork,
        framework: str = "WSGI",
    ) -> None:
        self.app = app
        self.server = WsgiServer(runtime, route_of, work_type, framework)
        self.framework = framework
        runtime.apps.add(framework)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self.server.handle(self.app, environ, start_response)


# --- the ``wsgi`` row: generic WSGI apps -------------------------------------------------------

_state: dict[str, Any] = {}


def install(runtime: Runtime, _module: Any = None) -> None:
    """Arm generic wrapping (the servers' adapters call :func:`wrap_generic` with their app)."""
    _state["runtime"] = runtime


def uninstall() -> None:
    _state.pop("runtime", None)


def wrap_generic(app: Any, server: str) -> Any:
    """``app`` as the WSGI server ``server`` should call it: measured, unless a framework adapter does it.

    Returns ``app`` itself when it is (or wraps) an app of a framework with an adapter of its
    own (Django, Flask), when it is wrapped already, or when the ``wsgi`` row is off.
    """
    runtime: Runtime | None = _state.get("runtime")
    if runtime is None or app is None:
        return app
    try:
        found = apps.framework_of(app)
        if found:
            return app
        wrapped = PerfWSGIMiddleware(app, runtime)
        apps.announce(
            runtime,
            "WSGI",
            f"{server} serves {apps.describe(app)}, a WSGI app of no framework we instrument by route: "
            "its requests are measured by method (SERVER spans, http.server.request.duration, "
            "traceresponse, findings, stats endpoint) with http.route unset. Django and Flask apps "
            "get their route templates.",
            warning=True,
        )
        return wrapped
    except Exception as exc:
        guard.internal_error("wsgi.wrap", exc)
        return app


__all__ = [
    "PerfWSGIMiddleware",
    "RouteOf",
    "WsgiServer",
    "WsgiWork",
    "complete_body",
    "install",
    "route_from_work",
    "uninstall",
    "wrap_generic",
]
