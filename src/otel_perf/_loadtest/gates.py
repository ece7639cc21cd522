"""Budget gates for a load-test report: which routes broke which objective.

Every endpoint of the run that has a budget (:meth:`Budgets.lookup`, so unlisted routes are
held to the defaults) is checked: ``p50_ms``/``p95_ms``/``p99_ms`` against the latency on the
chosen side (``client``: what users saw, the default; ``server``: what the app's histogram
recorded, falling back to the client where the server has no numbers), ``error_rate`` (or
``1 - availability``) against the share of failed requests, ``min_rps`` against the
endpoint's throughput.  Budget routes the run never exercised are listed with the closest
endpoint names, since a typo there silently disables a gate.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from otel_perf._analysis.budgets import Budgets

__all__ = ["GateSide", "check_budgets"]

GateSide = Literal["client", "server"]


def check_budgets(report: dict[str, Any], budgets: Budgets, side: GateSide = "client") -> dict[str, Any]:
    """``{"checks": [...], "breaches": [...], "unexercised": [...], "side": side}`` for ``report``."""
    checks: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for ep in report["endpoints"]:
        method, route = ep["method"], ep["route"]
        seen.add((method, route))
        budget = budgets.lookup(method, route)
        if budget is None:
            continue
        numbers = ep["client"]
        used = "client"
        if side == "server" and ep.get("server") and ep["server"].get("p95_ms") is not None:
            numbers, used = ep["server"], "server"
        base = {"key": ep["key"], "method": method, "route": route, "tier": budget.tier,
                "listed": (method, route) in budgets.entries, "requests": ep["requests"]}
        for q, limit in budget.latency_ms().items():
            measured = numbers.get(f"{q}_ms")
            if measured is None:
                continue
            checks.append({**base, "objective": f"{q}_ms", "limit": limit, "measured": measured,
                           "side": used, "ok": measured <= limit})
        max_errors = budget.max_error_rate()
        if max_errors is not None:
            measured = ep["error_rate"]
            checks.append({**base, "objective": "error_rate", "limit": max_errors, "measured": measured,
                           "side": "client", "ok": measured <= max_errors})
        if budget.min_rps:
            checks.append({**base, "objective": "min_rps", "limit": budget.min_rps, "measured": ep["rps"],
                           "side": "client", "ok": ep["rps"] >= budget.min_rps})
    names = [f"{m} {r}" for m, r in sorted(seen)]
    unexercised = []
    for method, route, _ in budgets.routes():
        if (method, route) not in seen:
            close = difflib.get_close_matches(f"{method} {route}", names, n=1, cutoff=0.8)
            unexercised.append({"key": f"{method} {route}", "did_you_mean": close[0] if close else None})
    breaches = [c for c in checks if not c["ok"]]
    return {"side": side, "checks": checks, "breaches": breaches, "unexercised": unexercised,
            "source": budgets.source}


def render_breaches(gate: dict[str, Any]) -> list[str]:
    """The breach table as text lines (empty when all budgets held)."""
    rows = []
    for b in gate["breaches"]:
        if b["objective"] == "error_rate":
            limit, measured = f"{b['limit']:.2%}", f"{b['measured']:.2%}"
        elif b["objective"] == "min_rps":
            limit, measured = f"{b['limit']:g} req/s", f"{b['measured']:.1f} req/s"
        else:
            limit, measured = f"{b['limit']:g} ms", f"{b['measured']:.1f} ms"
        if b["objective"] == "min_rps":
            over = f"{(b['limit'] - b['measured']) / b['limit']:.0%} under" if b["limit"] else ""
        elif b["limit"]:
            over = f"+{(b['measured'] - b['limit']) / b['limit']:.0%}"
        else:
            over = "over"
        rows.append([b["key"], b["tier"], b["objective"], limit, measured, over, b["side"]])
    if not rows:
        return []
    header = ["route", "tier", "objective", "budget", "measured", "over", "side"]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines
