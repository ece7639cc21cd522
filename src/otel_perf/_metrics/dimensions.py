"""Bounded metric dimensions a user names (``measure(..., dimensions=...)``, ``counter()``, ``histogram()``).

A dimension's values are kept as metric attributes up to ``OTEL_PERF_MAX_DIMENSION_VALUES``
distinct values per metric and dimension; later new values are recorded as ``_OTHER`` (the
word the HTTP semantic conventions use for methods beyond the known ones), counted in
``perf.metric.dimension_overflow`` (by metric and dimension) and said once in a warning
naming the metric, the dimension and the fix.  So a user id passed as a dimension by
mistake costs a bounded number of series, not a memory leak.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from otel_perf import _names as n
from otel_perf._metrics.instruments import Counter, Registry

logger = logging.getLogger("otel_perf")

OTHER = "_OTHER"
#: Longest value kept (longer text is cut).
MAX_VALUE = 100


def _value(raw: Any) -> str | int | float | bool:
    if isinstance(raw, bool | int | float):
        return raw
    return str(raw)[:MAX_VALUE]


class Dimensions:
    """Per-metric, per-dimension bounded value sets, shared by every user metric of a runtime."""

    def __init__(self, registry: Registry, limit: int) -> None:
        self.limit = limit
        self._seen: dict[tuple[str, str], set[Any]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        existing = registry.get(n.DIMENSION_OVERFLOW)
        self.overflow: Counter = (
            existing
            if isinstance(existing, Counter)
            else registry.counter(
                n.DIMENSION_OVERFLOW,
                "{measurement}",
                "Measurements whose dimension value was recorded as _OTHER (too many values).",
                (n.A_METRIC_NAME, n.A_DIMENSION_NAME),
            )
        )

    def key(
        self, metric: str, names: Iterable[str], values: Mapping[str, Any]
    ) -> tuple[tuple[str, Any], ...]:
        """The (name, value) pairs of the dimensions ``names`` present in ``values``, bounded."""
        pairs = []
        for name in names:
            if name not in values or values[name] is None:
                continue
            pairs.append((name, self.bounded(metric, name, _value(values[name]))))
        return tuple(pairs)

    def bounded(self, metric: str, name: str, value: Any) -> Any:
        slot = (metric, name)
        with self._lock:
            seen = self._seen.get(slot)
            if seen is None:
                seen = self._seen[slot] = set()
            if value in seen:
                return value
            if len(seen) < self.limit:
                seen.add(value)
                return value
            warn = slot not in self._warned
            self._warned.add(slot)
        self.overflow.add(1, (metric, name))
        if warn:
            logger.warning(
                "otel-perf: dimension %r of metric %r has more than %d values; later values are recorded "
                "as %s (counted in perf.metric.dimension_overflow). Use a dimension with a few values (a "
                "status, a plan), put ids on the span instead (measure attributes not named as "
                "dimensions), or raise OTEL_PERF_MAX_DIMENSION_VALUES.",
                name,
                metric,
                self.limit,
                OTHER,
            )
        return OTHER
