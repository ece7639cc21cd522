"""A cache read, for every cache adapter: hit or miss, into one metric that gives the hit ratio.

Redis (``GET``/``MGET``/``HGET``... that return nothing are misses), Django's cache framework
and any later cache adapter call :meth:`Caches.read` with the cache's system, its name (a
server and database, or an alias) and how many keys were found of how many asked.  The
counter ``perf.cache.operations`` by ``perf.cache.system``, ``perf.cache.name`` and
``perf.cache.result`` (``hit`` / ``miss``) gives the hit ratio per cache in Prometheus:
``sum by (perf_cache_name) (rate(perf_cache_operations_total{perf_cache_result="hit"}[5m]))
/ sum by (perf_cache_name) (rate(perf_cache_operations_total[5m]))``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from otel_perf import _names as n

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime
    from otel_perf._metrics.instruments import Key

HIT = "hit"
MISS = "miss"
#: True while the store's reads are not to be counted by its own adapter: a library reading it
#: for its own bookkeeping (a job system's result backend: no cache reads), or a cache layer
#: above that counts the read itself (Django's cache framework over Redis: counted once, by it).
_UNCOUNTED: ContextVar[bool] = ContextVar("otel_perf_cache_uncounted", default=False)
#: The flag itself, for an outer cache layer's per-read path: ``token = COUNTED_ABOVE.set(True)``
#: before the read and ``COUNTED_ABOVE.reset(token)`` after.
COUNTED_ABOVE = _UNCOUNTED


@contextmanager
def bookkeeping() -> Iterator[None]:
    """Reads made inside are a library's own bookkeeping, not cache reads."""
    token = _UNCOUNTED.set(True)
    try:
        yield
    finally:
        _UNCOUNTED.reset(token)


def is_bookkeeping() -> bool:
    """Whether a read now is bookkeeping or counted by a cache layer above (adapters: skip it)."""
    return _UNCOUNTED.get()


class Caches:
    """The cache-read recorder of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.counter = runtime.inst.cache_operations
        register_floor(runtime)

    def read(self, system: str, name: str, hits: int, misses: int = 0) -> None:
        """``hits`` keys found and ``misses`` not found in one read of cache ``name``."""
        if hits:
            self.counter.add(hits, (system, name, HIT))
        if misses:
            self.counter.add(misses, (system, name, MISS))

    def totals(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(system, name) -> (hits, misses) so far (the stats endpoint's cache section)."""
        out: dict[tuple[str, str], tuple[float, float]] = {}
        for key, value in self.counter.values().items():
            if len(key) != 3:  # the overflow series
                continue
            system, name, result = key
            cache = (str(system), str(name))
            hits, misses = out.get(cache, (0.0, 0.0))
            out[cache] = (hits + value, misses) if result == HIT else (hits, misses + value)
        return out


def register_floor(runtime: Runtime) -> None:
    """Export ``perf.cache.hit_floor`` for every cache read so far (once per runtime).

    The alert rule ``PerfCacheHitRatioLow`` compares each cache's hit ratio with this gauge, so
    the floor is the app's setting (``OTEL_PERF_CACHE_HIT_RATIO_FLOOR``), not a number in the
    rule file; a floor of 0 exports nothing and the alert stays silent.
    """
    if runtime.registry.get(n.CACHE_HIT_FLOOR) is not None:
        return
    floor = hit_ratio_floor(runtime)
    counter = runtime.inst.cache_operations

    def points() -> list[tuple[float, Key]]:
        if floor <= 0:
            return []
        seen = {(key[0], key[1]) for key in counter.values() if len(key) == 3}
        return [(floor, cache) for cache in sorted(seen, key=str)]

    runtime.registry.gauge(
        n.CACHE_HIT_FLOOR,
        "1",
        "Hit ratio below which a cache is flagged (OTEL_PERF_CACHE_HIT_RATIO_FLOOR).",
        (n.A_CACHE_SYSTEM, n.A_CACHE_NAME),
        points,
    )


def hit_ratio_floor(runtime: Runtime) -> float:
    return float(runtime.config.number("OTEL_PERF_CACHE_HIT_RATIO_FLOOR"))
