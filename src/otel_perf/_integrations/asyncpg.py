"""asyncpg: every statement of the connections ``asyncpg.connect`` and asyncpg pools open.

``asyncpg.connect`` (and ``asyncpg.connection.connect``, which pools call) is wrapped to open
connections of a subclass of the requested ``connection_class`` whose ``execute``,
``executemany``, ``fetch``, ``fetchrow``, ``fetchval``, ``fetchmany`` and ``copy_*`` run
between two clock reads and go to the statement core (query counts,
``db.client.operation.duration``, slow-query and N+1 findings for every unit of work, a CLIENT
span when sampled); statements ``prepare()`` returns record their runs the same way.  The
connection is a real instance of the class asked for (pools check that).

Connections SQLAlchemy's asyncpg dialect opens come back of the class asked for: SQLAlchemy
runs its statements as prepared statements and records them itself, so each is recorded once.
Replaces the official ``asyncpg`` instrumentation (one span per statement, plus the duration
metric and findings it lacks).  Not recorded: rows read through ``cursor()`` (they are fetched
while the caller iterates).

The server address and database come from the connection's ``_addr`` and ``_params``
(asyncpg keeps no public accessor); without them the spans carry ``db.system.name`` only.
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

_patches = Patches("asyncpg")
_TARGET = "_otel_perf_target"
#: connection class -> its recording subclass (bounded: classes of the app)
_types: dict[type, type] = {}
_MAX_TYPES = 64
_state: dict[str, Any] = {}
_NONE = DbTarget("postgresql")


def _recording_statement_type(base: type, statements: Statements) -> type:
    run = statements.run_async

    class RecordingPreparedStatement(base):  # type: ignore[misc]
        __slots__ = ()

        def _target(self) -> DbTarget:
            return getattr(self._connection, _TARGET, None) or _NONE

        async def fetch(self, *args: Any, **kwargs: Any) -> Any:
            return await run(self._target(), self.get_query(), 0, super().fetch, *args, **kwargs)

        async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
            return await run(self._target(), self.get_query(), 0, super().fetchrow, *args, **kwargs)

        async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
            return await run(self._target(), self.get_query(), 0, super().fetchval, *args, **kwargs)

        async def fetchmany(self, args: Any, **kwargs: Any) -> Any:
            args = list(args)
            return await run(
                self._target(), self.get_query(), batch_size(args), super().fetchmany, args, **kwargs
            )

        async def executemany(self, args: Any, **kwargs: Any) -> Any:
            args = list(args)
            batch = batch_size(args)
            return await run(self._target(), self.get_query(), batch, super().executemany, args, **kwargs)

    RecordingPreparedStatement.__name__ = RecordingPreparedStatement.__qualname__ = base.__name__
    RecordingPreparedStatement.__module__ = base.__module__
    return RecordingPreparedStatement


def _recording_connection(base: type, statements: Statements) -> type:
    """A subclass of connection class ``base`` whose statements are recorded."""
    found = _types.get(base)
    if found is not None:
        return found
    run = statements.run_async
    prepared_type = _state.get("prepared")

    class RecordingConnection(base):  # type: ignore[misc]
        __slots__ = (_TARGET,)

        async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            return await run(self._otel_perf_target, query, 0, super().execute, query, *args, **kwargs)

        async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
            args = list(args)
            batch = batch_size(args)
            return await run(
                self._otel_perf_target, command, batch, super().executemany, command, args, **kwargs
            )

        async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
            return await run(self._otel_perf_target, query, 0, super().fetch, query, *args, **kwargs)

        async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
            return await run(self._otel_perf_target, query, 0, super().fetchrow, query, *args, **kwargs)

        async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
            return await run(self._otel_perf_target, query, 0, super().fetchval, query, *args, **kwargs)

        async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
            args = list(args)
            batch = batch_size(args)
            return await run(self._otel_perf_target, query, batch, super().fetchmany, query, args, **kwargs)

        async def copy_from_query(self, query: str, *args: Any, **kwargs: Any) -> Any:
            return await run(
                self._otel_perf_target, query, 0, super().copy_from_query, query, *args, **kwargs
            )

        async def copy_from_table(self, table_name: str, **kwargs: Any) -> Any:
            sql = f"COPY {table_name} TO STDOUT"
            return await run(self._otel_perf_target, sql, 0, super().copy_from_table, table_name, **kwargs)

        async def copy_to_table(self, table_name: str, **kwargs: Any) -> Any:
            sql = f"COPY {table_name} FROM STDIN"
            return await run(self._otel_perf_target, sql, 0, super().copy_to_table, table_name, **kwargs)

        async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> Any:
            sql = f"COPY {table_name} FROM STDIN"
            return await run(
                self._otel_perf_target, sql, 0, super().copy_records_to_table, table_name, **kwargs
            )

        async def reset(self, **kwargs: Any) -> Any:
            # The pool's housekeeping when a connection goes back (RESET ALL, UNLISTEN *...) is
            # not a statement of the app's: it would add one to every request's query count.
            with outer_layer():
                return await super().reset(**kwargs)

        async def prepare(self, query: str, **kwargs: Any) -> Any:
            statement = await super().prepare(query, **kwargs)
            if prepared_type is not None and type(statement) is prepared_type.__mro__[1]:
                try:
                    statement.__class__ = prepared_type
                except TypeError as exc:  # a layout we do not know: its runs stay unrecorded
                    guard.internal_error("asyncpg.prepare", exc)
            return statement

    RecordingConnection.__name__ = RecordingConnection.__qualname__ = base.__name__
    RecordingConnection.__module__ = base.__module__
    if len(_types) < _MAX_TYPES:
        _types[base] = RecordingConnection
    return RecordingConnection


def _target(connection: Any, statements: Statements) -> DbTarget:
    """The connection's database (private attributes, probed: ``db.system.name`` alone without them)."""
    try:
        addr = getattr(connection, "_addr", None)
        params = getattr(connection, "_params", None)
        database = str(getattr(params, "database", "") or "")
        if isinstance(addr, tuple) and len(addr) >= 2:
            return statements.target("postgresql", database, str(addr[0]), int(addr[1]))
        return statements.target("postgresql", database, str(addr or ""))
    except Exception:
        return statements.target("postgresql")


def _wrap_connect(statements: Statements, original: Callable[..., Any]) -> Callable[..., Any]:
    import asyncpg

    def connect(*args: Any, **kwargs: Any) -> Any:
        # Decided here, in the caller's context (SQLAlchemy's dialect sets it around its connect).
        if connecting_for_outer_layer():
            return original(*args, **kwargs)
        try:
            base = kwargs.get("connection_class", asyncpg.Connection)
            kwargs["connection_class"] = _recording_connection(base, statements)
        except Exception as exc:  # a connection class we cannot subclass: open it as asked
            guard.internal_error("asyncpg.connect", exc)
            return original(*args, **kwargs)
        return _connected(original(*args, **kwargs), statements)

    return connect


async def _connected(connecting: Any, statements: Statements) -> Any:
    connection = await connecting
    try:
        connection._otel_perf_target = _target(connection, statements)
    except Exception as exc:
        guard.internal_error("asyncpg.target", exc)
    return connection


def install(runtime: Runtime, _module: ModuleType | None) -> None:
    """Wrap ``asyncpg.connect`` (``asyncpg`` was imported)."""
    import asyncpg
    import asyncpg.connection
    import asyncpg.prepared_stmt

    if _patches.active:
        return
    statements = Statements(runtime)
    _state["statements"] = statements
    _state["prepared"] = _recording_statement_type(asyncpg.prepared_stmt.PreparedStatement, statements)
    wrapper = _patches.wrap(
        asyncpg.connection, "connect", lambda original: _wrap_connect(statements, original)
    )
    _patches.wrap(asyncpg, "connect", lambda _original: wrapper)


def uninstall() -> None:
    _patches.restore()
    _types.clear()
    _state.clear()
