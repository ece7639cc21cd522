"""Issue 18: Redis commands (spans, duration by command) and the cache hit ratio, end to end.

The app (tests/apps/data_app.py) runs a scripted sequence of cache reads against the tests'
redis-server: the hits and misses counted are exact, in the stats endpoint and in the exported
``perf.cache.operations``; each command is one CLIENT span under the request (also with the
official redis instrumentation installed) and not a SQL query.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from support.launch import Service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess, skip_or_fail
from support.redis import RedisServer
from test_drivers_e2e import server_span, start_data_app, stats, trace_of

pytestmark = pytest.mark.slow
#: /redis/sequence: what it sends, one span each (the pipeline is one)
COMMANDS = ["SET", "SET", "GET", "GET", "MGET", "HSET", "HGET", "HGET", "HGETALL", "EXISTS", "PIPELINE"]


def _start(
    app_process: Callable[..., AppProcess],
    receiver: OTLPReceiver,
    tmp_path: Path,
    redis_server: RedisServer,
    db: int,
    **env: str,
) -> tuple[Service, str]:
    """The app on Redis database ``db`` (each test its own); returns it and the cache's name."""
    svc = start_data_app(app_process, receiver, tmp_path, APP_REDIS_URL=redis_server.url(db), **env)
    return svc, f"127.0.0.1:{redis_server.port}/{db}"


@pytest.mark.matrix
def test_hits_and_misses_are_exact_and_each_command_is_one_span(
    redis_server: RedisServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    svc, cache = _start(app_process, otlp_receiver, tmp_path, redis_server, 3)
    trace_id = trace_of(httpx.get(svc.base + "/redis/sequence"))

    [entry] = stats(svc)["caches"]
    assert entry == {
        "system": "redis",
        "name": cache,
        "hits": 6,
        "misses": 5,
        "hit_ratio": round(6 / 11, 4),
        "floor": 0.8,
        "below_floor": False,  # 11 reads: too few to judge
    }
    for result, count in (("hit", 6), ("miss", 5)):
        wanted = {"perf.cache.system": "redis", "perf.cache.name": cache, "perf.cache.result": result}
        otlp_receiver.wait_for(
            lambda w=wanted, c=count: otlp_receiver.sum_value("perf.cache.operations", w) == c,
            what=f"{count} {result}s",
        )
    floor = otlp_receiver.wait_for(
        lambda: otlp_receiver.latest_points("perf.cache.hit_floor", {"perf.cache.name": cache}),
        what="the floor gauge",
    )
    assert floor[0].value == 0.8

    server = server_span(otlp_receiver, trace_id)
    assert server.attributes["perf.db.query_count"] == 0  # Redis commands are not SQL queries
    assert server.attributes["perf.redis.command_count"] == len(COMMANDS)
    spans = otlp_receiver.wait_for(
        lambda: (
            found
            if len(found := [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]) >= 11
            else []
        ),
        what="11 command spans",
    )
    assert [s.name for s in spans] == COMMANDS
    assert {s.parent_span_id for s in spans} == {server.span_id}
    get = spans[2].attributes
    assert get["db.system.name"] == "redis" and get["db.operation.name"] == "GET"
    assert get["db.namespace"] == "3" and get["server.port"] == redis_server.port
    # As the official instrumentation's: the command with each argument a "?", never a value
    assert get["db.query.text"] == "GET ?" and get["db.redis.args_length"] == 2
    assert get["network.transport"] == "tcp"
    assert spans[4].attributes["db.query.text"] == "MGET ? ? ?"
    assert spans[5].attributes["db.query.text"] == "HSET ? ? ?"
    assert spans[-1].attributes["db.operation.batch.size"] == 2
    assert spans[-1].attributes["db.query.text"] == "GET ?\nDEL ?"  # the pipeline's commands
    otlp_receiver.wait_for(
        lambda: (
            otlp_receiver.histogram_count(
                "db.client.operation.duration", {"db.system.name": "redis", "db.operation.name": "GET"}
            )
            == 2
        ),
        what="2 GET points",
    )


def test_a_cache_below_its_floor_degrades_the_status(
    redis_server: RedisServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    svc, cache = _start(
        app_process, otlp_receiver, tmp_path, redis_server, 4, OTEL_PERF_CACHE_HIT_RATIO_FLOOR="0.9"
    )
    for _ in range(2):  # 22 reads, 12 hits: 54.5%, under the 90% floor
        assert httpx.get(svc.base + "/redis/sequence").status_code == 200
    summary = stats(svc)
    [entry] = summary["caches"]
    assert (entry["name"], entry["hits"], entry["misses"], entry["below_floor"]) == (cache, 12, 10, True)
    assert summary["status"] == "degraded"
    assert f"cache {cache} (redis): hit ratio 54.5% below 90%" in summary["status_reasons"]


@pytest.fixture(scope="session")
def official_redis_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    target = tmp_path_factory.mktemp("contrib-redis")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), "opentelemetry-instrumentation-redis==0.66b2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        skip_or_fail(f"could not install the official redis instrumentation: {result.stderr[-500:]}")
    return str(target)


def test_one_span_per_command_with_the_official_redis_instrumentation_installed(
    official_redis_path: str,
    redis_server: RedisServer,
    otlp_receiver: OTLPReceiver,
    app_process: Callable[..., AppProcess],
    tmp_path: Path,
) -> None:
    url, contrib = redis_server.url(6), official_redis_path
    svc = start_data_app(app_process, otlp_receiver, tmp_path, APP_REDIS_URL=url, python_path=contrib)
    trace_id = trace_of(httpx.get(svc.base + "/redis/sequence"))
    server_span(otlp_receiver, trace_id)
    otlp_receiver.wait_for(
        lambda: len([s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]) >= 11,
        what="11 command spans",
    )
    spans = [s for s in otlp_receiver.spans(trace_id=trace_id) if s.kind == "CLIENT"]
    assert [s.name for s in spans] == COMMANDS


def test_watch_and_the_reads_before_multi_are_commands_of_their_own(redis_server: RedisServer) -> None:
    """A pipeline in immediate mode (``WATCH``, then reads before ``MULTI``): each command is
    recorded as outside a pipeline (span, duration point, cache read), the transaction once.
    A command the server refuses has the exception event and status description."""
    import redis as redis_lib
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_perf._config import load
    from otel_perf._core.runtime import Runtime, build_instruments
    from otel_perf._integrations import redis as redis_adapter
    from otel_perf._metrics.instruments import Registry

    provider = TracerProvider(shutdown_on_exit=False)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    registry = Registry()
    tracer = provider.get_tracer("otel_perf")
    rt = Runtime(load({}), tracer, registry, build_instruments(registry), Resource({}))
    import redis.client

    redis_adapter.install(rt, redis.client)
    try:
        client = redis_lib.Redis(host="127.0.0.1", port=redis_server.port, db=9)
        client.set("watched:counter", 1)
        with provider.get_tracer("test").start_as_current_span("job"), client.pipeline() as pipe:
            pipe.watch("watched:counter")
            current = int(pipe.get("watched:counter") or 0)
            pipe.multi()
            pipe.set("watched:counter", current + 1)
            pipe.execute()
        job = provider.get_tracer("test").start_as_current_span("job")
        with job, pytest.raises(redis_lib.ResponseError):
            client.hget("watched:counter", "field")  # WRONGTYPE: a string, not a hash
        client.close()
    finally:
        redis_adapter.uninstall()
    names = [s.name for s in memory.get_finished_spans() if s.name != "job"]
    assert names == ["WATCH", "GET", "MULTI", "HGET"], names
    [failed] = [s for s in memory.get_finished_spans() if s.name == "HGET"]  # as the official span says
    assert str(failed.status.description).startswith("ResponseError: WRONGTYPE")
    assert [e.name for e in failed.events] == ["exception"]
    [watch] = [s for s in memory.get_finished_spans() if s.name == "WATCH"]
    assert (watch.attributes or {})["db.query.text"] == "WATCH ?"
    operations = {s.key[1]: s.count for s in rt.inst.db_duration.series()}
    assert operations == {"SET": 1, "WATCH": 1, "GET": 1, "MULTI": 1, "HGET": 1}  # the SET before: no span
