"""sqlite3: every statement of every connection ``sqlite3.connect`` opens, raw or through a wrapper.

``sqlite3.Connection`` and ``sqlite3.Cursor`` are C types whose methods cannot be patched,
so ``sqlite3.connect`` (and its twin ``sqlite3.dbapi2.connect``) is wrapped to open
connections of a subclass of the requested ``factory`` (``sqlite3.Connection`` unless the
caller gave one): its ``cursor()`` hands out cursors of a subclass of the requested cursor
factory whose ``execute``/``executemany``/``executescript`` run between two clock reads and
go to the statement core (query counts, ``db.client.operation.duration``, slow-query and N+1
findings for every unit of work, a CLIENT span when it is sampled), and its own
``execute``/``executemany``/``executescript`` shortcuts go through such a cursor.  The
instances are real ``sqlite3.Connection``/``Cursor`` objects (isinstance holds; row
factories, adapters and converters work as before).

Connections SQLAlchemy's dialect opens come back unwrapped (SQLAlchemy's hooks record their
statements: one statement is recorded once), and aiosqlite's, which it opens in its own
thread, are disowned when SQLAlchemy takes them.  Replaces the official ``sqlite3``
instrumentation (one span per statement, and the duration metric it does not record).
Not covered: statements aiosqlite runs for you outside SQLAlchemy are recorded in aiosqlite's
thread, outside the request's context (no query count for the request, a root span).
"""

from __future__ import annotations

import sqlite3 as _sqlite3
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

from otel_perf._core import guard
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime
from otel_perf._core.statements import (
    DbTarget,
    Statements,
    batch_size,
    connecting_for_outer_layer,
    register_disowner,
    unregister_disowner,
)

_patches = Patches("sqlite3")
_TARGET = "_otel_perf_target"
#: factory class -> its recording subclass (bounded: factories are classes of the app)
_connection_types: dict[type, type] = {}
_cursor_types: dict[type, type] = {}
_MAX_TYPES = 64
_state: dict[str, Any] = {}


def _recording_cursor(base: type, statements: Statements) -> type:
    """A subclass of cursor class ``base`` whose statements are recorded."""
    found = _cursor_types.get(base)
    if found is not None:
        return found
    run = statements.run
    script = cast(Any, base).executescript  # unbound: see executescript below

    class RecordingCursor(base):  # type: ignore[misc]
        __slots__ = ()

        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            target = _target_of(self.connection)
            if target is None:
                return super().execute(sql, parameters)
            return run(target, sql, 0, super().execute, sql, parameters)

        def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any:
            target = _target_of(self.connection)
            if target is None:
                return super().executemany(sql, seq_of_parameters)
            if not isinstance(seq_of_parameters, (list, tuple)):  # a generator: count what it yields
                seq_of_parameters = list(seq_of_parameters)
            batch = batch_size(seq_of_parameters)
            return run(target, sql, batch, super().executemany, sql, seq_of_parameters)

        def executescript(self, sql_script: str, /) -> Any:
            target = _target_of(self.connection)
            if target is None:
                return super().executescript(sql_script)
            # Unbound (``base.executescript(self, ...)``): the core reads a statement's returned rows
            # from the cursor its bound execute belongs to, and a script's rowcount is the previous
            # statement's, not rows the script returned.
            return run(target, sql_script, 0, script, self, sql_script)

    RecordingCursor.__name__ = RecordingCursor.__qualname__ = base.__name__
    RecordingCursor.__module__ = base.__module__
    if len(_cursor_types) < _MAX_TYPES:
        _cursor_types[base] = RecordingCursor
    return RecordingCursor


def _target_of(connection: Any) -> DbTarget | None:
    return getattr(connection, _TARGET, None)


def _recording_connection(base: type, statements: Statements) -> type:
    """A subclass of connection class ``base`` whose cursors record their statements."""
    found = _connection_types.get(base)
    if found is not None:
        return found
    default_cursor = _recording_cursor(_sqlite3.Cursor, statements)

    class RecordingConnection(base):  # type: ignore[misc]
        def cursor(self, factory: Any = None) -> Any:
            if getattr(self, _TARGET, None) is None:  # disowned: what the driver would do
                return super().cursor() if factory is None else super().cursor(factory)
            if factory is None or factory is _sqlite3.Cursor:
                return super().cursor(default_cursor)
            return super().cursor(_recording_cursor(factory, statements))

        # The C shortcuts would run their statement on a cursor without going through its
        # Python methods: they go through a recording cursor instead, as the driver does.
        def execute(self, sql: str, parameters: Any = (), /) -> Any:
            return self.cursor().execute(sql, parameters)

        def executemany(self, sql: str, parameters: Any, /) -> Any:
            return self.cursor().executemany(sql, parameters)

        def executescript(self, sql_script: str, /) -> Any:
            return self.cursor().executescript(sql_script)

    RecordingConnection.__name__ = RecordingConnection.__qualname__ = base.__name__
    RecordingConnection.__module__ = base.__module__
    if len(_connection_types) < _MAX_TYPES:
        _connection_types[base] = RecordingConnection
    return RecordingConnection


#: sqlite3.connect's parameters in order (``factory`` is the sixth)
_FACTORY_POSITION = 5


def _wrap_connect(statements: Statements, original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(*args: Any, **kwargs: Any) -> Any:
        if connecting_for_outer_layer():
            return original(*args, **kwargs)
        try:
            if len(args) > _FACTORY_POSITION:
                base = args[_FACTORY_POSITION]
                args = (*args[:_FACTORY_POSITION], _recording_connection(base, statements), *args[6:])
            else:
                base = kwargs.get("factory", _sqlite3.Connection)
                kwargs["factory"] = _recording_connection(base, statements)
            database = args[0] if args else kwargs.get("database", "")
            target = statements.target("sqlite", _namespace(database))
        except Exception as exc:  # an unexpected factory: open it as the caller asked
            guard.internal_error("sqlite3.connect", exc)
            return original(*args, **kwargs)
        connection = original(*args, **kwargs)
        try:
            setattr(connection, _TARGET, target)
        except Exception as exc:  # a factory with __slots__: it stays unrecorded
            guard.internal_error("sqlite3.target", exc)
        return connection

    return connect


def _namespace(database: Any) -> str:
    if isinstance(database, bytes):
        return database.decode("utf-8", "replace")
    return str(database)


def _disown(connection: Any) -> bool:
    if type(connection) in _connection_types.values() and getattr(connection, _TARGET, None) is not None:
        setattr(connection, _TARGET, None)
        return True
    return False


def install(runtime: Runtime, module: ModuleType | None) -> None:
    """Wrap ``sqlite3.connect`` (``sqlite3`` or ``sqlite3.dbapi2`` was imported)."""
    if "statements" in _state:
        statements = _state["statements"]
    else:
        statements = _state["statements"] = Statements(runtime)
    for owner in (_sqlite3, _sqlite3.dbapi2):
        if getattr(owner.connect, "_otel_perf_original", None) is None:
            _patches.wrap(owner, "connect", lambda original: _wrap_connect(statements, original))
    register_disowner(_disown)


def self_check(runtime: Runtime) -> str:
    """Run one statement on an in-memory database through the wrapper; say what is lost if unrecorded."""
    connection = _sqlite3.connect(":memory:")
    try:
        if _target_of(connection) is None:
            return "sqlite3.connect is not ours (another library replaced it after us)"
        return ""
    finally:
        connection.close()


def uninstall() -> None:
    unregister_disowner(_disown)
    _patches.restore()
    _connection_types.clear()
    _cursor_types.clear()
    _state.clear()
