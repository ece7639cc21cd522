"""The budgets file as gauges, so alert rules and dashboards compare against the same numbers.

With ``OTEL_PERF_BUDGETS`` set the app exports, per route it has served (and every route the
file lists) and per database operation and table it has run, the objective that applies to it
(its own entry, its tier, or the defaults), with ``perf.budget.level`` ``target`` or ``critical``:

===========================================  ==================================================
``perf_budget_duration_seconds``              latency, by ``perf_budget_quantile`` (p50/p95/p99)
``perf_budget_error_rate_ratio``              server errors (5xx) allowed
``perf_budget_client_error_rate_ratio``       client errors (4xx) allowed
``perf_budget_queries_per_request``           SQL statements per request (p95)
``perf_budget_db_duration_seconds``           statement latency by operation and table, by quantile
===========================================  ==================================================

Values are computed when the metrics are collected (never per request), bounded by the
routes and statements the instruments hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from otel_perf import _names as n
from otel_perf._metrics.instruments import Key, Registry

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

LEVELS = ("target", "critical")
Points = list[tuple[float, Key]]


def _routes(rt: Runtime) -> Iterable[tuple[str, str, Any]]:
    """(method, route, budget) of every listed route and every route served that has a budget."""
    budgets = rt.budgets
    assert budgets is not None
    seen: set[tuple[str, str]] = set()
    for method, route, budget in budgets.routes():
        seen.add((method, route))
        yield method, route, budget
    for s in rt.inst.server_duration.series():
        if len(s.key) < 2:
            continue
        route, method = str(s.key[0]), str(s.key[1])
        if (method, route) in seen or not route:
            continue
        seen.add((method, route))
        found = budgets.lookup(method, route)
        if found is not None:
            yield method, route, found


def _levels(budget: Any, key: str) -> Iterable[tuple[str, float]]:
    for level, value in zip(LEVELS, budget.levels(key), strict=True):
        if value is not None:
            yield level, float(value)


def register(rt: Runtime, registry: Registry) -> None:
    """Register the budget gauges of ``rt.budgets`` in ``registry``."""

    def durations() -> Points:
        out: Points = []
        for method, route, budget in _routes(rt):
            for q in ("p50", "p95", "p99"):
                out += [(v / 1000.0, (route, method, q, level)) for level, v in _levels(budget, f"{q}_ms")]
        return out

    def rates(key: str) -> Points:
        return [
            (v, (route, method, level))
            for method, route, budget in _routes(rt)
            for level, v in _levels(budget, key)
        ]

    def db() -> Points:
        budgets = rt.budgets
        assert budgets is not None
        out: Points = []
        seen: set[tuple[str, str]] = set()
        for s in rt.inst.db_duration.series():
            if len(s.key) < 3 or (str(s.key[1]), str(s.key[2])) in seen:
                continue
            operation, table = str(s.key[1]), str(s.key[2])
            seen.add((operation, table))
            budget = budgets.db_lookup(operation, table)
            if budget is None:
                continue
            for q in ("p50", "p95", "p99"):
                out += [(v / 1000.0, (operation, table, q, level)) for level, v in _levels(budget, f"{q}_ms")]
        return out

    route = (n.A_ROUTE, n.A_METHOD)
    registry.gauge(n.BUDGET_DURATION, "s", "Latency budget per route and quantile.",
                   (*route, n.A_BUDGET_QUANTILE, n.A_BUDGET_LEVEL), durations)  # fmt: skip
    registry.gauge(n.BUDGET_ERROR_RATE, "1", "Server-error (5xx) rate budget per route.",
                   (*route, n.A_BUDGET_LEVEL), lambda: rates("error_rate"))  # fmt: skip
    registry.gauge(n.BUDGET_CLIENT_ERROR_RATE, "1", "Client-error (4xx) rate budget per route.",
                   (*route, n.A_BUDGET_LEVEL), lambda: rates("client_error_rate"))  # fmt: skip
    registry.gauge(n.BUDGET_QUERIES, "{query}", "Budget of SQL statements per request (p95) per route.",
                   (*route, n.A_BUDGET_LEVEL), lambda: rates("queries_per_request"))  # fmt: skip
    db_names = (n.A_DB_OPERATION, n.A_DB_COLLECTION, n.A_BUDGET_QUANTILE, n.A_BUDGET_LEVEL)
    registry.gauge(n.BUDGET_DB_DURATION, "s", "Statement latency budget per operation, table and quantile.",
                   db_names, db)  # fmt: skip
