"""The app a server loaded: which framework it is, whether an adapter of ours measures it.

Framework adapters measure their apps from inside the framework (Starlette's middleware
stack, Django's handlers, Flask's ``wsgi_app``), so they know routes.  Servers (gunicorn's
workers, uvicorn's config) see only the app object they will call; for an app of no
framework we know they wrap it generically (requests measured by method, ``http.route``
unset).  This module tells the two apart and says at startup, once per process and
framework, what was found and what it gets.

:func:`framework_of` recognises the frameworks by class (:data:`KNOWN`, whether their row is
on or off: an app of a framework whose row is switched off is left alone, not wrapped
generically), through the usual attributes middleware keep the app they wrap in.  A
generically wrapped ASGI app that turns out to hold a framework app only once it runs (a
Starlette app built on the first lifespan or request) stands down: see
:class:`GenericAsgiMiddleware`.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime
    from otel_perf._integrations.asgi import PerfMiddleware, Receive, Scope, Send

logger = logging.getLogger("otel_perf")

#: (module, class) -> framework: apps of these classes are measured by their framework's
#: adapter (or deliberately by nothing, when its row is switched off).
KNOWN: dict[tuple[str, str], str] = {
    ("starlette.applications", "Starlette"): "FastAPI/Starlette",
    ("django.core.handlers.wsgi", "WSGIHandler"): "Django",
    ("django.core.handlers.asgi", "ASGIHandler"): "Django",
    ("flask.app", "Flask"): "Flask",
}
#: Where middleware keep the app they wrap (WSGI and ASGI conventions, Django's static files
#: handler, werkzeug's ProxyFix, WhiteNoise, python-socketio, a2wsgi).  A dispatcher's other
#: mounts are not followed: its default app decides, and a framework app mounted beside it
#: joins the generic unit of its requests (see :mod:`otel_perf._integrations.wsgi`).
WRAPPED_APP_ATTRIBUTES = ("app", "application", "wsgi_app", "asgi_app", "other_asgi_app", "_app", "wrapped")
_MAX_DEPTH = 8
#: Our own middleware classes name their framework in this attribute.
_FRAMEWORK_ATTRIBUTE = "framework"
_announced: set[tuple[int, str]] = set()


def _known_classes() -> list[tuple[type, str]]:
    found = []
    for (module_name, class_name), framework in KNOWN.items():
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type):
            found.append((cls, framework))
    return found


def framework_of(app: Any) -> str:
    """The framework measuring ``app`` (or an app it wraps): "" when none does."""
    from otel_perf._integrations.asgi import PerfMiddleware
    from otel_perf._integrations.wsgi import PerfWSGIMiddleware

    known = _known_classes()
    seen: set[int] = set()
    current = [app]
    for _ in range(_MAX_DEPTH):
        following = []
        for candidate in current:
            if candidate is None or id(candidate) in seen:
                continue
            seen.add(id(candidate))
            if isinstance(candidate, (PerfMiddleware, PerfWSGIMiddleware)):
                return str(getattr(candidate, _FRAMEWORK_ATTRIBUTE, "") or "ours")
            for cls, framework in known:
                if isinstance(candidate, cls):
                    return framework
            bound = getattr(candidate, "__self__", None)  # a bound method: app.wsgi_app
            if bound is not None:
                following.append(bound)
            inner = getattr(candidate, "__dict__", None)
            if isinstance(inner, dict):  # not a dispatcher's other mounts: its default app decides
                following.extend(inner[name] for name in WRAPPED_APP_ATTRIBUTES if name in inner)
        if not following:
            break
        current = following
    return ""


def describe(app: Any) -> str:
    """``module:Name`` of an app object (its class, or the function itself)."""
    target = app if callable(app) and hasattr(app, "__qualname__") else type(app)
    module = getattr(target, "__module__", "") or "?"
    return f"{module}:{getattr(target, '__qualname__', type(app).__name__)}"


def announce(runtime: Runtime, framework: str, text: str, *, warning: bool = False) -> None:
    """Say once per process and framework what was found and what it gets (startup log)."""
    runtime.apps.add(framework)
    key = (os.getpid(), framework)
    if key in _announced:
        return
    _announced.add(key)
    logger.log(logging.WARNING if warning else logging.INFO, "otel-perf: %s", text)


#: Set while a generic ASGI wrapper calls its app: a framework middleware built then is inside it.
_GENERIC: ContextVar[Any] = ContextVar("otel_perf_generic_asgi", default=None)


def framework_middleware_built() -> None:
    """Called by a framework adapter's ASGI middleware when it is built (once per app).

    Built while a generic wrapper runs its app (lifespan or a first request): the framework
    app sits inside that wrapper, which then stands down so no request is measured twice.
    """
    generic = _GENERIC.get()
    if generic is not None:
        generic.stand_down()


def generic_asgi(app: Any, runtime: Runtime, server: str) -> Any:
    """``app`` measured by method unless a framework adapter measures it (or wraps it)."""
    found = framework_of(app)
    if found:
        return app
    middleware = GenericAsgiMiddleware(app, runtime)
    announce(
        runtime,
        "ASGI",
        f"{server} serves {describe(app)}, an ASGI app of no framework we instrument by route: "
        "its requests are measured by method (SERVER spans, http.server.request.duration, "
        "traceresponse, findings, stats endpoint) with http.route unset. FastAPI/Starlette and "
        "Django apps get their route templates.",
        warning=True,
    )
    return middleware


class GenericAsgiMiddleware:
    """:class:`~otel_perf._integrations.asgi.PerfMiddleware` for an app of no known framework.

    Stands down (passes every call through) once a framework middleware of ours is built
    inside it.  Starlette builds its stack on the lifespan startup, before any request, so
    nothing is measured twice; with the lifespan off it is built on the first request, which
    is then measured twice (once here by method, once by the framework's middleware).
    """

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.framework = "ASGI"
        from otel_perf._integrations.asgi import PerfMiddleware

        self.measured: PerfMiddleware = PerfMiddleware(app, runtime, framework="ASGI")
        self.standing_down = False

    def stand_down(self) -> None:
        if not self.standing_down:
            self.standing_down = True
            logger.info(
                "otel-perf: %s holds a framework app we instrument; the generic ASGI measurement of it "
                "stands down",
                describe(self.app),
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.standing_down:
            await self.app(scope, receive, send)
            return
        token = _GENERIC.set(self)
        try:
            await self.measured(scope, receive, send)
        finally:
            _GENERIC.reset(token)
