"""The performance summary behind the stats endpoint, the exit report and the demo.

Computed on demand from the same instruments the metrics exporters read, so it costs
the hot path nothing and agrees with the dashboards.  Percentiles are interpolated inside
the histogram bucket that holds them (clamped to the observed min/max), so they are
within one bucket of the exact value; budget thresholds are bucket bounds when budgets
are set, which makes "over budget or not" exact.

Health status rules (documented in the README):

* ``unhealthy``: an endpoint with at least ``MIN_REQUESTS`` requests has an error rate of
  5% or more, or a p95 at least twice its budget (or twice the slow-request threshold).
* ``degraded``: an endpoint has an error rate of 1% or more, a p95 over its budget (or
  over the slow-request threshold), the event loop was blocked in the last five minutes,
  or telemetry was dropped.
* ``healthy`` otherwise.
* ``no_requests`` when no request was recorded at all (with what is known about why).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from otel_perf._metrics.instruments import Histogram, HistogramSeries, Key

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

MIN_REQUESTS = 20


def percentile(bounds: Sequence[float], counts: Sequence[int], q: float, lo: float, hi: float) -> float:
    """The ``q`` quantile (0..1) of an explicit-bucket histogram, interpolated in its bucket."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count == 0:
            continue
        if seen + count >= rank:
            lower = bounds[i - 1] if i > 0 else min(lo, bounds[0]) if bounds else lo
            upper = bounds[i] if i < len(bounds) else hi
            lower = max(lower, lo) if math.isfinite(lo) else lower
            upper = min(upper, hi) if math.isfinite(hi) else upper
            upper = max(upper, lower)
            fraction = (rank - seen) / count
            return lower + (upper - lower) * fraction
        seen += count
    return hi


class _Merged:
    """Series of one histogram merged over the attributes we do not group by."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.buckets = [0] * width

    def add(self, s: HistogramSeries, base: HistogramSeries | None) -> None:
        count = s.count - (base.count if base else 0)
        if count <= 0:
            return
        self.count += count
        self.sum += s.sum - (base.sum if base else 0.0)
        # min/max survive a reset only approximately; the bounds clamp them anyway.
        self.min = min(self.min, s.min)
        self.max = max(self.max, s.max)
        for i, c in enumerate(s.bucket_counts):
            self.buckets[i] += c - (base.bucket_counts[i] if base else 0)

    def quantile_ms(self, bounds: Sequence[float], q: float) -> float:
        return round(percentile(bounds, self.buckets, q, self.min, self.max) * 1000.0, 3)


class Baseline:
    """What the instruments held at the last ``reset``; the summary subtracts it."""

    def __init__(self) -> None:
        self.at = time.time()
        self.histograms: dict[str, dict[Key, HistogramSeries]] = {}
        self.counters: dict[str, dict[Key, float]] = {}

    @classmethod
    def capture(cls, rt: Runtime) -> Baseline:
        b = cls()
        for h in (
            rt.inst.server_duration,
            rt.inst.queries_per_request,
            rt.inst.db_duration,
            rt.inst.client_duration,
            rt.inst.loop_lag,
            rt.inst.job_duration,
            rt.inst.job_queue_wait,
            rt.inst.job_queries,
        ):
            b.histograms[h.name] = {s.key: s for s in h.series()}
        for c in (
            rt.inst.slow_requests,
            rt.inst.n_plus_one,
            rt.inst.throttled,
            rt.inst.slow_queries,
            rt.inst.cache_operations,
        ):
            b.counters[c.name] = c.values()
        return b


def _group(h: Histogram, base: Baseline | None, key_of: Any) -> dict[Any, _Merged]:
    previous = base.histograms.get(h.name, {}) if base else {}
    out: dict[Any, _Merged] = {}
    for s in h.series():
        group = key_of(s.key)
        merged = out.get(group)
        if merged is None:
            merged = out[group] = _Merged(len(h.bounds) + 1)
        merged.add(s, previous.get(s.key))
    return out


def _counter(rt_counter: Any, base: Baseline | None) -> dict[Key, float]:
    previous = base.counters.get(rt_counter.name, {}) if base else {}
    return {k: v - previous.get(k, 0) for k, v in rt_counter.values().items()}


def summary(rt: Runtime, base: Baseline | None = None) -> dict[str, Any]:
    """Everything the stats endpoint returns (JSON-ready)."""
    now = time.time()
    since = max(base.at if base else rt.started, rt.started)
    minutes = max((now - since) / 60.0, 1 / 60.0)
    inst = rt.inst
    bounds = inst.server_duration.bounds

    durations = _group(inst.server_duration, base, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    errors = _group(
        inst.server_duration,
        base,
        lambda k: (
            (k[0], k[1], bool(k[3]) or (isinstance(k[2], int) and k[2] >= 500))
            if len(k) > 3
            else ("", "", False)
        ),
    )
    queries = _group(inst.queries_per_request, base, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    slow = _counter(inst.slow_requests, base)
    n1 = _counter(inst.n_plus_one, base)

    endpoints = []
    for (route, method), m in sorted(durations.items(), key=lambda kv: (-kv[1].count, str(kv[0]))):
        if m.count <= 0:
            continue
        err = errors.get((route, method, True))
        err_count = err.count if err else 0
        q = queries.get((route, method))
        entry: dict[str, Any] = {
            "route": route or "(unmatched)",
            "method": method,
            "count": m.count,
            "requests_per_minute": round(m.count / minutes, 2),
            "errors": err_count,
            "error_rate": round(err_count / m.count, 4),
            "mean_ms": round(m.sum / m.count * 1000.0, 3),
            "p50_ms": m.quantile_ms(bounds, 0.50),
            "p95_ms": m.quantile_ms(bounds, 0.95),
            "p99_ms": m.quantile_ms(bounds, 0.99),
            "max_ms": round(m.max * 1000.0, 3) if math.isfinite(m.max) else 0.0,
            "mean_queries": round(q.sum / q.count, 2) if q and q.count else 0.0,
            "slow_count": int(slow.get((route, method), 0)),
            "n_plus_one_count": int(n1.get((route, method), 0)),
        }
        if rt.budgets is not None:
            entry["budget"] = _budget_check(rt, method, route, entry)
        endpoints.append(entry)

    db_ops = _group(inst.db_duration, base, lambda k: (k[0], k[1], k[2]) if len(k) > 2 else ("", "", ""))
    database = [
        {
            "system": system,
            "operation": op or "(other)",
            "collection": table,
            "count": m.count,
            "mean_ms": round(m.sum / m.count * 1000.0, 3),
            "p95_ms": m.quantile_ms(inst.db_duration.bounds, 0.95),
            "total_ms": round(m.sum * 1000.0, 3),
        }
        for (system, op, table), m in sorted(db_ops.items(), key=lambda kv: -kv[1].sum)
        if m.count > 0
    ]

    outgoing = _outgoing(rt, base)
    lag = _group(inst.loop_lag, base, lambda k: ())
    lag_m = lag.get(())
    findings = rt.findings.as_dict()
    out: dict[str, Any] = {
        "service": rt.resource.attributes.get("service.name", ""),
        "instance": rt.resource.attributes.get("service.instance.id", ""),
        "uptime_seconds": round(now - rt.started, 3),
        "window_seconds": round(now - since, 3),
        "thresholds": {
            "slow_request_ms": rt.slow_request_s * 1000.0,
            "slow_query_ms": rt.slow_query_s * 1000.0,
            "n_plus_one": rt.n_plus_one_threshold,
        },
        "endpoints": endpoints,
        "database": database,
        "outgoing": outgoing,
        "event_loop": {
            "lag_p99_ms": lag_m.quantile_ms(inst.loop_lag.bounds, 0.99) if lag_m else 0.0,
            "samples": lag_m.count if lag_m else 0,
            "blocks": len(findings["event_loop_blocks"]),
        },
        "findings": findings,
        "telemetry": rt.health.snapshot() if rt.health is not None else {},
    }
    out["jobs"] = jobs_section(rt, base, minutes)
    out["caches"] = caches_section(rt, base)
    if endpoints:
        status, reasons = health(rt, endpoints, findings, out["telemetry"])
    elif out["jobs"]:
        status, reasons = job_health(out["jobs"], findings, out["telemetry"])
    else:
        status, reasons = NO_REQUESTS, why_no_requests(rt)
    out["status"], out["status_reasons"] = cache_health(status, reasons, out["caches"])
    return out


# --- background jobs and caches (Celery workers, BackgroundTasks, Redis) ---------------------

#: A cache is judged against its hit-ratio floor only after this many reads in the window.
MIN_CACHE_READS = 20


def jobs_section(rt: Runtime, base: Baseline | None, minutes: float) -> list[dict[str, Any]]:
    """Per job (system, name): runs, failures, duration percentiles, queue wait, queries per run."""
    inst = rt.inst
    bounds = inst.job_duration.bounds
    runs = _group(inst.job_duration, base, lambda k: (k[0], k[1]) if len(k) > 2 else ("", ""))
    failed = _group(
        inst.job_duration, base, lambda k: (k[0], k[1], bool(k[2])) if len(k) > 2 else ("", "", False)
    )
    waits = _group(inst.job_queue_wait, base, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    queries = _group(inst.job_queries, base, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    n1 = _counter(inst.n_plus_one, base)
    out = []
    for (system, name), m in sorted(runs.items(), key=lambda kv: (-kv[1].count, str(kv[0]))):
        if m.count <= 0:
            continue
        err = failed.get((system, name, True))
        errors = err.count if err else 0
        entry: dict[str, Any] = {
            "system": system,
            "name": name,
            "count": m.count,
            "runs_per_minute": round(m.count / minutes, 2),
            "errors": errors,
            "error_rate": round(errors / m.count, 4),
            "mean_ms": round(m.sum / m.count * 1000.0, 3),
            "p50_ms": m.quantile_ms(bounds, 0.50),
            "p95_ms": m.quantile_ms(bounds, 0.95),
            "p99_ms": m.quantile_ms(bounds, 0.99),
            "max_ms": round(m.max * 1000.0, 3) if math.isfinite(m.max) else 0.0,
            "n_plus_one_count": int(n1.get((name, system), 0)),
        }
        q = queries.get((system, name))
        entry["mean_queries"] = round(q.sum / q.count, 2) if q and q.count else 0.0
        w = waits.get((system, name))
        if w is not None and w.count > 0:
            entry["queue_wait_p50_ms"] = w.quantile_ms(inst.job_queue_wait.bounds, 0.50)
            entry["queue_wait_p95_ms"] = w.quantile_ms(inst.job_queue_wait.bounds, 0.95)
        out.append(entry)
    return out


def caches_section(rt: Runtime, base: Baseline | None) -> list[dict[str, Any]]:
    """Per cache (system, name): hits, misses, hit ratio, the floor and whether it is below."""
    from otel_perf._core.caches import HIT, hit_ratio_floor

    floor = hit_ratio_floor(rt)
    totals: dict[tuple[str, str], list[float]] = {}
    for key, value in _counter(rt.inst.cache_operations, base).items():
        if len(key) != 3:  # the overflow series
            continue
        cache = totals.setdefault((str(key[0]), str(key[1])), [0.0, 0.0])
        cache[0 if key[2] == HIT else 1] += value
    out = []
    for (system, name), (hits, misses) in sorted(totals.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
        reads = hits + misses
        if reads <= 0:
            continue
        ratio = hits / reads
        out.append(
            {
                "system": system,
                "name": name,
                "hits": int(hits),
                "misses": int(misses),
                "hit_ratio": round(ratio, 4),
                "floor": floor,
                "below_floor": bool(floor > 0 and reads >= MIN_CACHE_READS and ratio < floor),
            }
        )
    return out


def job_health(
    jobs: list[dict[str, Any]], findings: dict[str, Any], telemetry: dict[str, Any]
) -> tuple[str, list[str]]:
    """A process that ran jobs and served no request (a worker): judged by its jobs' failures."""
    unhealthy: list[str] = []
    degraded: list[str] = []
    for job in jobs:
        if job["count"] < MIN_REQUESTS:
            continue
        name = f"{job['system']} job {job['name']}"
        if job["error_rate"] >= 0.05:
            unhealthy.append(f"{name}: failure rate {job['error_rate']:.1%}")
        elif job["error_rate"] >= 0.01:
            degraded.append(f"{name}: failure rate {job['error_rate']:.1%}")
    recent = [b for b in findings["event_loop_blocks"] if time.time() - b["at"] < 300]
    if recent:
        degraded.append(f"event loop blocked {len(recent)} time(s) in the last 5 minutes")
    dropped = sum(v.get("dropped", 0) for v in telemetry.values()) if telemetry else 0
    if dropped:
        degraded.append(f"{int(dropped)} telemetry item(s) dropped")
    if unhealthy:
        return "unhealthy", unhealthy + degraded
    if degraded:
        return "degraded", degraded
    return "healthy", []


def cache_health(status: str, reasons: list[str], caches: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A cache below its hit-ratio floor makes a healthy process degraded (and says which)."""
    low = [
        f"cache {c['name']} ({c['system']}): hit ratio {c['hit_ratio']:.1%} below {c['floor']:.0%}"
        for c in caches
        if c["below_floor"]
    ]
    if not low or status == NO_REQUESTS:
        return status, reasons
    return ("degraded" if status == "healthy" else status), [*reasons, *low]


def _budget_check(rt: Runtime, method: str, route: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    assert rt.budgets is not None
    budget = rt.budgets.lookup(method, route)
    if budget is None:
        return None
    result: dict[str, Any] = {"tier": getattr(budget, "tier", "")}
    ok = True
    for q in ("p50", "p95", "p99"):
        limit = getattr(budget, f"{q}_ms", None)
        if limit is not None:
            result[f"{q}_ms"] = limit
            passed = entry[f"{q}_ms"] <= limit
            result[f"{q}_ok"] = passed
            ok = ok and passed
    limit_err = getattr(budget, "error_rate", None)
    if limit_err is not None:
        result["error_rate"] = limit_err
        result["error_rate_ok"] = entry["error_rate"] <= limit_err
        ok = ok and result["error_rate_ok"]
    result["ok"] = ok
    return result


def _outgoing(rt: Runtime, base: Baseline | None) -> list[dict[str, Any]]:
    inst = rt.inst
    per_host = _group(inst.client_duration, base, lambda k: k[0] if k else "")
    errors = _group(
        inst.client_duration,
        base,
        lambda k: (
            (k[0], bool(k[3]) or (isinstance(k[2], int) and k[2] >= 500)) if len(k) > 3 else ("", False)
        ),
    )
    throttled = _counter(inst.throttled, base)
    remaining, limit, reset = (
        inst.ratelimit_remaining.values(),
        inst.ratelimit_limit.values(),
        inst.ratelimit_reset.values(),
    )
    out = []
    for host, m in sorted(per_host.items(), key=lambda kv: -kv[1].count):
        if m.count <= 0:
            continue
        err = errors.get((host, True))
        err_count = err.count if err else 0
        entry: dict[str, Any] = {
            "host": host,
            "count": m.count,
            "errors": err_count,
            "error_rate": round(err_count / m.count, 4),
            "throttled": int(throttled.get((host,), 0)),
            "p50_ms": m.quantile_ms(inst.client_duration.bounds, 0.5),
            "p95_ms": m.quantile_ms(inst.client_duration.bounds, 0.95),
        }
        rl = {
            name: values[(host,)]
            for name, values in (("remaining", remaining), ("limit", limit), ("reset_seconds", reset))
            if (host,) in values
        }
        if rl:
            entry["ratelimit"] = rl
        out.append(entry)
    return out


#: The status when nothing was recorded: no verdict, rather than a "healthy" nobody earned.
NO_REQUESTS = "no_requests"


def why_no_requests(rt: Runtime) -> list[str]:
    """What is known about why no request was recorded."""
    reasons = ["no requests recorded", *rt.notes]
    if not rt.apps:
        reasons.append(
            "no app of a framework we instrument was built in this process "
            "(the server log says whether the app loaded; `otel-perf config` lists what we instrument)"
        )
    return reasons


def health(
    rt: Runtime, endpoints: list[dict[str, Any]], findings: dict[str, Any], telemetry: dict[str, Any]
) -> tuple[str, list[str]]:
    """Apply the documented health rules; return (status, reasons)."""
    unhealthy: list[str] = []
    degraded: list[str] = []
    slow_ms = rt.slow_request_s * 1000.0
    for e in endpoints:
        name = f"{e['method']} {e['route']}"
        if e["count"] >= MIN_REQUESTS:
            if e["error_rate"] >= 0.05:
                unhealthy.append(f"{name}: error rate {e['error_rate']:.1%}")
            elif e["error_rate"] >= 0.01:
                degraded.append(f"{name}: error rate {e['error_rate']:.1%}")
        budget = e.get("budget") or {}
        limit = budget.get("p95_ms") or slow_ms
        if e["p95_ms"] >= 2 * limit and e["count"] >= MIN_REQUESTS:
            unhealthy.append(f"{name}: p95 {e['p95_ms']:.0f} ms is at least twice {limit:.0f} ms")
        elif e["p95_ms"] > limit:
            degraded.append(f"{name}: p95 {e['p95_ms']:.0f} ms over {limit:.0f} ms")
    recent = [b for b in findings["event_loop_blocks"] if time.time() - b["at"] < 300]
    if recent:
        degraded.append(f"event loop blocked {len(recent)} time(s) in the last 5 minutes")
    dropped = sum(v.get("dropped", 0) for v in telemetry.values()) if telemetry else 0
    if dropped:
        degraded.append(f"{int(dropped)} telemetry item(s) dropped")
    if unhealthy:
        return "unhealthy", unhealthy + degraded
    if degraded:
        return "degraded", degraded
    return "healthy", []
