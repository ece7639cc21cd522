"""Django: requests (WSGI and ASGI) by URL pattern, ORM statements, cache reads, its logging.

* Requests: ``WSGIHandler.__call__`` runs through :class:`~otel_perf._integrations.wsgi.WsgiServer`
  and ``ASGIHandler.__call__`` through :class:`~otel_perf._integrations.asgi.PerfMiddleware`
  (one per handler), so every handler, however it was made (``get_wsgi_application()``,
  ``runserver``, a subclass), is measured outermost, stats endpoint included, before
  Django's URL resolver.  ``BaseHandler.resolve_request`` puts the matched pattern on the
  request's unit (``polls/<int:question_id>/``, as the official instrumentation names it,
  include() prefixes joined; the empty root pattern is reported as ``/``); a request no
  pattern matched keeps the unmatched value.  An exception a view raises (Django turns it
  into a 500) is recorded on the SERVER span from ``got_request_exception``.
* ORM: every database connection gets our wrapper in its ``execute_wrappers`` (Django's
  public hook, ``connection.execute_wrapper()``) when it connects (``connection_created``):
  each statement is timed and handed to :class:`~otel_perf._core.statements.Statements`.  It
  counts once: Django connects as the outer layer, so the driver adapters leave its
  connections unwrapped (or let go of them), and over one that still records, the wrapper sets
  the statement core's outer-layer flag (:func:`~otel_perf._core.statements.outer_layer`) so
  the adapter passes it through.  N+1 findings in a Django request recommend
  ``select_related`` / ``prefetch_related``.
* Cache: each backend ``caches[alias]`` creates gets ``get``/``get_many`` that count hits and
  misses by alias into ``perf.cache.operations`` (the hit-ratio metric Redis feeds).  A
  backend method that calls another one (``get`` through ``get_many``) counts once.
* Logging: after ``django.setup()`` configures logging, Django's default console handler
  on the ``django`` logger (DEBUG only) is removed while our stderr handler is on the root,
  where those records arrive anyway (each line written once, as JSON with trace ids); our
  OTLP handler goes back on the root if a ``LOGGING`` setting replaced the root's handlers;
  our own logger is enabled again if ``disable_existing_loggers`` switched it off.
* ``runserver``'s autoreloader parent only restarts its child: no exit report there.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from time import perf_counter
from types import MethodType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.caches import COUNTED_ABOVE, Caches
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.statements import (
    OUTER,
    DbTarget,
    Statements,
    batch_size,
    connecting_for_outer_layer,
    db_system,
    disown,
    outer_connection,
)
from otel_perf._core.work import Work, current_work
from otel_perf._integrations import apps
from otel_perf._integrations.wsgi import WsgiServer

logger = logging.getLogger("otel_perf")
_patches = Patches("django")
_state: dict[str, Any] = {}
#: The empty root pattern (``path("", ...)``) is reported as this route.
ROOT_ROUTE = "/"
#: The per-handler ASGI middleware lives in the handler's ``__dict__`` under this key.
_ASGI_MIDDLEWARE = "_otel_perf_asgi"
#: Inside a ``get_or_set``: its first read, (id of the backend, key): that read counts, the
#: backend's read of the key again after its ``add`` does not.
_GET_OR_SET_READS: ContextVar[list[Any] | None] = ContextVar("otel_perf_django_get_or_set", default=None)
_MISSING = object()


class DjangoWork(Work):
    """A Django request: the route is put on it by the URL resolver while it runs."""

    __slots__ = ()
    framework = "django"


WHAT = (
    "SERVER spans and http.server.request.duration by URL pattern, traceresponse, the stats "
    "endpoint, ORM statements (spans, db.client.operation.duration, slow-query and N+1 findings "
    "per request), cache hits and misses by alias"
)


def _version() -> str:
    django = sys.modules.get("django")
    get_version = getattr(django, "get_version", None)
    return f" {get_version()}" if callable(get_version) else ""


def install(runtime: Runtime, module: Any) -> None:
    name = module.__name__
    if name == "django.core.handlers.base":
        _patches.wrap(module.BaseHandler, "resolve_request", _resolve_request)
    elif name == "django.core.handlers.wsgi":
        server = WsgiServer(runtime, work_type=DjangoWork, framework="Django", complete=_complete)
        _patches.wrap(module.WSGIHandler, "__call__", lambda original: _wsgi_call(server, original))
        _patches.wrap(module.WSGIHandler, "__init__", lambda original: _made(runtime, original, "WSGI"))
    elif name == "django.core.handlers.asgi":
        _patches.wrap(module.ASGIHandler, "__call__", lambda original: _asgi_call(runtime, original))
        _patches.wrap(module.ASGIHandler, "__init__", lambda original: _made(runtime, original, "ASGI"))
    elif name == "django.core.signals":
        _state["runtime"] = runtime
        module.got_request_exception.connect(_got_request_exception, weak=False, dispatch_uid=_UID)
        _state["exceptions"] = module.got_request_exception
    elif name == "django.db.backends.base.base":
        # Django opens driver connections as the outer layer: the driver adapters (sqlite3,
        # psycopg, ...) leave them unwrapped, so a statement is recorded once, by the execute
        # wrapper, and the connection set-up statements Django runs itself (PRAGMA, SET ...) by no one.
        _patches.wrap(module.BaseDatabaseWrapper, "connect", _connect_as_outer_layer)
    elif name == "django.db.backends.signals":
        _state["orm"] = orm = _Orm(runtime)
        module.connection_created.connect(orm.connection_created, weak=False, dispatch_uid=_UID)
        _state["connection_created"] = module.connection_created
    elif name == "django.core.cache":
        create = getattr(module.CacheHandler, "create_connection", None)
        if create is None:
            logger.warning(
                "otel-perf: this Django's cache handler has no create_connection(); cache hits and "
                "misses are not recorded (everything else is)."
            )
            return
        caches = Caches(runtime)
        _patches.wrap(
            module.CacheHandler, "create_connection", lambda original: _create_cache(caches, original)
        )
    elif name == "django.utils.log":
        _patches.wrap(module, "configure_logging", _configure_logging)
    elif name == "django.utils.autoreload" and callable(getattr(module, "restart_with_reloader", None)):
        _patches.wrap(module, "restart_with_reloader", lambda original: _supervising(runtime, original))


_UID = "otel_perf"


def _connect_as_outer_layer(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        with outer_connection():
            return original(self, *args, **kwargs)

    return connect


def uninstall() -> None:
    _patches.restore()
    signal = _state.pop("exceptions", None)
    if signal is not None:
        signal.disconnect(dispatch_uid=_UID)
    _state.pop("runtime", None)
    signal = _state.pop("connection_created", None)
    if signal is not None:
        signal.disconnect(dispatch_uid=_UID)
    orm = _state.pop("orm", None)
    if orm is not None:
        orm.unhook()


# --- requests ---------------------------------------------------------------------------------


def _made(runtime: Runtime, original: Any, interface: str) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        apps.announce(runtime, "Django", f"Django{_version()} app found ({interface} handler): {WHAT}.")

    return __init__


def _wsgi_call(server: WsgiServer, original: Any) -> Any:
    handle = server.handle

    def __call__(self: Any, environ: Any, start_response: Any) -> Any:
        return handle(MethodType(original, self), environ, start_response)

    return __call__


def _asgi_call(runtime: Runtime, original: Any) -> Any:
    from otel_perf._integrations.asgi import PerfMiddleware, route_from_work

    async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
        middleware = self.__dict__.get(_ASGI_MIDDLEWARE)
        if middleware is None:
            middleware = PerfMiddleware(
                MethodType(original, self), runtime, route_from_work, DjangoWork, "Django", "DJANGO"
            )
            self.__dict__[_ASGI_MIDDLEWARE] = middleware
        await middleware(scope, receive, send)

    return __call__


def _resolve_request(original: Any) -> Any:
    get_work = current_work.get

    def resolve_request(self: Any, request: Any) -> Any:
        match = original(self, request)
        work = get_work()
        if work is not None and work.kind == "request":
            work.name = match.route or ROOT_ROUTE  # ResolverMatch.route: the pattern, include()s joined
        return match

    return resolve_request


def _complete(environ: Any, body: Any) -> bool:
    """Django's body is complete when the app returns unless the response streams."""
    return getattr(body, "streaming", None) is False


def _got_request_exception(sender: Any = None, **kwargs: Any) -> None:
    """A view raised (Django answers 500): the exception goes on the request's SERVER span."""
    try:
        work = current_work.get()
        exc = sys.exc_info()[1]
        if work is None or work.kind != "request" or exc is None:
            return
        if not work.name:  # a middleware failed before Django resolved the URL
            work.name = _route_before_resolving(kwargs.get("request"))
        span = work.span
        runtime: Runtime | None = _state.get("runtime")
        if _propagates():  # it escapes the handler (the signal fires once per middleware on its
            return  # way out): the request handler records it once, there
        if span.is_recording() and runtime is not None:  # its text scrubbed, as every exception event
            span.add_event("exception", runtime.scrubber.exception(exc))
    except Exception as error:
        guard.internal_error("django.exception", error)


def _route_before_resolving(request: Any) -> str:
    """The pattern the path of a request that failed before URL resolution matches ("": none).

    The official instrumentation resolves the path in its own middleware, before the app's,
    so such a request keeps its route there too.  Only failed requests pay for this.
    """
    urls = sys.modules.get("django.urls")  # loaded: a request runs
    if request is None or urls is None:
        return ""
    try:
        match = urls.get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
    except Exception:  # Resolver404, or a urlconf that fails to load: it stays unmatched
        return ""
    return str(match.route or ROOT_ROUTE)


def _propagates() -> bool:
    """``DEBUG_PROPAGATE_EXCEPTIONS``: Django re-raises a view's exception instead of answering 500."""
    settings = getattr(sys.modules.get("django.conf"), "settings", None)  # loaded: a request runs
    return bool(getattr(settings, "DEBUG_PROPAGATE_EXCEPTIONS", False))


def _supervising(runtime: Runtime, original: Callable[..., Any]) -> Callable[..., Any]:
    def restart_with_reloader(*args: Any, **kwargs: Any) -> Any:
        if runtime.pipeline is not None:
            runtime.pipeline.supervisor = True
        return original(*args, **kwargs)

    return restart_with_reloader


# --- ORM --------------------------------------------------------------------------------------


class _Orm:
    """One execute wrapper per database alias, put on each of its connections when they connect."""

    def __init__(self, runtime: Runtime) -> None:
        self.statements = Statements(runtime)
        #: (alias, whether its statements need the outer-layer flag) -> its execute wrapper
        self.wrappers: dict[tuple[str, bool], Callable[..., Any]] = {}
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()

    def connection_created(self, sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
        """Put our execute wrapper on a connection that has just connected (Django's signal).

        A driver adapter under Django must not record the statements again.  When Django
        connected through ``BaseDatabaseWrapper.connect`` (the signal is sent inside it, in
        :func:`~otel_perf._core.statements.outer_connection`) the driver handed back its own
        connection, and when a driver adapter wrapped it anyway it let go of it here
        (:func:`~otel_perf._core.statements.disown`): either way nothing beneath records, and
        the wrapper does not set the outer-layer flag around each statement (two context
        variable writes per statement).  Otherwise it does.
        """
        try:
            if connection is None:
                return
            unwrapped = connecting_for_outer_layer()
            if connection.connection is not None and disown(connection.connection):
                unwrapped = True
            key = (connection.alias, not unwrapped)
            wrapper = self.wrappers.get(key)
            if wrapper is None:
                wrapper = self.wrappers[key] = _execute_wrapper(
                    self.statements, _target(connection), mark_outer=not unwrapped
                )
            installed = connection.execute_wrappers
            ours = set(map(id, self.wrappers.values()))
            for i, present in enumerate(installed):  # a reconnection: the wrapper it needs now
                if id(present) in ours:
                    installed[i] = wrapper
                    return
            # Not ``connection.execute_wrapper(wrapper)`` kept entered: that generator's exit
            # (when collected) pops whichever wrapper is last by then, one of the app's or none.
            # First in the list, ours is the outermost: an app's ``with execute_wrapper(w):``
            # this connection was opened in pops its own wrapper on exit, the last, not ours.
            installed.insert(0, wrapper)
            self.connections.add(connection)
        except Exception as exc:
            guard.internal_error("django.connection_created", exc)

    def unhook(self) -> None:
        ours = set(map(id, self.wrappers.values()))
        for connection in list(self.connections):
            connection.execute_wrappers[:] = [w for w in connection.execute_wrappers if id(w) not in ours]
        self.connections = weakref.WeakSet()


def _target(connection: Any) -> DbTarget:
    settings = getattr(connection, "settings_dict", None) or {}
    port = str(settings.get("PORT") or "")
    return DbTarget(
        db_system(str(getattr(connection, "vendor", "") or "")),
        str(settings.get("NAME") or ""),
        str(settings.get("HOST") or ""),
        int(port) if port.isdigit() else None,
    )


def _execute_wrapper(statements: Statements, target: DbTarget, mark_outer: bool = True) -> Callable[..., Any]:
    """The ``execute_wrapper`` of one alias: time the statement, hand it to the statement core.

    Per statement, so written for the calls it makes: the outer-layer flag (``mark_outer``:
    a driver adapter beneath may record the connection's statements) is set and reset
    through bound methods (:func:`~otel_perf._core.statements.outer_layer` without a context
    manager), the statement goes to ``record`` as Django built it (a str).
    """
    record = statements.record
    failed = statements.failed
    mark = OUTER.set if mark_outer else None
    unmark = OUTER.reset

    def otel_perf_execute(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        token = mark(True) if mark is not None else None
        t0 = perf_counter()
        try:
            result = execute(sql, params, many, context)
        except BaseException as exc:
            if token is not None:
                unmark(token)
            failed(target, sql, t0, exc, batch_size(params) if many else 0)
            raise
        if token is not None:
            unmark(token)
        seconds = perf_counter() - t0
        try:
            record(target, sql, seconds, "", batch_size(params) if many else 0)
        except Exception as exc:
            guard.internal_error("django.execute", exc)
        return result

    return otel_perf_execute


# --- cache ------------------------------------------------------------------------------------


def _create_cache(caches: Caches, original: Any) -> Any:
    def create_connection(self: Any, alias: str) -> Any:
        backend = original(self, alias)
        try:
            _count_reads(backend, str(alias), caches)
        except Exception as exc:
            guard.internal_error("django.cache", exc)
        return backend

    return create_connection


def _count_reads(backend: Any, alias: str, caches: Caches) -> None:
    """Give one cache backend instance ``get``/``get_many`` that count hits and misses, and
    ``get_or_set``/``aget_or_set`` that count one read.

    A read counts once: a backend method that calls another one (``get_many`` through ``get``)
    and the store beneath (Redis's adapter) see :data:`~otel_perf._core.caches.COUNTED_ABOVE`
    set and pass it through; of the two reads of a ``get_or_set`` of a missing key (Django
    reads again after its ``add``), the first counts.
    """
    read = caches.read
    this = id(backend)
    own_get = backend.get
    own_get_many = backend.get_many
    own_get_or_set = backend.get_or_set
    own_aget_or_set = getattr(backend, "aget_or_set", None)

    def get(key: Any, default: Any = None, *args: Any, **kwargs: Any) -> Any:
        if COUNTED_ABOVE.get():
            return own_get(key, default, *args, **kwargs)
        counted = True
        reads = _GET_OR_SET_READS.get()
        if reads is not None:  # inside get_or_set: its read again after its add does not count
            if not reads:
                reads.append((this, key))
            elif reads[0] == (this, key):  # not another cache's read of that key (two tiers)
                counted = False
        token = COUNTED_ABOVE.set(True)  # the store beneath does not count it either
        try:
            value = own_get(key, _MISSING, *args, **kwargs)
        finally:
            COUNTED_ABOVE.reset(token)
        if value is _MISSING:
            if counted:
                read("django", alias, 0, 1)
            return default
        if counted:
            read("django", alias, 1, 0)
        return value

    def get_many(keys: Any, *args: Any, **kwargs: Any) -> Any:
        if COUNTED_ABOVE.get():
            return own_get_many(keys, *args, **kwargs)
        keys = list(keys)
        token = COUNTED_ABOVE.set(True)
        try:
            found = own_get_many(keys, *args, **kwargs)
        finally:
            COUNTED_ABOVE.reset(token)
        try:
            asked = len(set(keys))
        except TypeError:  # unhashable keys: the backend will have said so already
            asked = len(keys)
        hits = len(found) if found is not None else 0
        read("django", alias, hits, max(asked - hits, 0))
        return found

    def get_or_set(key: Any, default: Any, *args: Any, **kwargs: Any) -> Any:
        token = _GET_OR_SET_READS.set([])
        try:
            return own_get_or_set(key, default, *args, **kwargs)
        finally:
            _GET_OR_SET_READS.reset(token)

    async def aget_or_set(key: Any, default: Any, *args: Any, **kwargs: Any) -> Any:
        token = _GET_OR_SET_READS.set([])  # aget runs get in a thread, in a copy of this context
        try:
            return await own_aget_or_set(key, default, *args, **kwargs)  # type: ignore[misc]
        finally:
            _GET_OR_SET_READS.reset(token)

    backend.get = get
    backend.get_many = get_many
    backend.get_or_set = get_or_set
    if own_aget_or_set is not None:
        backend.aget_or_set = aget_or_set


# --- logging ----------------------------------------------------------------------------------


def _configure_logging(original: Any) -> Any:
    def configure_logging(logging_config: Any, logging_settings: Any) -> None:
        original(logging_config, logging_settings)
        try:
            from otel_perf._integrations import logs

            logs.drop_default_handler("django", _is_django_console)
            logs.reinstate()
        except Exception as exc:
            guard.internal_error("django.logging", exc)

    return configure_logging


def _is_django_console(handler: logging.Handler) -> bool:
    """Django's default ``console`` handler (DEFAULT_LOGGING: stderr, DEBUG only)."""
    return (
        type(handler) is logging.StreamHandler
        and handler.stream in (sys.stderr, sys.__stderr__)
        and any(type(f).__name__ == "RequireDebugTrue" for f in handler.filters)
    )
