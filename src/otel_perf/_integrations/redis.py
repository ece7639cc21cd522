"""Redis (redis-py, sync and ``redis.asyncio``): a span and a duration point per command, cache hits.

``Redis.execute_command`` (every command a client sends outside a pipeline) and
``Pipeline.execute`` (one round trip for the commands queued on a pipeline or a ``MULTI``
transaction) are wrapped, in ``redis.client`` and ``redis.asyncio.client``, and each call goes
to the command core (:mod:`otel_perf._core.commands`): ``db.client.operation.duration`` with
``db.system.name=redis`` and ``db.operation.name`` = the command (``PIPELINE``/``MULTI`` with
``db.operation.batch.size`` for a pipeline), a CLIENT span when sampled.  Reads are classified
as cache hits or misses into ``perf.cache.operations`` (cache name ``host:port/db``): ``GET``,
``GETEX``, ``GETDEL``, ``HGET`` answered with nothing are misses; ``MGET`` and ``HMGET`` count
each key or field; ``HGETALL`` of an empty hash is a miss; ``EXISTS`` counts the keys found as
hits and the others as misses; the same reads inside a pipeline count too.

This row *replaces* the official ``redis`` instrumentation (``opentelemetry-instrumentation-redis``),
which is then not loaded even when installed: both wrap ``execute_command``, and one span per
command is the rule.  Ours records, in one wrapper, the stable database semantic conventions
(``db.system.name``, ``db.operation.name``, ``db.namespace``, ``server.address``), the duration
metric and the cache signal; the official one records spans only.  A command's span keeps what
the official one's says: ``db.query.text`` with each argument a ``?`` (``SET ? ? ? ?``, the
command name as we normalise it), ``db.redis.args_length`` and ``network.transport``; a
pipeline is one MULTI or PIPELINE span with ``db.operation.batch.size`` and its commands in
``db.query.text``, one per line (the official one names its span by them).  The two answer to
the same name, so ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=redis`` switches both off.  Redis
commands are not SQL statements: they do not count in queries per request; a sampled request's
span carries ``perf.redis.command_count`` and ``perf.redis.duration``.
A pipeline's commands in immediate mode (``WATCH`` and the reads between it and ``MULTI``) are
each a command of their own, as outside a pipeline.  Not covered: ``RedisCluster`` clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from time import perf_counter
from types import ModuleType
from typing import Any

from otel_perf._core import guard
from otel_perf._core.caches import Caches, is_bookkeeping
from otel_perf._core.commands import Commands, CommandTarget, command_text
from otel_perf._core.patching import Patches
from otel_perf._core.runtime import Runtime

_patches = Patches("redis")
_TARGET = "_otel_perf_target"
_state: dict[str, Any] = {}
SYSTEM = "redis"
OTHER = "OTHER"

#: Command names reported as they are (``db.operation.name``); any other collapses into OTHER.
KNOWN_COMMANDS = frozenset(
    [
        "APPEND",
        "AUTH",
        "BITCOUNT",
        "BITFIELD",
        "BITOP",
        "BITPOS",
        "BLMOVE",
        "BLMPOP",
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BZMPOP",
        "BZPOPMAX",
        "BZPOPMIN",
        "CLIENT",
        "COMMAND",
        "CONFIG",
        "COPY",
        "DBSIZE",
        "DECR",
        "DECRBY",
        "DEL",
        "DISCARD",
        "DUMP",
        "ECHO",
        "EVAL",
        "EVALSHA",
        "EVAL_RO",
        "EVALSHA_RO",
        "EXEC",
        "EXISTS",
        "EXPIRE",
        "EXPIREAT",
        "EXPIRETIME",
        "FCALL",
        "FCALL_RO",
        "FLUSHALL",
        "FLUSHDB",
        "FUNCTION",
        "GEOADD",
        "GEODIST",
        "GEOHASH",
        "GEOPOS",
        "GEORADIUS",
        "GEOSEARCH",
        "GEOSEARCHSTORE",
        "GET",
        "GETBIT",
        "GETDEL",
        "GETEX",
        "GETRANGE",
        "GETSET",
        "HDEL",
        "HELLO",
        "HEXISTS",
        "HEXPIRE",
        "HGET",
        "HGETALL",
        "HGETDEL",
        "HGETEX",
        "HINCRBY",
        "HINCRBYFLOAT",
        "HKEYS",
        "HLEN",
        "HMGET",
        "HMSET",
        "HRANDFIELD",
        "HSCAN",
        "HSET",
        "HSETEX",
        "HSETNX",
        "HSTRLEN",
        "HVALS",
        "INCR",
        "INCRBY",
        "INCRBYFLOAT",
        "INFO",
        "KEYS",
        "LASTSAVE",
        "LCS",
        "LINDEX",
        "LINSERT",
        "LLEN",
        "LMOVE",
        "LMPOP",
        "LPOP",
        "LPOS",
        "LPUSH",
        "LPUSHX",
        "LRANGE",
        "LREM",
        "LSET",
        "LTRIM",
        "MEMORY",
        "MGET",
        "MIGRATE",
        "MONITOR",
        "MOVE",
        "MSET",
        "MSETNX",
        "MULTI",
        "OBJECT",
        "PERSIST",
        "PEXPIRE",
        "PEXPIREAT",
        "PEXPIRETIME",
        "PFADD",
        "PFCOUNT",
        "PFMERGE",
        "PING",
        "PSETEX",
        "PSUBSCRIBE",
        "PTTL",
        "PUBLISH",
        "PUBSUB",
        "PUNSUBSCRIBE",
        "RANDOMKEY",
        "READONLY",
        "RENAME",
        "RENAMENX",
        "RESET",
        "RESTORE",
        "ROLE",
        "RPOP",
        "RPOPLPUSH",
        "RPUSH",
        "RPUSHX",
        "SADD",
        "SAVE",
        "SCAN",
        "SCARD",
        "SCRIPT",
        "SDIFF",
        "SDIFFSTORE",
        "SELECT",
        "SET",
        "SETBIT",
        "SETEX",
        "SETNX",
        "SETRANGE",
        "SINTER",
        "SINTERCARD",
        "SINTERSTORE",
        "SISMEMBER",
        "SMEMBERS",
        "SMISMEMBER",
        "SMOVE",
        "SORT",
        "SORT_RO",
        "SPOP",
        "SRANDMEMBER",
        "SREM",
        "SSCAN",
        "STRLEN",
        "SUBSCRIBE",
        "SUNION",
        "SUNIONSTORE",
        "SWAPDB",
        "TIME",
        "TOUCH",
        "TTL",
        "TYPE",
        "UNLINK",
        "UNSUBSCRIBE",
        "UNWATCH",
        "WAIT",
        "WATCH",
        "XACK",
        "XADD",
        "XAUTOCLAIM",
        "XCLAIM",
        "XDEL",
        "XGROUP",
        "XINFO",
        "XLEN",
        "XPENDING",
        "XRANGE",
        "XREAD",
        "XREADGROUP",
        "XREVRANGE",
        "XTRIM",
        "ZADD",
        "ZCARD",
        "ZCOUNT",
        "ZDIFF",
        "ZDIFFSTORE",
        "ZINCRBY",
        "ZINTER",
        "ZINTERCARD",
        "ZINTERSTORE",
        "ZLEXCOUNT",
        "ZMPOP",
        "ZMSCORE",
        "ZPOPMAX",
        "ZPOPMIN",
        "ZRANDMEMBER",
        "ZRANGE",
        "ZRANGEBYLEX",
        "ZRANGEBYSCORE",
        "ZRANGESTORE",
        "ZRANK",
        "ZREM",
        "ZREMRANGEBYLEX",
        "ZREMRANGEBYRANK",
        "ZREMRANGEBYSCORE",
        "ZREVRANGE",
        "ZREVRANGEBYLEX",
        "ZREVRANGEBYSCORE",
        "ZREVRANK",
        "ZSCAN",
        "ZSCORE",
        "ZUNION",
        "ZUNIONSTORE",
    ]
)
#: raw command name -> reported name (bounded: cleared whole when full)
_names: dict[Any, str] = {}
_MAX_NAMES = 1024


def operation(raw: Any) -> str:
    """The reported ``db.operation.name`` of a command name as the client sent it."""
    found = _names.get(raw)
    if found is not None:
        return found
    text = raw.decode("latin-1") if isinstance(raw, (bytes, bytearray)) else str(raw)
    upper = text.upper()
    name = upper if upper in KNOWN_COMMANDS else upper.split(" ", 1)[0]
    if name not in KNOWN_COMMANDS:
        name = OTHER
    if len(_names) >= _MAX_NAMES:
        _names.clear()
    _names[raw] = name
    return name


def _single(args: tuple[Any, ...], result: Any) -> tuple[int, int]:
    return (0, 1) if result is None else (1, 0)


def _each(args: tuple[Any, ...], result: Any) -> tuple[int, int]:
    if not isinstance(result, (list, tuple)):
        return (0, 0)
    misses = sum(1 for value in result if value is None)
    return (len(result) - misses, misses)


def _whole(args: tuple[Any, ...], result: Any) -> tuple[int, int]:
    return (1, 0) if result else (0, 1)


def _exists(args: tuple[Any, ...], result: Any) -> tuple[int, int]:
    if not isinstance(result, int):
        return (0, 0)
    asked = max(len(args) - 1, 1)
    found = min(result, asked)
    return (found, asked - found)


#: Read commands and how their reply splits into hits and misses.
READS: dict[str, Callable[[tuple[Any, ...], Any], tuple[int, int]]] = {
    "GET": _single,
    "GETEX": _single,
    "GETDEL": _single,
    "HGET": _single,
    "MGET": _each,
    "HMGET": _each,
    "HGETALL": _whole,
    "EXISTS": _exists,
}


def _target(client: Any) -> CommandTarget:
    """The client's server and database (from its pool's connection settings; kept on the pool)."""
    pool = getattr(client, "connection_pool", None)
    found = getattr(pool, _TARGET, None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    settings = getattr(pool, "connection_kwargs", None) or {}
    host = str(settings.get("host") or settings.get("path") or "")
    port = settings.get("port") if "path" not in settings else None
    transport = "unix" if "path" in settings else "tcp"
    target = CommandTarget(
        SYSTEM, host, port if isinstance(port, int) else None, str(settings.get("db", 0)), transport
    )
    if pool is not None:
        with contextlib.suppress(Exception):  # a pool without __dict__: computed each time
            setattr(pool, _TARGET, target)
    return target


def _classify(caches: Caches, target: CommandTarget, name: str, args: tuple[Any, ...], result: Any) -> None:
    split = READS.get(name)
    if split is None or is_bookkeeping():  # not a cache read: a job system's result backend
        return
    hits, misses = split(args, result)
    if hits or misses:
        caches.read(SYSTEM, target.name, hits, misses)


def _after(
    commands: Commands,
    caches: Caches,
    client: Any,
    args: tuple[Any, ...],
    seconds: float,
    result: Any,
    error: str,
    failure: BaseException | None = None,
) -> None:
    try:
        target = _target(client)
        name = operation(args[0]) if args else OTHER
        commands.record(target, name, seconds, error, 0, len(args), None, failure)
        if not error:
            _classify(caches, target, name, args, result)
    except Exception as exc:
        guard.internal_error("redis.command", exc)


def _after_pipeline(
    commands: Commands,
    caches: Caches,
    pipeline: Any,
    stack: list[Any],
    seconds: float,
    results: Any,
    error: str,
    failure: BaseException | None = None,
) -> None:
    try:
        target = _target(pipeline)
        transaction = bool(
            getattr(pipeline, "transaction", False) or getattr(pipeline, "explicit_transaction", False)
        )
        kind = "MULTI" if transaction else "PIPELINE"
        commands.record(target, kind, seconds, error, len(stack), 0, lambda: _pipeline_text(stack), failure)
        if error or not isinstance(results, list) or len(results) != len(stack):
            return
        for queued, result in zip(stack, results, strict=True):
            if isinstance(result, BaseException):
                continue
            args = queued[0] if isinstance(queued, tuple) else getattr(queued, "args", ())
            if args:
                _classify(caches, target, operation(args[0]), tuple(args), result)
    except Exception as exc:
        guard.internal_error("redis.pipeline", exc)


def _pipeline_text(stack: list[Any]) -> str:
    """A pipeline's ``db.query.text``: its commands, each argument a ``?``, one per line (as the
    official Redis instrumentation writes it; never a key or value)."""
    lines = []
    for queued in stack[:100]:
        args = queued[0] if isinstance(queued, tuple) else getattr(queued, "args", ())
        if args:
            lines.append(command_text(operation(args[0]), len(args)))
    return "\n".join(lines)


def _sync_command(commands: Commands, caches: Caches, original: Callable[..., Any]) -> Callable[..., Any]:
    def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        t0 = perf_counter()
        try:
            result = original(self, *args, **options)
        except BaseException as exc:
            _after(commands, caches, self, args, perf_counter() - t0, None, type(exc).__qualname__, exc)
            raise
        _after(commands, caches, self, args, perf_counter() - t0, result, "")
        return result

    return execute_command


def _async_command(commands: Commands, caches: Caches, original: Callable[..., Any]) -> Callable[..., Any]:
    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        t0 = perf_counter()
        try:
            result = await original(self, *args, **options)
        except BaseException as exc:
            _after(commands, caches, self, args, perf_counter() - t0, None, type(exc).__qualname__, exc)
            raise
        _after(commands, caches, self, args, perf_counter() - t0, result, "")
        return result

    return execute_command


def _sync_pipeline(commands: Commands, caches: Caches, original: Callable[..., Any]) -> Callable[..., Any]:
    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        stack = list(getattr(self, "command_stack", ()) or ())
        if not stack:
            return original(self, *args, **kwargs)
        t0 = perf_counter()
        try:
            results = original(self, *args, **kwargs)
        except BaseException as exc:
            seconds = perf_counter() - t0
            _after_pipeline(commands, caches, self, stack, seconds, None, type(exc).__qualname__, exc)
            raise
        _after_pipeline(commands, caches, self, stack, perf_counter() - t0, results, "")
        return results

    return execute


def _async_pipeline(commands: Commands, caches: Caches, original: Callable[..., Any]) -> Callable[..., Any]:
    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        stack = list(getattr(self, "command_stack", ()) or ())
        if not stack:
            return await original(self, *args, **kwargs)
        t0 = perf_counter()
        try:
            results = await original(self, *args, **kwargs)
        except BaseException as exc:
            seconds = perf_counter() - t0
            _after_pipeline(commands, caches, self, stack, seconds, None, type(exc).__qualname__, exc)
            raise
        _after_pipeline(commands, caches, self, stack, perf_counter() - t0, results, "")
        return results

    return execute


def install(runtime: Runtime, module: ModuleType | None) -> None:
    """Wrap the sync (``redis.client``) or async (``redis.asyncio.client``) client, whichever was imported."""
    commands = _state.get("commands")
    if commands is None:
        commands = _state["commands"] = Commands(runtime)
        _state["caches"] = Caches(runtime)
    caches = _state["caches"]
    # The trigger module itself: ``redis.client`` is imported while the ``redis`` package is
    # (so ``redis.client`` is not an attribute of it yet), ``redis.asyncio.client`` likewise.
    if module is None:
        return
    kind = "async" if module.__name__ == "redis.asyncio.client" else "sync"
    if kind in _state:
        return
    _state[kind] = True
    command, pipeline = (
        (_async_command, _async_pipeline) if kind == "async" else (_sync_command, _sync_pipeline)
    )
    _patches.wrap(module.Redis, "execute_command", lambda f: command(commands, caches, f))
    _patches.wrap(module.Pipeline, "execute", lambda f: pipeline(commands, caches, f))
    if hasattr(module.Pipeline, "immediate_execute_command"):  # WATCH and the reads after it
        _patches.wrap(module.Pipeline, "immediate_execute_command", lambda f: command(commands, caches, f))


def uninstall() -> None:
    _patches.restore()
    _state.clear()
    _names.clear()
