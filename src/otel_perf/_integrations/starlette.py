"""Putting :class:`PerfMiddleware` into every Starlette/FastAPI app, with no code change.

``Starlette.build_middleware_stack`` is wrapped so the built stack (which includes
Starlette's ``ServerErrorMiddleware``, so unhandled exceptions are seen as 500s) is
wrapped once more by our middleware.  FastAPI releases that ship their own OpenTelemetry
support (``fastapi.telemetry``) would add three more spans per request; we switch that off
for every app we instrument so there are never duplicate spans.
Idempotent and reversible: :func:`uninstrument` restores the originals.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from otel_perf._core.patching import Patches
from otel_perf._core.probes import forced_off
from otel_perf._core.runtime import Runtime
from otel_perf._core.work import Work
from otel_perf._integrations.asgi import PerfMiddleware, Scope

logger = logging.getLogger("otel_perf")
_MARK = "_otel_perf_original"
_state: dict[str, Any] = {}
_patches = Patches("starlette")


#: Where FastAPI keeps the effective (prefixed) route of a router it includes lazily:
#: ``scope[key][context_key]``, an object whose ``original_route`` is ``scope["route"]``.
#: Found on the installed FastAPI (see :func:`_find_effective_route_keys`); None when it has
#: no lazy inclusion (there ``scope["route"]`` carries the prefix already).
_EFFECTIVE_ROUTE: tuple[str, str] | None = None


def _find_effective_route_keys(routing: Any) -> tuple[str, str] | None:
    """FastAPI 0.165+ includes routers lazily: ``scope["route"]`` is the inner route, without
    the prefixes, and the prefixed path is kept in FastAPI's own scope entry.  Its key names
    are private: probed here, and without them (an older FastAPI, or one that moved them)
    the route is read from ``scope["route"]`` as before.
    """
    scope_key = getattr(routing, "_FASTAPI_SCOPE_KEY", None)
    context_key = getattr(routing, "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY", None)
    if isinstance(scope_key, str) and isinstance(context_key, str):
        return scope_key, context_key
    if hasattr(routing, "_IncludedRouter"):  # lazy inclusion without the keys we know
        logger.warning(
            "otel-perf: this FastAPI includes routers lazily but keeps the prefixed route where "
            "we do not look; routes of included routers are reported without their prefix."
        )
    return None


def route_template(scope: Scope, work: Work | None = None) -> str:
    """The matched route's template (``/api/v1/items/{item_id}``), with router and mount prefixes.

    Also the middleware's ``route_of`` (it passes the request's unit, not needed here).
    """
    route = scope.get("route")
    if route is None:
        return _matched_route(scope)
    path = None
    if _EFFECTIVE_ROUTE is not None:  # the prefixed path FastAPI keeps for a lazily included router's route
        fastapi_scope = scope.get(_EFFECTIVE_ROUTE[0])
        effective = fastapi_scope.get(_EFFECTIVE_ROUTE[1]) if fastapi_scope else None
        if effective is not None and getattr(effective, "original_route", None) is route:
            inner = getattr(effective, "starlette_route", None)
            path = getattr(inner, "path_format", None) or getattr(effective, "path_format", None)
    if path is None:
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return ""
    root = scope.get("root_path", "")
    app_root = scope.get("app_root_path", root)
    if root and isinstance(root, str) and isinstance(app_root, str) and len(root) > len(app_root):
        path = root[len(app_root) :] + path
    return path


def _matched_route(scope: Scope) -> str:
    """The template of the route that matches ``scope``, found by asking the app's routes.

    Starlette sets ``scope["route"]`` from 1.8 on (FastAPI's routes always do): a plain
    Starlette app on an older release, and a request no route matched, end up here.
    """
    routes = getattr(scope.get("router"), "routes", None)
    if not routes:
        return ""
    try:
        from starlette.routing import Match, Mount
    except ImportError:
        return ""
    prefix = ""
    for _ in range(8):  # mounts inside mounts, bounded
        for route in routes:
            try:
                match, child = route.matches(scope)
            except Exception:  # a route that cannot judge this scope
                continue
            if match != Match.FULL:
                continue
            if isinstance(route, Mount) and getattr(route, "routes", None):
                prefix += route.path
                scope = {**scope, **child}
                routes = route.routes
                break
            path = getattr(route, "path_format", None) or getattr(route, "path", None)
            return prefix + path if isinstance(path, str) else ""
        else:
            return ""
    return ""


class StarletteWork(Work):
    """A Starlette request: its route is in the scope as soon as routing matched."""

    __slots__ = ()

    def current_route(self) -> str:
        scope = self.scope
        return route_template(scope) if isinstance(scope, dict) else ""


def install(runtime: Runtime, applications: Any) -> None:
    """Patch Starlette (``starlette.applications`` was imported) or FastAPI (``fastapi.applications``).

    When the app's code calls the official FastAPI/Starlette instrumentor itself
    (``FastAPIInstrumentor.instrument_app(app)``, very common), that call is let through as a
    no-op, said once: our middleware is in every app already, and two would mean two SERVER
    spans and two metric streams per request.
    """
    if applications.__name__ in _OFFICIAL:
        _stand_in_for_official(applications, _OFFICIAL[applications.__name__])
        return
    if applications.__name__ == "fastapi.applications":
        global _EFFECTIVE_ROUTE
        _EFFECTIVE_ROUTE = _find_effective_route_keys(sys.modules.get("fastapi.routing"))
        _patch_fastapi_init(applications.FastAPI)
        # FastAPI releases that override build_middleware_stack need their own patch.
        if "build_middleware_stack" in vars(applications.FastAPI):
            _patch_stack(applications.FastAPI, runtime)
    else:
        _patch_stack(applications.Starlette, runtime)


#: official instrumentation module -> its instrumentor class
_OFFICIAL = {
    "opentelemetry.instrumentation.fastapi": "FastAPIInstrumentor",
    "opentelemetry.instrumentation.starlette": "StarletteInstrumentor",
}


def _stand_in_for_official(module: Any, name: str) -> None:
    instrumentor = getattr(module, name, None)
    if instrumentor is None:
        return

    def skipped(what: str) -> Any:
        def no_op(*args: Any, **kwargs: Any) -> None:
            said: set[str] = _state.setdefault("said", set())
            if name not in said:
                said.add(name)
                logger.info(
                    "otel-perf: %s.%s skipped: otel-perf-instrument instruments every FastAPI/Starlette "
                    "app already (one SERVER span per request). Set "
                    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi to use the official one instead.",
                    name,
                    what,
                )

        return no_op

    if "instrument_app" in vars(instrumentor):
        no_op = staticmethod(skipped("instrument_app"))
        _patches.wrap(instrumentor, "instrument_app", lambda original: no_op)
    _patches.wrap(instrumentor, "_instrument", lambda original: skipped("instrument"))


def _patch_fastapi_init(cls: Any) -> None:
    if getattr(cls.__init__, _MARK, None) is not None:
        return
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _disable_fastapi_native_telemetry(self)

    setattr(__init__, _MARK, original)
    cls.__init__ = __init__
    _state["fastapi"] = (cls, original)


def _excluded_env(app: Any) -> str:
    """Which ``OTEL_PYTHON_<X>_EXCLUDED_URLS`` the official instrumentation of this app reads."""
    return "FASTAPI" if any(c.__name__ == "FastAPI" for c in type(app).__mro__) else "STARLETTE"


def _patch_stack(cls: Any, runtime: Runtime) -> None:
    if getattr(vars(cls).get("build_middleware_stack"), _MARK, None) is not None:
        return
    original = cls.build_middleware_stack

    def build_middleware_stack(self: Any) -> Any:
        stack = original(self)
        if isinstance(stack, PerfMiddleware):  # a subclass's stack built through ours already
            return stack
        _disable_fastapi_native_telemetry(self)
        return PerfMiddleware(
            stack, runtime, route_template, StarletteWork, "FastAPI/Starlette", _excluded_env(self)
        )

    setattr(build_middleware_stack, _MARK, original)
    cls.build_middleware_stack = build_middleware_stack
    _state.setdefault("stacks", []).append((cls, original))


def _disable_fastapi_native_telemetry(app: Any) -> None:
    config = getattr(app, "_telemetry", None)
    native = getattr(app, "_native_telemetry", None)
    if not isinstance(config, dict) or native is None:
        return
    changed = False
    for signal in ("tracing", "metrics", "logs"):
        if config.get(signal):
            config[signal] = False
            changed = True
    if changed:
        try:
            from fastapi.telemetry._asgi import NativeTelemetry

            app._native_telemetry = NativeTelemetry(config)  # type: ignore[arg-type]
        except Exception:  # an unknown FastAPI layout: the config flags are off already
            logger.debug("could not rebuild FastAPI native telemetry", exc_info=True)
            return
    _skip_telemetry_lookups()


def _skip_telemetry_lookups() -> None:
    """Make FastAPI's per-request telemetry lookups return at once.

    FastAPI's routing asks, four times per request (``get_telemetry_data`` once, then
    ``_operation`` for dependencies, endpoint and serialization), whether the current
    OpenTelemetry context holds its native request telemetry.  With native telemetry off in
    every app (we switch it off for each one, above) the answer is always no: nothing puts
    that telemetry into the context.  The lookups cost the app 140-170 bytecodes per
    request (``bench/bytecodes.py``).  Replaced only where the module's name is bound to
    FastAPI's own function; undone by :func:`uninstrument`.  The one app this could touch
    is one built before we loaded and never rebuilt (no launcher, a late ``instrument()``):
    its native request span stays, its operation spans go.
    """
    if "lookups" in _state or forced_off("fastapi-telemetry-lookups"):
        return
    try:
        from fastapi.telemetry import _api
    except ImportError:  # a FastAPI without native telemetry: nothing to skip
        return
    nothing = getattr(_api, "_NO_OPERATION", None)
    if nothing is None:
        return

    def _operation(*, name: str, function: Any = None) -> Any:
        return nothing

    def get_telemetry_data(context: Any = None) -> None:
        return None

    replaced = []
    for module_name, name, replacement in (
        ("fastapi.routing", "_operation", _operation),
        ("fastapi.background", "_operation", _operation),
        ("fastapi.routing", "get_telemetry_data", get_telemetry_data),
    ):
        module = sys.modules.get(module_name)
        original = getattr(_api, name, None)
        if module is not None and original is not None and getattr(module, name, None) is original:
            vars(module)[name] = replacement
            replaced.append((module, name, original))
    _state["lookups"] = replaced


def uninstall() -> None:
    _patches.restore()
    global _EFFECTIVE_ROUTE
    _EFFECTIVE_ROUTE = None
    for module, name, function in _state.pop("lookups", []):
        vars(module)[name] = function
    for cls, original in _state.pop("stacks", []):
        cls.build_middleware_stack = original
    entry = _state.pop("fastapi", None)
    if entry is not None:
        cls, original = entry
        cls.__init__ = original
