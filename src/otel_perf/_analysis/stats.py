"""The performance summary behind the stats endpoint, the exit report, ``otel-perf stats`` and the demo.

Computed on demand from a :class:`~otel_perf._analysis.snapshot.Snapshot` of the same
instruments the metrics exporters read (one process, or every worker of a server merged), so
it costs the hot path nothing and agrees with the dashboards.  Percentiles are interpolated
inside the histogram bucket that holds them (clamped to the observed min/max), so they are
within one bucket of the exact value; budget thresholds are bucket bounds when budgets are
set, which makes "over budget or not" exact.

Requests are counted three ways per endpoint: all of them, **server errors** (5xx, or an
exception that escaped the app: ``errors``/``error_rate``) and **client errors** (4xx:
``client_errors``/``client_error_rate``).

Health rules (documented in the README), each an entry of ``alerts`` with a severity;
``critical`` makes the status ``unhealthy``, ``warning`` ``degraded``:

* server error rate of an endpoint with at least ``MIN_REQUESTS`` requests: critical from 5%
  (or over its budget's critical ``error_rate``), warning from 1% (or over its ``error_rate``);
* client error rate (4xx) of a matched route with at least ``MIN_REQUESTS`` requests: warning
  from 25%, or over its budget's ``client_error_rate``; critical over the critical level;
* latency: a quantile over its budget is a warning, over the budget's critical level (or, for
  p95 without one, twice the budget) with at least ``MIN_REQUESTS`` requests critical; routes
  without a p95 budget are held to the slow-request threshold the same way;
* queries per request (p95) over the budget's ``queries_per_request``: warning; critical level: critical;
* a database operation's latency over its ``db`` budget: warning; critical level: critical;
* the event loop blocked in the last five minutes, telemetry dropped: warning.

``status`` is ``no_requests`` when no request was recorded at all (with what is known about why).
``score`` (0-100) is the Apdex of the window times 100: a request that did not fail is
satisfied at or under T, tolerated up to 4T, where T is its route's p95 budget, else a quarter
of the slow-request threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from otel_perf import _names as n
from otel_perf._analysis.snapshot import Series, Snapshot
from otel_perf._metrics.instruments import Key

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

MIN_REQUESTS = 20
#: The client-error share of a route that is a warning when its budget sets none.
CLIENT_ERROR_WARNING = 0.25
#: The status when nothing was recorded: no verdict, rather than a "healthy" nobody earned.
NO_REQUESTS = "no_requests"
UNMATCHED = "(unmatched)"
FINDING_KINDS = ("slow_requests", "slow_queries", "n_plus_one", "event_loop_blocks")


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
            lower, upper = _edges(bounds, i, lo, hi)
            fraction = (rank - seen) / count
            return lower + (upper - lower) * fraction
        seen += count
    return hi


def _edges(bounds: Sequence[float], i: int, lo: float, hi: float) -> tuple[float, float]:
    lower = bounds[i - 1] if i > 0 else min(lo, bounds[0]) if bounds else lo
    upper = bounds[i] if i < len(bounds) else hi
    lower = max(lower, lo) if math.isfinite(lo) else lower
    upper = min(upper, hi) if math.isfinite(hi) else upper
    return lower, max(upper, lower)


def count_at_most(bounds: Sequence[float], counts: Sequence[int], x: float, lo: float, hi: float) -> float:
    """How many measurements are at most ``x`` (exact at a bucket bound, interpolated inside a bucket)."""
    total = 0.0
    for i, count in enumerate(counts):
        if count == 0:
            continue
        lower, upper = _edges(bounds, i, lo, hi)
        if upper <= x:
            total += count
        elif lower < x:
            total += count * (x - lower) / (upper - lower) if upper > lower else count
    return total


class _Merged:
    """Series of one histogram merged over the attributes we do not group by."""

    def __init__(self, width: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.buckets = [0] * width

    def add(self, s: Series) -> None:
        count = s.count
        if count <= 0:
            return
        self.count += count
        self.sum += s.sum
        self.min = min(self.min, s.min)
        self.max = max(self.max, s.max)
        for i, c in enumerate(s.buckets):
            self.buckets[i] += c

    def quantile(self, bounds: Sequence[float], q: float) -> float:
        return percentile(bounds, self.buckets, q, self.min, self.max)

    def quantile_ms(self, bounds: Sequence[float], q: float) -> float:
        return round(self.quantile(bounds, q) * 1000.0, 3)

    def at_most(self, bounds: Sequence[float], x: float) -> float:
        return count_at_most(bounds, self.buckets, x, self.min, self.max)


class _View:
    """One window of a snapshot, grouped the ways the summary needs."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def bounds(self, name: str) -> tuple[float, ...]:
        return self.snap.bounds.get(name, ())

    def group(self, name: str, key_of: Callable[[Key], Any]) -> dict[Any, _Merged]:
        width = len(self.bounds(name)) + 1
        out: dict[Any, _Merged] = {}
        for key, s in self.snap.histograms.get(name, {}).items():
            group = key_of(key)
            merged = out.get(group)
            if merged is None:
                merged = out[group] = _Merged(width)
            merged.add(s)
        return out

    def counter(self, name: str) -> dict[Key, float]:
        return self.snap.counters.get(name, {})

    def gauge(self, name: str) -> dict[Key, float]:
        return self.snap.gauges.get(name, {})


def _is_server_error(status: Any, error_type: Any) -> bool:
    return bool(error_type) or (isinstance(status, int) and status >= 500)


def _outcome(key: Key) -> tuple[Any, Any, str]:
    """(route, method, "server" | "client" | "ok") of a request-duration key."""
    if len(key) < 4:
        return ("", "", "ok")
    route, method, status, error_type = key[0], key[1], key[2], key[3]
    if _is_server_error(status, error_type):
        return (route, method, "server")
    if isinstance(status, int) and 400 <= status < 500:
        return (route, method, "client")
    return (route, method, "ok")


def summary(
    rt: Runtime,
    base: Snapshot | None = None,
    *,
    snapshot: Snapshot | None = None,
    top: int | None = None,
    since: float | None = None,
) -> dict[str, Any]:
    """Everything the stats endpoint returns (JSON-ready).

    ``snapshot``: what to summarize (default: this process, now); ``base``: subtracted from
    it (a reset, or the start of a ``?minutes=`` window); ``since``: when the window starts,
    when ``snapshot`` is one already; ``top``: only the N slowest endpoints (by p95) and
    operations, and the N database operations with the most time.
    """
    snap = snapshot if snapshot is not None else Snapshot.capture(rt)
    window = snap.minus(base)
    now = snap.at
    if since is None:
        since = max(base.at if base is not None else snap.started, snap.started)
    minutes = max((now - since) / 60.0, 1 / 60.0)
    view = _View(window)
    budgets = rt.budgets

    duration = n.HTTP_SERVER_DURATION
    bounds = view.bounds(duration)
    by_endpoint = view.group(duration, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    outcomes = view.group(duration, _outcome)
    queries = view.group(n.QUERIES_PER_REQUEST, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    query_bounds = view.bounds(n.QUERIES_PER_REQUEST)
    slow = view.counter(n.SLOW_REQUESTS)
    n1 = view.counter(n.N_PLUS_ONE)

    endpoints: list[dict[str, Any]] = []
    satisfied = tolerating = requests_total = 0.0
    for (route, method), m in by_endpoint.items():
        if m.count <= 0:
            continue
        server = outcomes.get((route, method, "server"))
        client = outcomes.get((route, method, "client"))
        err_count = server.count if server else 0
        client_count = client.count if client else 0
        q = queries.get((route, method))
        entry: dict[str, Any] = {
            "route": route or UNMATCHED,
            "method": method,
            "count": m.count,
            "requests_per_minute": round(m.count / minutes, 2),
            "errors": err_count,
            "error_rate": round(err_count / m.count, 4),
            "client_errors": client_count,
            "client_error_rate": round(client_count / m.count, 4),
            "mean_ms": round(m.sum / m.count * 1000.0, 3),
            "min_ms": round(m.min * 1000.0, 3) if math.isfinite(m.min) else 0.0,
            "p50_ms": m.quantile_ms(bounds, 0.50),
            "p95_ms": m.quantile_ms(bounds, 0.95),
            "p99_ms": m.quantile_ms(bounds, 0.99),
            "max_ms": round(m.max * 1000.0, 3) if math.isfinite(m.max) else 0.0,
            "mean_queries": round(q.sum / q.count, 2) if q and q.count else 0.0,
            "p95_queries": round(q.quantile(query_bounds, 0.95), 2) if q and q.count else 0.0,
            "slow_count": int(slow.get((route, method), 0)),
            "n_plus_one_count": int(n1.get((route, method), 0)),
        }
        budget = budgets.lookup(method, route) if budgets is not None else None
        if budget is not None:
            entry["budget"] = _budget_check(budget, entry)
        # Apdex: requests that did not fail, at or under T satisfied, up to 4T tolerated.
        t = (budget.p95_ms / 1000.0) if budget is not None and budget.p95_ms else rt.slow_request_s / 4
        good = _Merged(len(bounds) + 1)
        for outcome in ("ok", "client"):
            part = outcomes.get((route, method, outcome))
            if part is not None:
                good.buckets = [a + b for a, b in zip(good.buckets, part.buckets, strict=False)]
                good.min, good.max = min(good.min, part.min), max(good.max, part.max)
        sat = good.at_most(bounds, t)
        satisfied += sat
        tolerating += good.at_most(bounds, 4 * t) - sat
        requests_total += m.count
        endpoints.append(entry)
    endpoints.sort(key=lambda e: (-e["count"], e["route"], e["method"]))
    if top is not None:
        endpoints = sorted(endpoints, key=lambda e: (-e["p95_ms"], -e["count"]))[:top]

    database = _database(view, budgets)
    operations = _operations(view, minutes)
    if top is not None:
        database = database[:top]
        operations = sorted(operations, key=lambda o: -o["p95_ms"])[:top]
    outgoing = _outgoing(view)
    lag = view.group(n.LOOP_LAG, lambda k: ()).get(())
    findings = window.findings or {kind: [] for kind in FINDING_KINDS}
    total_requests = int(requests_total)
    total_errors = sum(m.count for (_, _, o), m in outcomes.items() if o == "server")
    total_client = sum(m.count for (_, _, o), m in outcomes.items() if o == "client")
    out: dict[str, Any] = {
        "service": rt.resource.attributes.get("service.name", ""),
        "instance": rt.resource.attributes.get("service.instance.id", ""),
        "uptime_seconds": round(now - snap.started, 3),
        "window_seconds": round(now - since, 3),
        "thresholds": {
            "slow_request_ms": rt.slow_request_s * 1000.0,
            "slow_query_ms": rt.slow_query_s * 1000.0,
            "n_plus_one": rt.n_plus_one_threshold,
        },
        "totals": {
            "requests": total_requests,
            "requests_per_minute": round(total_requests / minutes, 2),
            "errors": total_errors,
            "error_rate": round(total_errors / total_requests, 4) if total_requests else 0.0,
            "client_errors": total_client,
            "client_error_rate": round(total_client / total_requests, 4) if total_requests else 0.0,
        },
        "endpoints": endpoints,
        "database": database,
        "operations": operations,
        "outgoing": outgoing,
        "event_loop": {
            "lag_p99_ms": lag.quantile_ms(view.bounds(n.LOOP_LAG), 0.99) if lag else 0.0,
            "samples": lag.count if lag else 0,
            "blocks": len(findings.get("event_loop_blocks", [])),
        },
        "findings": findings,
        "telemetry": window.telemetry,
        "processes": len(snap.processes),
    }
    out["jobs"] = jobs_section(view, minutes)
    out["caches"] = caches_section(rt, view)
    alerts: list[dict[str, Any]] = []
    if endpoints or operations:
        alerts = health_alerts(rt, endpoints, database, findings, window.telemetry)
        status, reasons = status_of(alerts)
    elif out["jobs"]:
        status, reasons = job_health(out["jobs"], findings, window.telemetry)
    else:
        status, reasons = NO_REQUESTS, why_no_requests(rt, window)
    out["status"], out["status_reasons"] = cache_health(status, reasons, out["caches"])
    out["alerts"] = alerts
    out["score"] = round(100.0 * (satisfied + tolerating / 2) / requests_total) if requests_total else None
    return out


# --- background jobs and caches (Celery workers, BackgroundTasks, Redis) ---------------------

#: A cache is judged against its hit-ratio floor only after this many reads in the window.
MIN_CACHE_READS = 20
#: ``error.type`` of a job run that asked to be retried
RETRY = "Retry"


def _job_outcome(key: tuple[Any, ...]) -> tuple[Any, Any, str]:
    """(system, name, "" | "failed" | "retry") of a job duration series."""
    if len(key) <= 2:
        return "", "", ""
    return key[0], key[1], "retry" if key[2] == RETRY else "failed" if key[2] else ""


def jobs_section(view: _View, minutes: float) -> list[dict[str, Any]]:
    """Per job (system, name): runs, failures, duration percentiles, queue wait, queries per run."""
    bounds = view.bounds(n.JOB_DURATION)
    runs = view.group(n.JOB_DURATION, lambda k: (k[0], k[1]) if len(k) > 2 else ("", ""))
    # A retried run (error.type "Retry": Celery's self.retry()) is neither a success nor a
    # failure: the task runs again; counted apart, so routine retries do not fail the worker.
    outcome = view.group(n.JOB_DURATION, _job_outcome)
    waits = view.group(n.JOB_QUEUE_WAIT, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    queries = view.group(n.JOB_QUERIES, lambda k: (k[0], k[1]) if len(k) > 1 else ("", ""))
    n1 = view.counter(n.N_PLUS_ONE)
    out = []
    for (system, name), m in sorted(runs.items(), key=lambda kv: (-kv[1].count, str(kv[0]))):
        if m.count <= 0:
            continue
        err = outcome.get((system, name, "failed"))
        retried = outcome.get((system, name, "retry"))
        errors = err.count if err else 0
        entry: dict[str, Any] = {
            "system": system,
            "name": name,
            "count": m.count,
            "runs_per_minute": round(m.count / minutes, 2),
            "errors": errors,
            "error_rate": round(errors / m.count, 4),
            "retries": retried.count if retried else 0,
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
            entry["queue_wait_p50_ms"] = w.quantile_ms(view.bounds(n.JOB_QUEUE_WAIT), 0.50)
            entry["queue_wait_p95_ms"] = w.quantile_ms(view.bounds(n.JOB_QUEUE_WAIT), 0.95)
        out.append(entry)
    return out


def caches_section(rt: Runtime, view: _View) -> list[dict[str, Any]]:
    """Per cache (system, name): hits, misses, hit ratio, the floor and whether it is below."""
    from otel_perf._core.caches import HIT, hit_ratio_floor

    floor = hit_ratio_floor(rt)
    totals: dict[tuple[str, str], list[float]] = {}
    for key, value in view.counter(n.CACHE_OPERATIONS).items():
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
    recent = [b for b in findings.get("event_loop_blocks", []) if time.time() - b["at"] < 300]
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


def _level(measured: float, target: float | None, critical: float | None, floor: bool = False) -> str:
    """"ok", "over" (past the target) or "critical" (past the critical level)."""
    def past(limit: float) -> bool:
        return measured < limit if floor else measured > limit

    if critical is not None and past(critical):
        return "critical"
    if target is not None and past(target):
        return "over"
    return "ok"


#: (objective, the entry's measured field) the verdict of an endpoint checks.
_ENDPOINT_OBJECTIVES = (
    ("p50_ms", "p50_ms"),
    ("p95_ms", "p95_ms"),
    ("p99_ms", "p99_ms"),
    ("error_rate", "error_rate"),
    ("client_error_rate", "client_error_rate"),
    ("queries_per_request", "p95_queries"),
)


#: The verdict's key saying whether each objective held.
_OK_KEY = {"p50_ms": "p50_ok", "p95_ms": "p95_ok", "p99_ms": "p99_ok", "error_rate": "error_rate_ok",
           "client_error_rate": "client_error_rate_ok", "queries_per_request": "queries_ok"}


def _budget_check(budget: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """The verdict of one endpoint: each objective's limit, measured value and level."""
    result: dict[str, Any] = {"tier": getattr(budget, "tier", "")}
    checks = []
    for objective, field in _ENDPOINT_OBJECTIVES:
        target, critical = budget.levels(objective)
        if target is None:
            continue
        level = _level(entry[field], target, critical)
        checks.append({"objective": objective, "limit": target, "critical": critical,
                       "measured": entry[field], "level": level})
        result[objective] = target
        result[_OK_KEY[objective]] = level == "ok"
        if critical is not None:
            result.setdefault("critical", {})[objective] = critical
    result["checks"] = checks
    result["ok"] = all(c["level"] == "ok" for c in checks)
    result["level"] = _worst(checks)
    return result


def _worst(checks: list[dict[str, Any]]) -> str:
    levels = {c["level"] for c in checks}
    return "critical" if "critical" in levels else "over" if "over" in levels else "ok"


def _database(view: _View, budgets: Any) -> list[dict[str, Any]]:
    name = n.DB_DURATION
    bounds = view.bounds(name)
    groups = view.group(name, lambda k: (k[0], k[1], k[2]) if len(k) > 2 else ("", "", ""))
    out = []
    for (system, op, table), m in sorted(groups.items(), key=lambda kv: -kv[1].sum):
        if m.count <= 0:
            continue
        entry: dict[str, Any] = {
            "system": system,
            "operation": op or "(other)",
            "collection": table,
            "count": m.count,
            "mean_ms": round(m.sum / m.count * 1000.0, 3),
            "p50_ms": m.quantile_ms(bounds, 0.50),
            "p95_ms": m.quantile_ms(bounds, 0.95),
            "p99_ms": m.quantile_ms(bounds, 0.99),
            "total_ms": round(m.sum * 1000.0, 3),
        }
        budget = budgets.db_lookup(str(op), str(table)) if budgets is not None else None
        if budget is not None:
            checks = []
            for objective in ("p50_ms", "p95_ms", "p99_ms"):
                target, critical = budget.levels(objective)
                if target is None:
                    continue
                measured = entry[objective]
                checks.append({"objective": objective, "limit": target, "critical": critical,
                               "measured": measured, "level": _level(measured, target, critical)})
            entry["budget"] = {"checks": checks, "ok": all(c["level"] == "ok" for c in checks),
                               "level": _worst(checks)}
        out.append(entry)
    return out


def _operations(view: _View, minutes: float) -> list[dict[str, Any]]:
    """``measure()`` blocks per operation name (their dimensions are in the exported metric)."""
    name = n.OPERATION_DURATION
    bounds = view.bounds(name)
    runs = view.group(name, lambda k: k[0] if k else "")
    failed = view.group(name, lambda k: (k[0], bool(k[1])) if len(k) > 1 else ("", False))
    out = []
    for op, m in sorted(runs.items(), key=lambda kv: (-kv[1].count, str(kv[0]))):
        if m.count <= 0:
            continue
        err = failed.get((op, True))
        errors = err.count if err else 0
        out.append({
            "name": op,
            "count": m.count,
            "per_minute": round(m.count / minutes, 2),
            "errors": errors,
            "error_rate": round(errors / m.count, 4),
            "mean_ms": round(m.sum / m.count * 1000.0, 3),
            "p50_ms": m.quantile_ms(bounds, 0.50),
            "p95_ms": m.quantile_ms(bounds, 0.95),
            "p99_ms": m.quantile_ms(bounds, 0.99),
            "max_ms": round(m.max * 1000.0, 3) if math.isfinite(m.max) else 0.0,
        })
    return out


def _outgoing(view: _View) -> list[dict[str, Any]]:
    name = n.HTTP_CLIENT_DURATION
    bounds = view.bounds(name)
    per_host = view.group(name, lambda k: k[0] if k else "")
    errors = view.group(
        name, lambda k: (k[0], _is_server_error(k[2], k[3])) if len(k) > 3 else ("", False)
    )
    throttled = view.counter(n.HTTP_CLIENT_THROTTLED)
    remaining, limit, reset = (
        view.gauge(n.RATELIMIT_REMAINING),
        view.gauge(n.RATELIMIT_LIMIT),
        view.gauge(n.RATELIMIT_RESET),
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
            "p50_ms": m.quantile_ms(bounds, 0.5),
            "p95_ms": m.quantile_ms(bounds, 0.95),
        }
        rl = {
            label: values[(host,)]
            for label, values in (("remaining", remaining), ("limit", limit), ("reset_seconds", reset))
            if (host,) in values
        }
        if rl:
            entry["ratelimit"] = rl
        out.append(entry)
    return out


def why_no_requests(rt: Runtime, snap: Snapshot | None = None) -> list[str]:
    """What is known about why no request was recorded."""
    notes = snap.notes if snap is not None else rt.notes
    apps = snap.apps if snap is not None else sorted(rt.apps)
    reasons = ["no requests recorded", *notes]
    if not apps:
        reasons.append(
            "no app of a framework we instrument was built in this process "
            "(the server log says whether the app loaded; `otel-perf config` lists what we instrument)"
        )
    return reasons


def health_alerts(
    rt: Runtime,
    endpoints: list[dict[str, Any]],
    database: list[dict[str, Any]],
    findings: dict[str, Any],
    telemetry: dict[str, Any],
) -> list[dict[str, Any]]:
    """Apply the documented health rules: one alert per rule that fires, critical ones first."""
    alerts: list[dict[str, Any]] = []

    def alert(severity: str, kind: str, subject: str, message: str, value: float, limit: float) -> None:
        alerts.append({"severity": severity, "kind": kind, "subject": subject, "message": message,
                       "value": value, "threshold": limit})

    slow_ms = rt.slow_request_s * 1000.0
    budgets = rt.budgets
    for e in endpoints:
        name = f"{e['method']} {e['route']}"
        enough = e["count"] >= MIN_REQUESTS
        matched = e["route"] != UNMATCHED
        budget = budgets.lookup(e["method"], e["route"] if matched else "") if budgets is not None else None

        def levels(key: str, budget: Any = budget) -> tuple[Any, Any]:
            return budget.levels(key) if budget is not None else (None, None)

        # Server errors: fixed 1% / 5% unless the budget sets error_rate (and a critical level).
        target, critical = levels("error_rate")
        rate = e["error_rate"]
        fixed = target is None  # the fixed rule counts "at" as over; a budget is the largest share allowed
        hard, soft = (0.05, 0.01) if fixed else (critical, target)
        message = f"{name}: error rate {rate:.1%}"
        if enough and hard is not None and (rate >= hard if fixed else rate > hard):
            alert("critical", "error_rate", name, message, rate, hard)
        elif enough and (rate >= soft if fixed else rate > soft):
            alert("warning", "error_rate", name, message, rate, soft)
        # Client errors (4xx), on routes the app matched (scanners' 404s are not a verdict).
        target, critical = levels("client_error_rate")
        rate = e["client_error_rate"]
        message = f"{name}: client error rate (4xx) {rate:.1%}"
        if enough and matched:
            if critical is not None and rate > critical:
                alert("critical", "client_error_rate", name, message, rate, critical)
            elif (rate > target) if target is not None else rate >= CLIENT_ERROR_WARNING:
                limit = target if target is not None else CLIENT_ERROR_WARNING
                alert("warning", "client_error_rate", name, message, rate, limit)
        # Latency: each quantile against its budget; p95 against the slow threshold without one.
        for q in ("p50", "p95", "p99"):
            target, critical = levels(f"{q}_ms")
            if q == "p95" and target is None:
                target = slow_ms
            if target is None:
                continue
            measured = e[f"{q}_ms"]
            if critical is not None:
                over_hard, hard, words = measured > critical, critical, "over its critical level"
            else:
                hard = 2 * target if q == "p95" else math.inf
                over_hard, words = measured >= hard, "at least twice"
            if enough and over_hard:
                alert("critical", f"{q}_latency", name,
                      f"{name}: {q} {measured:.0f} ms is {words} {hard:.0f} ms", measured, hard)
            elif measured > target:
                alert("warning", f"{q}_latency", name, f"{name}: {q} {measured:.0f} ms over {target:.0f} ms",
                      measured, target)
        # Queries per request (p95) against the budget.
        target, critical = levels("queries_per_request")
        measured = e["p95_queries"]
        if critical is not None and measured > critical and enough:
            alert("critical", "queries_per_request", name,
                  f"{name}: p95 {measured:g} queries per request over the critical {critical:g}",
                  measured, critical)
        elif target is not None and measured > target:
            alert("warning", "queries_per_request", name,
                  f"{name}: p95 {measured:g} queries per request over {target:g}", measured, target)
    for d in database:
        verdict = d.get("budget")
        if not verdict:
            continue
        what = f"{d['operation']} {d['collection']}".strip()
        for check in verdict["checks"]:
            q = check["objective"].removesuffix("_ms")
            measured = check["measured"]
            if check["level"] == "critical" and d["count"] >= MIN_REQUESTS:
                alert("critical", f"db_{q}_latency", what,
                      f"{what}: {q} {measured:.1f} ms over its critical level {check['critical']:g} ms",
                      measured, check["critical"])
            elif check["level"] != "ok":
                alert("warning", f"db_{q}_latency", what,
                      f"{what}: {q} {measured:.1f} ms over {check['limit']:g} ms", measured, check["limit"])
    recent = [b for b in findings.get("event_loop_blocks", []) if time.time() - b["at"] < 300]
    if recent:
        alert("warning", "event_loop_blocked", "event loop",
              f"event loop blocked {len(recent)} time(s) in the last 5 minutes", len(recent), 0)
    dropped = sum(v.get("dropped", 0) for v in telemetry.values()) if telemetry else 0
    if dropped:
        alert("warning", "telemetry_dropped", "telemetry", f"{int(dropped)} telemetry item(s) dropped",
              dropped, 0)
    alerts.sort(key=lambda a: a["severity"] != "critical")
    return alerts


def status_of(alerts: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(status, reasons) from the alerts: unhealthy on a critical one, degraded on a warning."""
    reasons = [a["message"] for a in alerts]
    if any(a["severity"] == "critical" for a in alerts):
        return "unhealthy", reasons
    if alerts:
        return "degraded", reasons
    return "healthy", []


def health(
    rt: Runtime, endpoints: list[dict[str, Any]], findings: dict[str, Any], telemetry: dict[str, Any]
) -> tuple[str, list[str]]:
    """Apply the documented health rules to endpoints alone; return (status, reasons)."""
    return status_of(health_alerts(rt, endpoints, [], findings, telemetry))
