"""Budget gates for a load-test report: which routes broke which objective, at which level.

Every endpoint of the run that has a budget (:meth:`Budgets.lookup`, so unlisted routes are
held to the defaults) is checked: ``p50_ms``/``p95_ms``/``p99_ms`` against the latency on the
chosen side (``client``: what users saw, the default; ``server``: what the app's histogram
recorded, falling back to the client where the server has no numbers), ``error_rate`` (or
``1 - availability``) against the share of failed requests, ``client_error_rate`` against the
share answered 4xx (as the load generator saw them), ``min_rps`` against the endpoint's
throughput, and ``queries_per_request`` against the p95 of SQL statements per request the
app counted (server side only: it needs the stats endpoint).  Database operations the app
reported are checked against the ``db`` budgets (server side).  Each check has a ``level``:
``ok``, ``over`` (past the target) or ``critical`` (past the critical level); ``fail_on``
chooses which of them fail the gate.  Budget routes the run never exercised are listed with
the closest endpoint names, since a typo there silently disables a gate.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from otel_perf._analysis.budgets import Budgets

__all__ = ["FailOn", "GateSide", "check_budgets", "render_breaches"]

GateSide = Literal["client", "server"]
FailOn = Literal["target", "critical"]
#: Objectives where a higher measured value is better (a floor).
_FLOORS = ("min_rps",)


def _level(measured: float, target: float, critical: float | None, floor: bool) -> str:
    def past(limit: float) -> bool:
        return measured < limit if floor else measured > limit

    if critical is not None and past(critical):
        return "critical"
    return "over" if past(target) else "ok"


def _client_error_rate(ep: dict[str, Any]) -> float:
    statuses = ep.get("statuses") or {}
    four = sum(int(n) for status, n in statuses.items() if str(status).isdigit() and 400 <= int(status) < 500)
    return round(four / ep["requests"], 6) if ep.get("requests") else 0.0


def check_budgets(
    report: dict[str, Any], budgets: Budgets, side: GateSide = "client", fail_on: FailOn = "target"
) -> dict[str, Any]:
    """``{"checks", "breaches", "unexercised", "side", "fail_on", "notes"}`` for ``report``."""
    checks: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[tuple[str, str]] = set()

    def check(base: dict[str, Any], objective: str, budget: Any, measured: float | None, used: str) -> None:
        target, critical = budget.levels(objective)
        if target is None or measured is None:
            return
        level = _level(measured, target, critical, objective in _FLOORS)
        checks.append({**base, "objective": objective, "limit": target, "critical": critical,
                       "measured": measured, "side": used, "level": level, "ok": level == "ok"})

    for ep in report["endpoints"]:
        method, route = ep["method"], ep["route"]
        seen.add((method, route))
        budget = budgets.lookup(method, route)
        if budget is None:
            continue
        numbers = ep["client"]
        used = "client"
        server = ep.get("server") or {}
        if side == "server" and server.get("p95_ms") is not None:
            numbers, used = server, "server"
        base = {"key": ep["key"], "method": method, "route": route, "tier": budget.tier,
                "listed": (method, route) in budgets.entries, "requests": ep["requests"]}
        for q in budget.latency_ms():
            check(base, f"{q}_ms", budget, numbers.get(f"{q}_ms"), used)
        check(base, "error_rate", budget, ep["error_rate"], "client")
        check(base, "client_error_rate", budget, _client_error_rate(ep), "client")
        if budget.min_rps:
            check(base, "min_rps", budget, ep["rps"], "client")
        if budget.queries_per_request is not None:
            if server.get("p95_queries") is None:
                notes.append(f"{ep['key']}: queries_per_request not checked: the app's stats endpoint "
                             "counts queries (pass --stats-token)")  # fmt: skip
            check(base, "queries_per_request", budget, server.get("p95_queries"), "server")
    for d in report.get("server_database") or []:
        db_budget = budgets.db_lookup(str(d.get("operation", "")), str(d.get("collection", "")))
        if db_budget is None:
            continue
        base = {"key": f"{d['operation']} {d['collection']}".strip(), "method": "", "route": "",
                "tier": "db", "listed": True, "requests": d.get("count", 0)}
        for q in db_budget.latency_ms():
            check(base, f"{q}_ms", db_budget, d.get(f"{q}_ms"), "server")
    names = [f"{m} {r}" for m, r in sorted(seen)]
    unexercised = []
    for method, route, _ in budgets.routes():
        if (method, route) not in seen:
            close = difflib.get_close_matches(f"{method} {route}", names, n=1, cutoff=0.8)
            unexercised.append({"key": f"{method} {route}", "did_you_mean": close[0] if close else None})
    failing = ("critical",) if fail_on == "critical" else ("over", "critical")
    breaches = [c for c in checks if c["level"] in failing]
    return {"side": side, "fail_on": fail_on, "checks": checks, "breaches": breaches,
            "unexercised": unexercised, "source": budgets.source, "notes": notes}


def _shown(objective: str, value: float) -> str:
    if objective in ("error_rate", "client_error_rate"):
        return f"{value:.2%}"
    if objective == "min_rps":
        return f"{value:g} req/s"
    if objective == "queries_per_request":
        return f"{value:g} queries"
    return f"{value:g} ms" if isinstance(value, int) or float(value).is_integer() else f"{value:.1f} ms"


def render_breaches(gate: dict[str, Any]) -> list[str]:
    """The breach table as text lines (empty when all budgets held)."""
    rows = []
    for b in gate["breaches"]:
        objective = b["objective"]
        limit = _shown(objective, b["limit"])
        if b.get("critical") is not None:
            limit += f" (critical {_shown(objective, b['critical'])})"
        measured = _shown(objective, b["measured"])
        if objective == "min_rps":
            over = f"{(b['limit'] - b['measured']) / b['limit']:.0%} under" if b["limit"] else ""
        elif b["limit"]:
            over = f"+{(b['measured'] - b['limit']) / b['limit']:.0%}"
        else:
            over = "over"
        level = "CRITICAL" if b.get("level") == "critical" else "over"
        rows.append([b["key"], b["tier"], objective, limit, measured, over, level, b["side"]])
    if not rows:
        return []
    header = ["route", "tier", "objective", "budget", "measured", "over", "level", "side"]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines
