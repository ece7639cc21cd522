"""Latency regression detection between two load-test runs.

Per endpoint, the per-request latencies of the baseline run (``x``) and the current run
(``y``) are compared with:

* the **Mann-Whitney U test** (one-sided: is ``y`` stochastically larger than ``x``?),
  normal approximation with tie and continuity correction -- no assumption about the shape
  of the latency distribution, robust to the long tail;
* **Cliff's delta** ``P(y > x) - P(y < x)`` (-1..1) as the effect size, with the usual
  reading: below 0.147 negligible, 0.33 small, 0.474 medium, above large (Romano et al. 2006);
* the **Hodges-Lehmann shift** (median of all pairwise differences ``y_j - x_i``) with its
  distribution-free confidence interval, i.e. "how many milliseconds slower".

p-values are adjusted for the number of endpoints compared (Holm).  A regression needs all
of: adjusted p below ``alpha``, ``delta >= min_effect``, a shift of at least ``min_shift_ms``
and ``min_shift_ratio`` of the baseline median, and -- when the baseline holds two or more
runs -- a median above what run-to-run noise explains (:func:`run_to_run_limit`, a
prediction bound from the baseline runs' medians).

Why the last parts: requests within one run are not independent draws.  Two runs of the same
build differ as a whole (neighbours on the machine, caches, the clock), and with thousands of
requests the per-request test alone calls such a drift significant.  The Mann-Whitney test
answers "do these two runs differ?"; the run-to-run bound answers "by more than runs of the
same build do?".  Record a baseline of three or more runs for a gate that knows its noise.

Error rates are compared with a one-sided two-proportion z-test (Holm-adjusted as well) and a
minimum increase in percentage points.  Pure Python; nothing here imports Locust.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "Comparison",
    "ErrorComparison",
    "Thresholds",
    "cliffs_delta",
    "compare_runs",
    "hodges_lehmann",
    "holm",
    "mann_whitney_u",
    "run_to_run_limit",
    "t_ppf",
]

Verdict = Literal["regression", "improvement", "no change", "insufficient data"]
#: Samples compared per endpoint and run (random subsample above this; keeps pairwise work bounded).
MAX_COMPARE = 5000


@dataclass(frozen=True)
class Thresholds:
    """When a difference is a regression (see the module docs)."""

    alpha: float = 0.01
    min_effect: float = 0.33
    min_shift_ms: float = 2.0
    min_shift_ratio: float = 0.20
    min_samples: int = 20
    min_error_increase: float = 0.01
    confidence: float = 0.95
    #: Confidence of the bound on a same-build run's median (from several baseline runs).
    run_confidence: float = 0.95


@dataclass(frozen=True)
class MannWhitney:
    """Result of :func:`mann_whitney_u`."""

    u: float  # pairs with y > x, ties counted half
    z: float
    p_greater: float  # one-sided p: y stochastically larger
    p_less: float  # one-sided p: y stochastically smaller


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _normal_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - low:
        return -_normal_ppf(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def _ranks_and_ties(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(sum of the ranks of ``y`` in the pooled sample, sum over tie groups of t^3 - t)."""
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    rank_sum_y = 0.0
    tie_term = 0.0
    i = 0
    n = len(pooled)
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        avg_rank = (i + j) / 2.0 + 1.0
        t = j - i + 1
        if t > 1:
            tie_term += t ** 3 - t
        rank_sum_y += avg_rank * sum(1 for k in range(i, j + 1) if pooled[k][1] == 1)
        i = j + 1
    return rank_sum_y, tie_term


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    """Mann-Whitney U of ``y`` against ``x`` (normal approximation, tie and continuity corrected)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    rank_sum_y, tie_term = _ranks_and_ties(x, y)
    u = rank_sum_y - n2 * (n2 + 1) / 2.0
    n = n1 + n2
    mean = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return MannWhitney(u, 0.0, 1.0, 1.0)
    sd = math.sqrt(var)
    z = (u - mean) / sd
    p_greater = _normal_sf((u - mean - 0.5) / sd)
    p_less = _normal_sf((mean - u - 0.5) / sd)
    return MannWhitney(u, z, min(1.0, p_greater), min(1.0, p_less))


def cliffs_delta(u: float, n1: int, n2: int) -> float:
    """Cliff's delta ``P(y > x) - P(y < x)`` from the U of ``y`` (ties count half)."""
    return 2.0 * u / (n1 * n2) - 1.0


def _count_le(xs: Sequence[float], ys: Sequence[float], d: float) -> int:
    """Pairs with ``y - x <= d`` (both sorted)."""
    n1 = len(xs)
    return sum(n1 - bisect.bisect_left(xs, y - d) for y in ys)


def _kth_difference(xs: Sequence[float], ys: Sequence[float], k: int) -> float:
    """The ``k``-th smallest (1-based) of all ``y - x`` differences, by bisection on the value."""
    lo = ys[0] - xs[-1]
    hi = ys[-1] - xs[0]
    for _ in range(100):
        if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):
            break
        mid = (lo + hi) / 2.0
        if _count_le(xs, ys, mid) >= k:
            hi = mid
        else:
            lo = mid
    return hi


def hodges_lehmann(x: Sequence[float], y: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """(shift, low, high): median of ``y_j - x_i`` and its distribution-free confidence interval."""
    xs, ys = sorted(x), sorted(y)
    n1, n2 = len(xs), len(ys)
    pairs = n1 * n2
    if pairs == 0:
        raise ValueError("both samples need at least one value")
    if pairs % 2:
        shift = _kth_difference(xs, ys, pairs // 2 + 1)
    else:
        shift = (_kth_difference(xs, ys, pairs // 2) + _kth_difference(xs, ys, pairs // 2 + 1)) / 2.0
    z = _normal_ppf(0.5 + confidence / 2.0)
    c = math.floor(pairs / 2.0 - z * math.sqrt(pairs * (n1 + n2 + 1) / 12.0))
    if c < 1:
        return shift, -math.inf, math.inf
    return shift, _kth_difference(xs, ys, c), _kth_difference(xs, ys, pairs - c + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Comparison:
    """Latency of one endpoint: baseline vs current."""

    key: str
    verdict: Verdict
    reason: str
    baseline_n: int
    current_n: int
    baseline_p50_ms: float | None = None
    current_p50_ms: float | None = None
    baseline_p95_ms: float | None = None
    current_p95_ms: float | None = None
    shift_ms: float | None = None
    shift_low_ms: float | None = None
    shift_high_ms: float | None = None
    cliffs_delta: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    confidence: float | None = None
    baseline_runs: int = 0
    #: Upper bound of a same-build run's median and the relative run-to-run spread (2+ runs).
    run_limit_ms: float | None = None
    run_noise: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite interval ends become None)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


@dataclass
class ErrorComparison:
    """Error rate of one endpoint: baseline vs current."""

    key: str
    verdict: Verdict
    baseline_rate: float
    current_rate: float
    p_value: float | None = None
    p_adjusted: float | None = None


@dataclass
class RunComparison:
    """Everything :func:`compare_runs` found."""

    latency: list[Comparison] = field(default_factory=list)
    errors: list[ErrorComparison] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def regressions(self) -> list[str]:
        """Keys with a latency or error-rate regression."""
        keys = [c.key for c in self.latency if c.verdict == "regression"]
        keys += [e.key for e in self.errors if e.verdict == "regression" and e.key not in keys]
        return keys

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "method": "Mann-Whitney U (one-sided, Holm-adjusted), Cliff's delta, Hodges-Lehmann shift",
            "thresholds": asdict(self.thresholds),
            "latency": [c.as_dict() for c in self.latency],
            "errors": [asdict(e) for e in self.errors],
            "regressions": self.regressions,
        }


def _quantile(values: Sequence[float], q: float) -> float:
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _subsample(values: Sequence[float], rng: random.Random) -> list[float]:
    return list(values) if len(values) <= MAX_COMPARE else rng.sample(list(values), MAX_COMPARE)


def t_ppf(p: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (exact for 1 and 2, else the Cornish-Fisher
    expansion of Abramowitz & Stegun 26.7.5: within 0.5% for df >= 3 at the 95-99.5% levels)."""
    if df < 1:
        raise ValueError("df must be at least 1")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = _normal_ppf(p)
    v = float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3)
            + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / (92160 * v ** 4))


def run_to_run_limit(run_medians: Sequence[float], confidence: float) -> tuple[float, float] | None:
    """(upper prediction bound of the next run's median, relative spread) from the baseline runs' medians.

    Works on log medians (latency noise is multiplicative): with ``k`` runs of mean ``m`` and
    standard deviation ``s``, a new run of the same build has its log median below
    ``m + t(confidence, k-1) * s * sqrt(1 + 1/k)`` with that confidence.  None for fewer than
    two runs (the spread is unknown).
    """
    logs = [math.log(m) for m in run_medians if m > 0]
    k = len(logs)
    if k < 2:
        return None
    mean = sum(logs) / k
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (k - 1))
    upper = mean + t_ppf(confidence, k - 1) * sd * math.sqrt(1 + 1 / k)
    return math.exp(upper), math.exp(sd) - 1.0


def compare_runs(
    baseline_runs: Sequence[Mapping[str, Sequence[float]]],
    current: Mapping[str, Sequence[float]],
    thresholds: Thresholds | None = None,
    baseline_errors: Mapping[str, tuple[int, int]] | None = None,
    current_errors: Mapping[str, tuple[int, int]] | None = None,
) -> RunComparison:
    """Compare latency samples (ms) per endpoint key.

    ``baseline_runs`` holds one mapping per baseline run (key -> samples); they are pooled for
    the per-request tests, and with two or more runs their medians also bound what run-to-run
    noise alone produces (:func:`run_to_run_limit`): a regression must exceed that bound too.
    Errors are ``key -> (failures, requests)``.
    """
    t = thresholds or Thresholds()
    rng = random.Random(0)
    out = RunComparison(thresholds=t)
    tested: list[tuple[Comparison, float, float, float]] = []
    keys = {k for run in baseline_runs for k in run} | set(current)
    for key in sorted(keys):
        per_run = [list(run[key]) for run in baseline_runs if len(run.get(key, ())) >= t.min_samples]
        pooled = [v for run in baseline_runs for v in run.get(key, ())]
        x = sorted(_subsample(pooled, rng))
        y = sorted(_subsample(current.get(key, ()), rng))
        comp = Comparison(key, "insufficient data", "", len(pooled), len(current.get(key, ())),
                          baseline_runs=len(per_run))
        if x:
            comp.baseline_p50_ms = round(_quantile(x, 0.5), 3)
            comp.baseline_p95_ms = round(_quantile(x, 0.95), 3)
        if y:
            comp.current_p50_ms = round(_quantile(y, 0.5), 3)
            comp.current_p95_ms = round(_quantile(y, 0.95), 3)
        limit = run_to_run_limit([_quantile(sorted(r), 0.5) for r in per_run], t.run_confidence)
        if limit is not None:
            comp.run_limit_ms = round(limit[0], 3)
            comp.run_noise = round(limit[1], 4)
        out.latency.append(comp)
        if len(x) < t.min_samples or len(y) < t.min_samples:
            comp.reason = (f"needs at least {t.min_samples} requests in both runs "
                           f"(baseline {len(x)}, current {len(y)})")
            continue
        mw = mann_whitney_u(x, y)
        shift, low, high = hodges_lehmann(x, y, t.confidence)
        comp.shift_ms, comp.shift_low_ms, comp.shift_high_ms = round(shift, 3), round(low, 3), round(high, 3)
        comp.cliffs_delta = round(cliffs_delta(mw.u, len(x), len(y)), 4)
        tested.append((comp, mw.p_greater, mw.p_less, _quantile(x, 0.5)))
    adjusted_greater = holm([p for _, p, _, _ in tested])
    adjusted_less = holm([p for _, _, p, _ in tested])
    for (comp, p_greater, _p_less, base_median), adj_g, adj_l in zip(
            tested, adjusted_greater, adjusted_less, strict=True):
        assert comp.shift_ms is not None
        assert comp.cliffs_delta is not None
        assert comp.current_p50_ms is not None
        practical = max(t.min_shift_ms, t.min_shift_ratio * base_median)
        beyond_noise = comp.run_limit_ms is None or comp.current_p50_ms > comp.run_limit_ms
        slower = (adj_g < t.alpha and comp.cliffs_delta >= t.min_effect and comp.shift_ms >= practical
                  and beyond_noise)
        faster = adj_l < t.alpha and -comp.cliffs_delta >= t.min_effect and -comp.shift_ms >= practical
        comp.p_value = p_greater
        comp.p_adjusted = adj_g
        comp.confidence = round(1.0 - adj_g, 6)
        ci = f"95% CI {comp.shift_low_ms:+.2f}..{comp.shift_high_ms:+.2f} ms"
        noise = ""
        if comp.run_limit_ms is not None and comp.run_noise is not None:
            noise = (f"; {comp.baseline_runs} baseline runs vary by {comp.run_noise:.0%}, "
                     f"same-build median up to {comp.run_limit_ms:.2f} ms")
        if slower:
            comp.verdict = "regression"
            comp.reason = (f"{comp.shift_ms:+.2f} ms ({ci}), Cliff's delta {comp.cliffs_delta:+.2f}, "
                           f"adjusted p {adj_g:.2g}{noise}")
        elif faster:
            comp.verdict = "improvement"
            comp.reason = f"{comp.shift_ms:+.2f} ms ({ci}), Cliff's delta {comp.cliffs_delta:+.2f}"
        else:
            comp.verdict = "no change"
            why = []
            if adj_g >= t.alpha:
                why.append(f"adjusted p {adj_g:.2g} >= {t.alpha:g}")
            if comp.cliffs_delta < t.min_effect:
                why.append(f"Cliff's delta {comp.cliffs_delta:+.2f} < {t.min_effect:g}")
            if comp.shift_ms < practical:
                why.append(f"shift {comp.shift_ms:+.2f} ms < {practical:.2f} ms")
            if not beyond_noise:
                why.append(f"median {comp.current_p50_ms:.2f} ms within the run-to-run range of "
                           f"{comp.baseline_runs} baseline runs (up to {comp.run_limit_ms:.2f} ms)")
            comp.reason = "; ".join(why)
    out.errors = _compare_errors(baseline_errors or {}, current_errors or {}, t)
    return out


def _compare_errors(baseline: Mapping[str, tuple[int, int]], current: Mapping[str, tuple[int, int]],
                    t: Thresholds) -> list[ErrorComparison]:
    rows: list[ErrorComparison] = []
    ps: list[float] = []
    for key in sorted(set(baseline) & set(current)):
        f1, n1 = baseline[key]
        f2, n2 = current[key]
        if n1 < t.min_samples or n2 < t.min_samples:
            continue
        r1, r2 = f1 / n1, f2 / n2
        pooled = (f1 + f2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p = 1.0 if se == 0 else _normal_sf((r2 - r1) / se)
        rows.append(ErrorComparison(key, "no change", round(r1, 6), round(r2, 6), p))
        ps.append(p)
    for row, adj in zip(rows, holm(ps), strict=True):
        row.p_adjusted = adj
        if adj < t.alpha and row.current_rate - row.baseline_rate >= t.min_error_increase:
            row.verdict = "regression"
    return rows
