"""PyMySQL: every statement of the connections ``pymysql.connect`` opens.

``pymysql.connect`` (also ``pymysql.Connect``; both are the ``Connection`` class) is
replaced by a function opening connections of a subclass of ``pymysql.connections.Connection``
whose ``cursor()`` hands out cursors of a subclass of the cursor class asked for (the
connection's ``cursorclass`` or the one given, ``DictCursor``...), whose ``execute`` and
``executemany`` run between two clock reads and go to the statement core (query counts,
``db.client.operation.duration``, slow-query and N+1 findings for every unit of work, a CLIENT
span when sampled).  An ``executemany`` is one statement (with ``db.operation.batch.size``)
even where PyMySQL runs it as one ``execute`` per row.  Connections remain instances of
``pymysql.connections.Connection``.

Connections SQLAlchemy's pymysql dialect opens come back unwrapped (SQLAlchemy's hooks record
their statements: each is recorded once).  Replaces the official ``pymysql`` instrumentation
(one span per statement, plus the duration metric and findings it lacks).  Code that builds
``pymysql.connections.Connection(...)`` itself, not through ``connect``, is not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.statements import (
    DbTarget,
    Statements,
    batch_size,
    connecting_for_outer_layer,
    outer_layer,
)

_patches = Patches("pymysql")
_TARGET = "_otel_perf_target"
#: cursor class -> its recording subclass (bounded: classes of the app)
_cursor_types: dict[type, type] = {}
_MAX_TYPES = 64
_state: dict[str, Any] = {}


def _recording_cursor(base: type, statements: Statements) -> type:
    if getattr(base, "_otel_perf_base", None) is not None:
        return base
    found = _cursor_types.get(base)
    if found is not None:
        return found
    run = statements.run

    class RecordingCursor(base):  # type: ignore[misc]
        def execute(self, query: Any, args: Any = None) -> Any:
            target = getattr(self.connection, _TARGET, None)
            if target is None:
                return super().execute(query, args)
            return run(target, query, 0, super().execute, query, args)

        def executemany(self, query: Any, args: Any) -> Any:
            target = getattr(self.connection, _TARGET, None)
            if target is None or not args:
                return super().executemany(query, args)
            args = list(args)
            return run(target, query, batch_size(args), self._many, query, args)

        def _many(self, query: Any, args: Any) -> Any:
            with outer_layer():  # the per-row execute calls PyMySQL makes are this one statement
                return super().executemany(query, args)

    RecordingCursor.__name__ = RecordingCursor.__qualname__ = base.__name__
    RecordingCursor.__module__ = base.__module__
    RecordingCursor._otel_perf_base = base
    if len(_cursor_types) < _MAX_TYPES:
        _cursor_types[base] = RecordingCursor
    return RecordingCursor


def _connection_type(base: type, statements: Statements) -> type:
    class RecordingConnection(base):  # type: ignore[misc]
        def cursor(self, cursor: Any = None) -> Any:
            if getattr(self, _TARGET, None) is None:
                return super().cursor(cursor)
            return super().cursor(_recording_cursor(cursor or self.cursorclass, statements))

    RecordingConnection.__name__ = RecordingConnection.__qualname__ = base.__name__
    RecordingConnection.__module__ = base.__module__
    return RecordingConnection


def _target(connection: Any, statements: Statements) -> DbTarget:
    database = getattr(connection, "db", b"") or b""
    if isinstance(database, bytes):
        database = database.decode("utf-8", "replace")
    port = getattr(connection, "port", None)
    return statements.target(
        "mysql",
        str(database),
        str(getattr(connection, "host", "") or ""),
        port if isinstance(port, int) else None,
    )


def _wrap_connect(statements: Statements, original: Any, recording: type) -> Callable[..., Any]:
    def connect(*args: Any, **kwargs: Any) -> Any:
        if connecting_for_outer_layer():
            return original(*args, **kwargs)
        connection = recording(*args, **kwargs)
        try:
            setattr(connection, _TARGET, _target(connection, statements))
        except Exception as exc:
            guard.internal_error("pymysql.target", exc)
        return connection

    return connect


def install(runtime: Runtime, _module: ModuleType | None) -> None:
    """Replace ``pymysql.connect``/``Connect`` (``pymysql`` was imported)."""
    import pymysql
    import pymysql.connections

    if _patches.active:
        return
    statements = Statements(runtime)
    original = pymysql.connections.Connection
    recording = _connection_type(original, statements)
    wrapper = _wrap_connect(statements, original, recording)
    for name in ("connect", "Connect"):
        if getattr(pymysql, name, None) is original:
            _patches.wrap(pymysql, name, lambda _original: wrapper)
    _state["statements"] = statements


def uninstall() -> None:
    _patches.restore()
    _cursor_types.clear()
    _state.clear()
