"""Flask: every app's requests by route template, through the WSGI request handler.

``Flask.wsgi_app`` (the method Flask's own ``__call__`` calls, and the one its docs tell
middleware to wrap: ``app.wsgi_app = ProxyFix(app.wsgi_app)`` keeps ours inside theirs,
so we see the fixed environ) runs through :class:`~otel_perf._integrations.wsgi.WsgiServer`:
SERVER span, ``traceresponse``, stats endpoint, RED metrics and findings.  The route is the
matched rule of the request werkzeug keeps in the environ (``/orders/<int:order_id>``, the
official instrumentation's ``http.route``; blueprint prefixes included), read when the
request ends; a request no rule matched (404, 405) keeps the unmatched value.  SQL run with
Flask-SQLAlchemy goes through our SQLAlchemy adapter and lands in the request's unit.  An
exception a view raises is recorded on the SERVER span from ``got_request_exception``.
``flask run --debug``'s reloader parent only restarts its child: no exit report there.
"""

from __future__ import annotations

from importlib import metadata
from types import MethodType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.server import supervising
from otel_perf._core.work import current_work
from otel_perf._integrations import apps
from otel_perf._integrations.wsgi import WsgiServer, route_from_work

_patches = Patches("flask")
_state: dict[str, Any] = {}

WHAT = (
    "SERVER spans and http.server.request.duration by route template, traceresponse, the stats "
    "endpoint, SQL (SQLAlchemy / Flask-SQLAlchemy) and its findings per request"
)


def install(runtime: Runtime, module: Any) -> None:
    name = module.__name__
    if name == "flask.app":
        server = WsgiServer(runtime, framework="Flask", complete=_not_streamed, query_in_url=True)
        _patches.wrap(module.Flask, "wsgi_app", lambda original: _wsgi_app(server, original))
        _patches.wrap(module.Flask, "process_response", _process_response)
        _patches.wrap(module.Flask, "__init__", lambda original: _made(runtime, original))
    elif name == "flask.signals":
        _state["runtime"] = runtime
        module.got_request_exception.connect(_got_request_exception, weak=False)
        _state["exceptions"] = module.got_request_exception
    elif name == "werkzeug._reloader":  # private module: only when it still has this shape
        loop = getattr(module, "ReloaderLoop", None)
        if callable(getattr(loop, "restart_with_reloader", None)):
            _patches.wrap(loop, "restart_with_reloader", lambda original: supervising(runtime, original))


def uninstall() -> None:
    _patches.restore()
    signal = _state.pop("exceptions", None)
    if signal is not None:
        signal.disconnect(_got_request_exception)
    _state.pop("runtime", None)


def _version() -> str:
    try:
        return " " + metadata.version("flask")
    except metadata.PackageNotFoundError:
        return ""


def _made(runtime: Runtime, original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            apps.announce(runtime, "Flask", f"Flask{_version()} app {self.name!r} found: {WHAT}.")
        except Exception as exc:
            guard.internal_error("flask.init", exc)

    return __init__


def _wsgi_app(server: WsgiServer, original: Any) -> Any:
    handle = server.handle

    def wsgi_app(self: Any, environ: Any, start_response: Any) -> Any:
        return handle(MethodType(original, self), environ, start_response)

    return wsgi_app


#: Environ key set while a request's response streams (its body runs app code as it is sent).
STREAMED = "otel_perf.streamed"


def _not_streamed(environ: Any, body: Any) -> bool:
    """Flask's body is complete when the app returns unless its response streams."""
    return STREAMED not in environ


def _process_response(original: Any) -> Any:
    def process_response(self: Any, response: Any) -> Any:
        response = original(self, response)
        if response.is_streamed:  # a generator or a file: app code may run while it is sent
            work = current_work.get()
            if work is not None and isinstance(work.scope, dict):
                work.scope[STREAMED] = True
        return response

    return process_response


def _got_request_exception(sender: Any = None, exception: BaseException | None = None, **kwargs: Any) -> None:
    """A view raised: the exception goes on the request's SERVER span, the route on its unit.

    Flask answers 500, or (debug, testing) lets the exception escape before ``start_response``,
    where the route would otherwise be read.
    """
    try:
        work = current_work.get()
        if work is None or work.kind != "request" or exception is None:
            return
        if not work.name and isinstance(work.scope, dict):  # the route, while the request is live
            work.name = route_from_work(work.scope, work)
        span = work.span
        runtime: Runtime | None = _state.get("runtime")
        if _propagates(sender):  # it escapes the app next: the request handler records it there
            return
        if span.is_recording() and runtime is not None:  # its text scrubbed, as every exception event
            span.add_event("exception", runtime.scrubber.exception(exception))
    except Exception as error:
        guard.internal_error("flask.exception", error)


def _propagates(app: Any) -> bool:
    """Whether Flask re-raises an exception after ``got_request_exception`` (its ``handle_exception``:
    ``PROPAGATE_EXCEPTIONS``, else debug or testing) instead of answering 500."""
    config = getattr(app, "config", None)
    propagate = config.get("PROPAGATE_EXCEPTIONS") if isinstance(config, dict) else None
    if propagate is None:
        propagate = getattr(app, "testing", False) or getattr(app, "debug", False)
    return bool(propagate)
