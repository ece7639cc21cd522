"""psycopg 3: every statement of the connections ``psycopg.connect`` / ``AsyncConnection.connect`` open.

``Connection.connect`` and ``AsyncConnection.connect`` (the classmethods ``psycopg.connect``,
psycopg_pool and subclasses go through) are wrapped; each connection they open gets, as its
``cursor_factory`` and ``server_cursor_factory``, a subclass of the factory it had whose
``execute``/``executemany`` run between two clock reads and go to the statement core (query
counts, ``db.client.operation.duration``, slow-query and N+1 findings for every unit of work,
a CLIENT span when sampled).  ``conn.execute()`` goes through such a cursor too.  The
subclass is made once per (cursor class, database) and carries the database's ``db.namespace``,
``server.address`` and ``server.port``, so a statement costs one Python call more than psycopg's
own and no lookup.  Connections of your own cursor factory keep it (subclassed).

Connections SQLAlchemy's psycopg dialects open (sync and async) come back untouched: SQLAlchemy's
hooks record their statements, so each is recorded once.  Replaces the official ``psycopg``
instrumentation (one span per statement, plus the duration metric and findings it lacks).
Not recorded: ``copy()`` and ``stream()`` (they yield while the statement runs), and
statements queued in pipeline mode are timed as they are queued.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.patching import MARK, Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.statements import (
    DbTarget,
    Statements,
    batch_size,
    connecting_for_outer_layer,
    register_disowner,
    unregister_disowner,
)

_patches = Patches("psycopg")
_TARGET = "_otel_perf_target"
_BASE = "_otel_perf_base"
#: (cursor class, target) -> its recording subclass; bounded (cleared whole when full)
_types: dict[tuple[type, DbTarget], type] = {}
_MAX_TYPES = 256
_state: dict[str, Any] = {}


def _recording(base: type, target: DbTarget, statements: Statements) -> type:
    """A subclass of cursor class ``base`` recording its statements against ``target``."""
    if getattr(base, _BASE, None) is not None:  # one of ours already (re-armed): start from its base
        base = getattr(base, _BASE)
    key = (base, target)
    found = _types.get(key)
    if found is not None:
        return found
    run = statements.run
    run_async = statements.run_async
    is_async = _is_async(base)

    if is_async:

        class AsyncRecordingCursor(base):  # type: ignore[misc]
            __slots__ = ()

            async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                return await run_async(target, query, 0, super().execute, query, params, **kwargs)

            async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any:
                if not isinstance(params_seq, (list, tuple)):
                    params_seq = list(params_seq)
                batch = batch_size(params_seq)
                return await run_async(target, query, batch, super().executemany, query, params_seq, **kwargs)

        made: type = AsyncRecordingCursor
    else:

        class RecordingCursor(base):  # type: ignore[misc]
            __slots__ = ()

            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                return run(target, query, 0, super().execute, query, params, **kwargs)

            def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any:
                if not isinstance(params_seq, (list, tuple)):
                    params_seq = list(params_seq)
                batch = batch_size(params_seq)
                return run(target, query, batch, super().executemany, query, params_seq, **kwargs)

        made = RecordingCursor
    made.__name__ = made.__qualname__ = base.__name__
    made.__module__ = base.__module__
    setattr(made, _BASE, base)
    setattr(made, _TARGET, target)
    if len(_types) >= _MAX_TYPES:
        _types.clear()
    _types[key] = made
    return made


def _is_async(cursor_class: type) -> bool:
    return inspect.iscoroutinefunction(getattr(cursor_class, "execute", None))


def _arm(connection: Any, statements: Statements) -> None:
    """Give ``connection`` recording cursor factories (never raises)."""
    try:
        info = connection.info
        port = info.port
        target = statements.target("postgresql", str(info.dbname or ""), str(info.host or ""), port)
        connection.cursor_factory = _recording(connection.cursor_factory, target, statements)
        connection.server_cursor_factory = _recording(connection.server_cursor_factory, target, statements)
    except Exception as exc:  # a connection of an unexpected kind: it stays unrecorded
        guard.internal_error("psycopg.arm", exc)


def _disown(connection: Any) -> bool:
    """Give a connection SQLAlchemy took over back its own cursor factories."""
    found = False
    for attribute in ("cursor_factory", "server_cursor_factory"):
        base = getattr(getattr(connection, attribute, None), _BASE, None)
        if base is not None:
            setattr(connection, attribute, base)
            found = True
    return found


def _sync_connect(statements: Statements, original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        connection = original(cls, *args, **kwargs)
        if not connecting_for_outer_layer():
            _arm(connection, statements)
        return connection

    return connect


def _async_connect(statements: Statements, original: Callable[..., Any]) -> Callable[..., Any]:
    async def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        outer = connecting_for_outer_layer()  # read before the first await, in the caller's context
        connection = await original(cls, *args, **kwargs)
        if not outer:
            _arm(connection, statements)
        return connection

    return connect


def _patch_classmethod(
    owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace classmethod ``owner.name`` by one made around the library's own function."""

    def build(_bound: Any) -> Any:
        raw = vars(owner)[name]
        function = raw.__func__
        function = getattr(function, MARK, None) or function
        wrapper = make(function)
        setattr(wrapper, MARK, function)
        return classmethod(wrapper)

    _patches.wrap(owner, name, build)


def install(runtime: Runtime, psycopg: ModuleType | None) -> None:
    """Wrap the connect classmethods (``psycopg`` was imported)."""
    import psycopg as module

    if _patches.active:  # installed already
        return
    statements = _state.get("statements")
    if statements is None:
        statements = _state["statements"] = Statements(runtime)
    if "connect" not in vars(module.Connection) or "connect" not in vars(module.AsyncConnection):
        from otel_perf._integrations import DidNotEnable

        raise DidNotEnable("psycopg.Connection.connect is not where psycopg 3 keeps it")
    _patch_classmethod(module.Connection, "connect", lambda f: _sync_connect(statements, f))
    _patch_classmethod(module.AsyncConnection, "connect", lambda f: _async_connect(statements, f))
    # ``psycopg.connect`` is ``Connection.connect`` bound when psycopg was imported.
    _patches.wrap(module, "connect", lambda _original: module.Connection.connect)
    register_disowner(_disown)


def uninstall() -> None:
    unregister_disowner(_disown)
    _patches.restore()
    _types.clear()
    _state.clear()
