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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

HIT = "hit"
MISS = "miss"


class Caches:
    """The cache-read recorder of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.counter = runtime.inst.cache_operations

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
