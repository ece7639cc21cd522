"""Load-test results: what the client measured per request, summarised per endpoint and second.

:class:`Collector` receives every request from the Locust request hook (bounded memory:
each endpoint keeps at most ``max_samples`` latencies by reservoir sampling, each second at
most ``_PER_SECOND`` per endpoint).  :func:`summarise` turns it into the JSON-ready report
the gates, the HTML report and the baseline file read.  Nothing here imports Locust.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PERCENTILE_POINTS", "Collector", "percentile", "summarise"]

SCHEMA = "otel-perf-loadtest/1"
_PER_SECOND = 2000
_SLOWEST = 5
_ERROR_KINDS = 10
#: Quantiles of the percentile chart: 0..99.9% spaced evenly on a log(1/(1-q)) axis.
PERCENTILE_POINTS: tuple[float, ...] = tuple(round(1 - 10 ** (-k / 10), 6) for k in range(31))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` (0..1) quantile of already sorted values, linearly interpolated (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass
class _Endpoint:
    count: int = 0
    failures: int = 0
    total_ms: float = 0.0
    min_ms: float = math.inf
    max_ms: float = 0.0
    samples: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    slowest: list[tuple[float, int, str, int]] = field(default_factory=list)  # (ms, seq, trace, status)
    first: float = math.inf
    last: float = 0.0


@dataclass
class _Second:
    count: int = 0
    failures: int = 0
    samples: list[float] = field(default_factory=list)


class Collector:
    """Accumulates requests as they complete (called from the load generator's request hook)."""

    def __init__(self, max_samples: int = 100_000, seed: int = 0, warmup_s: float = 0.0) -> None:
        self.max_samples = max_samples
        self.warmup_s = warmup_s
        self.started = 0.0
        self.warmup_until = 0.0
        #: Every finished request, warm-up included (the run's request limit counts these).
        self.seen = 0
        self.seen_failures = 0
        self.warmup_requests = 0
        self.endpoints: dict[str, _Endpoint] = {}
        self.seconds: dict[int, dict[str, _Second]] = {}
        self.users: dict[int, int] = {}
        self.total = 0
        self.total_failures = 0
        self._rng = random.Random(seed)
        self._seq = 0

    def start(self, at: float) -> None:
        """Mark the start of the run (epoch seconds); seconds are counted from here."""
        self.started = at
        self.warmup_until = at + self.warmup_s

    def record(self, key: str, latency_ms: float, ok: bool, status: int, end_time: float,
               trace_id: str = "", error: str = "") -> None:
        """One finished request: endpoint key, latency, success, HTTP status (0: none), end time.

        Requests that end during the warm-up appear in the timeline only.
        """
        self.seen += 1
        self._seq += 1
        second = max(0, int(end_time - self.started))
        per = self.seconds.setdefault(second, {})
        sec = per.get(key)
        if sec is None:
            sec = per[key] = _Second()
        sec.count += 1
        if not ok:
            sec.failures += 1
            self.seen_failures += 1
        _reservoir(sec.samples, latency_ms, sec.count, _PER_SECOND, self._rng)
        if end_time < self.warmup_until:
            self.warmup_requests += 1
            return
        self.total += 1
        ep = self.endpoints.get(key)
        if ep is None:
            ep = self.endpoints[key] = _Endpoint()
        ep.count += 1
        ep.total_ms += latency_ms
        ep.min_ms = min(ep.min_ms, latency_ms)
        ep.max_ms = max(ep.max_ms, latency_ms)
        ep.first = min(ep.first, end_time - latency_ms / 1000.0)
        ep.last = max(ep.last, end_time)
        ep.statuses[status] += 1
        if not ok:
            ep.failures += 1
            self.total_failures += 1
            if error and (error in ep.errors or len(ep.errors) < _ERROR_KINDS):
                ep.errors[error[:200]] += 1
        _reservoir(ep.samples, latency_ms, ep.count, self.max_samples, self._rng)
        entry = (latency_ms, self._seq, trace_id, status)
        if len(ep.slowest) < _SLOWEST:
            heapq.heappush(ep.slowest, entry)
        elif latency_ms > ep.slowest[0][0]:
            heapq.heapreplace(ep.slowest, entry)

    def note_users(self, at: float, users: int) -> None:
        """The number of running users at ``at`` (sampled by the progress loop)."""
        self.users[max(0, int(at - self.started))] = users

    def recent(self, now: float, window: float = 3.0) -> tuple[float, int, float]:
        """(requests/s, failures, p95 ms) over the last ``window`` seconds, for live progress."""
        last = int(now - self.started)
        secs = [self.seconds.get(s, {}) for s in range(max(0, last - int(window)), last)]
        count = sum(x.count for per in secs for x in per.values())
        fails = sum(x.failures for per in secs for x in per.values())
        values = sorted(v for per in secs for x in per.values() for v in x.samples)
        span = max(1, min(int(window), last))
        return count / span, fails, percentile(values, 0.95) if values else math.nan


def _reservoir(samples: list[float], value: float, seen: int, cap: int, rng: random.Random) -> None:
    if len(samples) < cap:
        samples.append(value)
        return
    slot = rng.randrange(seen)
    if slot < cap:
        samples[slot] = value


def _round(x: float, digits: int = 3) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _client_stats(ep: _Endpoint) -> dict[str, Any]:
    values = sorted(ep.samples)
    return {
        "p50_ms": _round(percentile(values, 0.50)),
        "p95_ms": _round(percentile(values, 0.95)),
        "p99_ms": _round(percentile(values, 0.99)),
        "mean_ms": _round(ep.total_ms / ep.count) if ep.count else None,
        "min_ms": _round(ep.min_ms),
        "max_ms": _round(ep.max_ms),
        "exact": len(ep.samples) == ep.count,
    }


def split_key(key: str) -> tuple[str, str]:
    """``"GET /a/{id}"`` -> ``("GET", "/a/{id}")``; a key without a method is GET."""
    method, sep, route = key.partition(" ")
    if sep and method.isalpha() and method.isupper():
        return method, route
    return "GET", key


def summarise(collector: Collector, run: dict[str, Any],
              server: dict[tuple[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON-ready report of a finished run (``run``: metadata; ``server``: server-side view)."""
    duration = max(float(run.get("duration_s") or 0.0), 1e-9)
    measured = max(duration - collector.warmup_s, 1e-9)
    server = server or {}
    endpoints = []
    matched: set[tuple[str, str]] = set()
    for key, ep in sorted(collector.endpoints.items(), key=lambda kv: (-kv[1].count, kv[0])):
        method, route = split_key(key)
        srv = server.get((method, route))
        if srv is not None:
            matched.add((method, route))
        endpoints.append({
            "key": key,
            "method": method,
            "route": route,
            "requests": ep.count,
            "failures": ep.failures,
            "error_rate": round(ep.failures / ep.count, 6) if ep.count else 0.0,
            "rps": round(ep.count / measured, 3),
            "client": _client_stats(ep),
            "server": srv,
            "statuses": {str(k): v for k, v in sorted(ep.statuses.items())},
            "errors": dict(ep.errors.most_common()),
            "slowest": [{"ms": round(ms, 3), "trace_id": trace, "status": status}
                        for ms, _seq, trace, status in sorted(ep.slowest, reverse=True)],
        })
    all_values = sorted(v for ep in collector.endpoints.values() for v in ep.samples)
    totals = {
        "requests": collector.total,
        "failures": collector.total_failures,
        "error_rate": round(collector.total_failures / collector.total, 6) if collector.total else 0.0,
        "rps": round(collector.total / measured, 3),
        "warmup_requests": collector.warmup_requests,
        "p50_ms": _round(percentile(all_values, 0.50)),
        "p95_ms": _round(percentile(all_values, 0.95)),
        "p99_ms": _round(percentile(all_values, 0.99)),
    }
    return {
        "schema": SCHEMA,
        "run": run,
        "totals": totals,
        "endpoints": endpoints,
        "server_only": [
            {"method": m, "route": r, **stats}
            for (m, r), stats in sorted(server.items()) if (m, r) not in matched
        ],
        "timeline": _timeline(collector, max(1, int(duration))),
        "percentiles": {
            key: [[q, _round(percentile(sorted(ep.samples), q))] for q in PERCENTILE_POINTS]
            for key, ep in collector.endpoints.items()
        },
    }


def _timeline(collector: Collector, seconds: int) -> dict[str, Any]:
    """Per-second series over the whole seconds of the run (a partial last second would dip)."""
    xs = list(range(seconds))
    series: dict[str, dict[str, list[float | None]]] = {}
    for key in sorted({k for per in collector.seconds.values() for k in per}):
        rps: list[float | None] = []
        p50: list[float | None] = []
        p95: list[float | None] = []
        errors: list[float | None] = []
        for s in xs:
            sec = collector.seconds.get(s, {}).get(key)
            if sec is None or sec.count == 0:
                rps.append(0)
                p50.append(None)
                p95.append(None)
                errors.append(0)
                continue
            values = sorted(sec.samples)
            rps.append(sec.count)
            p50.append(_round(percentile(values, 0.5)))
            p95.append(_round(percentile(values, 0.95)))
            errors.append(sec.failures)
        series[key] = {"rps": rps, "p50_ms": p50, "p95_ms": p95, "errors": errors}
    users: list[float | None] = []
    current = 0
    for s in xs:
        current = collector.users.get(s, current)
        users.append(current)
    return {"seconds": xs, "users": users, "series": series}
