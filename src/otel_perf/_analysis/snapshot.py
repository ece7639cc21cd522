"""What the stats summary reads, copied at one moment: one process, or every worker of a server merged.

A :class:`Snapshot` holds the histograms, counters and gauges the summary needs (bucket
counts, sums, min and max per series, never single measurements), the recent findings, the
exporters' self-health and what is known about the process.  Snapshots of several worker
processes merge exactly (bucket counts and sums add; min and max take the extremes; the
buckets of one instrument are the same in every worker, since they come from the same
configuration), so percentiles computed from the merged buckets are those of the whole
service, not an average of per-worker percentiles.  Subtracting an earlier snapshot gives a
window (``POST <stats>/reset``, ``?minutes=N``).

Snapshots cross process boundaries as JSON (:meth:`Snapshot.to_json` /
:meth:`Snapshot.from_json`, see :mod:`otel_perf._export.stats_share`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from otel_perf import _names as n
from otel_perf._metrics.instruments import Counter, Gauge, Histogram, Key

if TYPE_CHECKING:
    from otel_perf._core.runtime import Runtime

#: The histograms, counters and gauges the summary reads, by metric name.
HISTOGRAMS = (
    n.HTTP_SERVER_DURATION,
    n.QUERIES_PER_REQUEST,
    n.DB_DURATION,
    n.HTTP_CLIENT_DURATION,
    n.LOOP_LAG,
    n.OPERATION_DURATION,
    n.JOB_DURATION,
    n.JOB_QUEUE_WAIT,
    n.JOB_QUERIES,
)
COUNTERS = (
    n.SLOW_REQUESTS,
    n.N_PLUS_ONE,
    n.HTTP_CLIENT_THROTTLED,
    n.SLOW_QUERIES,
    n.OPERATION_ERRORS,
    n.CACHE_OPERATIONS,
)
GAUGES = (n.RATELIMIT_REMAINING, n.RATELIMIT_LIMIT, n.RATELIMIT_RESET)
#: Findings kept per kind after a merge (each process keeps as many).
RECENT = 50
FORMAT = 1


@dataclass
class Series:
    """One histogram series: sum, min, max and the bucket counts (their total is the count)."""

    sum: float
    min: float
    max: float
    buckets: list[int]

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def copy(self) -> Series:
        return Series(self.sum, self.min, self.max, list(self.buckets))


@dataclass
class Snapshot:
    """The stats-relevant state of one process, or of several merged."""

    at: float
    started: float
    bounds: dict[str, tuple[float, ...]] = field(default_factory=dict)
    histograms: dict[str, dict[Key, Series]] = field(default_factory=dict)
    counters: dict[str, dict[Key, float]] = field(default_factory=dict)
    gauges: dict[str, dict[Key, float]] = field(default_factory=dict)
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    telemetry: dict[str, dict[str, float]] = field(default_factory=dict)
    apps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: one entry per process: pid, started, at (when its part was taken), instance id
    processes: list[dict[str, Any]] = field(default_factory=list)

    # -- taking ------------------------------------------------------------------------------

    @classmethod
    def capture(cls, rt: Runtime) -> Snapshot:
        """This process, now (a few locks taken briefly, one per instrument; never per request)."""
        snap = cls(at=time.time(), started=rt.started)
        for name in HISTOGRAMS:
            inst = rt.registry.get(name)
            if isinstance(inst, Histogram):
                snap.bounds[name] = inst.bounds
                snap.histograms[name] = {
                    s.key: Series(s.sum, s.min, s.max, list(s.bucket_counts)) for s in inst.series()
                }
        for name in COUNTERS:
            inst = rt.registry.get(name)
            if isinstance(inst, Counter):
                snap.counters[name] = inst.values()
        for name in GAUGES:
            inst = rt.registry.get(name)
            if isinstance(inst, Gauge):
                snap.gauges[name] = inst.values()
        snap.findings = rt.findings.as_dict()
        snap.telemetry = rt.health.snapshot() if rt.health is not None else {}
        snap.apps = sorted(rt.apps)
        snap.notes = list(rt.notes)
        snap.processes = [
            {
                "pid": os.getpid(),
                "started": rt.started,
                "at": snap.at,
                "instance": str(rt.resource.attributes.get("service.instance.id", "")),
            }
        ]
        return snap

    # -- combining ---------------------------------------------------------------------------

    @classmethod
    def merged(cls, parts: Iterable[Snapshot]) -> Snapshot:
        """The sum of ``parts`` (the workers of one server), exactly: bucket counts add."""
        items = list(parts)
        if not items:
            return cls(at=time.time(), started=time.time())
        out = cls(at=max(p.at for p in items), started=min(p.started for p in items))
        for part in items:
            for name, series in part.histograms.items():
                bounds = part.bounds.get(name, ())
                known = out.bounds.setdefault(name, bounds)
                if known != bounds:  # a worker configured differently: keep what agrees
                    continue
                target = out.histograms.setdefault(name, {})
                for key, s in series.items():
                    have = target.get(key)
                    if have is None:
                        target[key] = s.copy()
                    else:
                        have.sum += s.sum
                        have.min = min(have.min, s.min)
                        have.max = max(have.max, s.max)
                        have.buckets = [a + b for a, b in zip(have.buckets, s.buckets, strict=False)]
            for name, values in part.counters.items():
                target_c = out.counters.setdefault(name, {})
                for key, value in values.items():
                    target_c[key] = target_c.get(key, 0.0) + value
            for name, values in part.gauges.items():
                target_g = out.gauges.setdefault(name, {})
                for key, value in values.items():
                    # Rate-limit headroom: the lowest remaining any worker saw is the one to act on.
                    if name == n.RATELIMIT_REMAINING:
                        target_g[key] = min(target_g.get(key, value), value)
                    else:
                        target_g[key] = max(target_g.get(key, value), value)
            for signal, numbers in part.telemetry.items():
                sums = out.telemetry.setdefault(signal, {})
                for field_name, value in numbers.items():
                    sums[field_name] = sums.get(field_name, 0.0) + value
            out.apps = sorted({*out.apps, *part.apps})
            out.notes += [note for note in part.notes if note not in out.notes]
            out.processes += part.processes
        out.findings = merge_findings([p.findings for p in items])
        return out

    def minus(self, base: Snapshot | None) -> Snapshot:
        """What happened since ``base`` (a reset, or the start of a ``?minutes=`` window).

        Counts and sums subtract exactly (the exporters' exported, dropped and failed counts
        too).  min and max of a window are not known from two cumulative copies; they are
        narrowed to the buckets the window's measurements fall in.
        """
        if base is None:
            return self
        out = Snapshot(
            at=self.at,
            started=self.started,
            bounds=dict(self.bounds),
            counters={},
            gauges=self.gauges,
            findings=self.findings,
            telemetry=_telemetry_since(self.telemetry, base.telemetry),
            apps=self.apps,
            notes=self.notes,
            processes=self.processes,
        )
        for name, series in self.histograms.items():
            previous = base.histograms.get(name, {}) if base.bounds.get(name) == self.bounds.get(name) else {}
            bounds = self.bounds.get(name, ())
            target: dict[Key, Series] = {}
            for key, s in series.items():
                old = previous.get(key)
                if old is None:
                    target[key] = s
                    continue
                buckets = [max(0, a - b) for a, b in zip(s.buckets, old.buckets, strict=False)]
                if not any(buckets):
                    continue
                low, high = _bucket_range(bounds, buckets)
                target[key] = Series(s.sum - old.sum, max(s.min, low), min(s.max, high), buckets)
            out.histograms[name] = target
        for name, values in self.counters.items():
            old_c = base.counters.get(name, {})
            out.counters[name] = {k: d for k, v in values.items() if (d := v - old_c.get(k, 0.0))}
        return out

    # -- across processes ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "at": self.at,
            "started": self.started,
            "bounds": {name: list(b) for name, b in self.bounds.items()},
            "histograms": {name: _rows(rows) for name, rows in self.histograms.items()},
            "counters": {name: _pairs(values) for name, values in self.counters.items()},
            "gauges": {name: _pairs(values) for name, values in self.gauges.items()},
            "findings": self.findings,
            "telemetry": self.telemetry,
            "apps": self.apps,
            "notes": self.notes,
            "processes": self.processes,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Snapshot:
        """The snapshot ``to_json`` wrote; ValueError when ``doc`` is not one."""
        if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
            raise ValueError("not a stats snapshot of this version")
        snap = cls(at=float(doc["at"]), started=float(doc["started"]))
        snap.bounds = {str(name): tuple(float(x) for x in b) for name, b in doc.get("bounds", {}).items()}
        for name, rows in doc.get("histograms", {}).items():
            snap.histograms[str(name)] = {
                _key_in(k): Series(
                    float(total),
                    math.inf if low is None else float(low),
                    -math.inf if high is None else float(high),
                    [int(c) for c in buckets],
                )
                for k, total, low, high, buckets in rows
            }
        for name, rows in doc.get("counters", {}).items():
            snap.counters[str(name)] = {_key_in(k): float(v) for k, v in rows}
        for name, rows in doc.get("gauges", {}).items():
            snap.gauges[str(name)] = {_key_in(k): float(v) for k, v in rows}
        snap.findings = dict(doc.get("findings") or {})
        snap.telemetry = dict(doc.get("telemetry") or {})
        snap.apps = [str(a) for a in doc.get("apps", [])]
        snap.notes = [str(x) for x in doc.get("notes", [])]
        snap.processes = [dict(p) for p in doc.get("processes", [])]
        return snap


#: The exporters' self-health fields that count since the start (the others are levels: queues).
TELEMETRY_COUNTS = ("exported", "dropped", "export_failures")


def _telemetry_since(
    now: dict[str, dict[str, float]], base: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """The exporters' counts since ``base`` (queue sizes and capacities as they are now)."""
    out: dict[str, dict[str, float]] = {}
    for signal, numbers in now.items():
        old = base.get(signal, {})
        out[signal] = {
            k: max(0.0, v - old.get(k, 0.0)) if k in TELEMETRY_COUNTS else v for k, v in numbers.items()
        }
    return out


def _rows(series: dict[Key, Series]) -> list[list[Any]]:
    return [[_key_out(k), x.sum, _finite(x.min), _finite(x.max), x.buckets] for k, x in series.items()]


def _pairs(values: dict[Key, float]) -> list[list[Any]]:
    return [[_key_out(k), v] for k, v in values.items()]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _key_out(key: Key) -> list[Any]:
    return [_key_out(v) if isinstance(v, tuple) else v for v in key]


def _key_in(raw: Any) -> Any:
    return tuple(_key_in(v) if isinstance(v, list) else v for v in raw)


def _bucket_range(bounds: tuple[float, ...], buckets: list[int]) -> tuple[float, float]:
    """Where the measurements in ``buckets`` can lie: the outer edges of the non-empty buckets."""
    first = next(i for i, c in enumerate(buckets) if c)
    last = max(i for i, c in enumerate(buckets) if c)
    low = bounds[first - 1] if first > 0 else -math.inf
    high = bounds[last] if last < len(bounds) else math.inf
    return low, high


def merge_findings(parts: list[dict[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    """Findings of several processes: recent ones newest first (bounded), N+1 patterns added up."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("slow_requests", "slow_queries", "event_loop_blocks"):
        items = [x for p in parts for x in p.get(kind, [])]
        items.sort(key=lambda x: -float(x.get("at", 0.0)))
        out[kind] = items[:RECENT]
    patterns: dict[tuple[str, str, str], dict[str, Any]] = {}
    for p in parts:
        for x in p.get("n_plus_one", []):
            key = (x["method"], x["route"], x["statement"])
            have = patterns.get(key)
            if have is None:
                patterns[key] = dict(x)
                continue
            have["occurrences"] += x["occurrences"]
            have["first_seen"] = min(have["first_seen"], x["first_seen"])
            have["last_seen"] = max(have["last_seen"], x["last_seen"])
            if x["repeat_count"] >= have["repeat_count"]:
                have["repeat_count"] = x["repeat_count"]
                have["trace_id"] = x["trace_id"] or have["trace_id"]
    out["n_plus_one"] = sorted(patterns.values(), key=lambda d: (-d["occurrences"], d["route"]))
    return out
