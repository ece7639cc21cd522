"""Unit behaviour: percentiles from histograms, rate-limit headers, instruments, public API."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

import otel_perf
from otel_perf._analysis import ratelimit
from otel_perf._analysis.stats import percentile
from otel_perf._metrics.instruments import DURATION_BOUNDS, OVERFLOW_KEY, Histogram


def test_public_api_is_exactly_this() -> None:
    assert otel_perf.__all__ == sorted(otel_perf.__all__)
    assert set(otel_perf.__all__) == {"__version__", "counter", "current_trace_id", "histogram", "measure"}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_percentile_within_one_bucket_of_exact(seed: int, q: float) -> None:
    rng = random.Random(seed)
    values = [rng.lognormvariate(-3.5, 1.0) for _ in range(2000)]
    h = Histogram("x", "s", "", ("k",), DURATION_BOUNDS)
    for v in values:
        h.record(v, ("a",))
    s = h.series()[0]
    estimate = percentile(h.bounds, s.bucket_counts, q, s.min, s.max)
    exact = sorted(values)[min(len(values) - 1, int(q * len(values)))]
    bounds = (0.0, *h.bounds, float("inf"))
    i = next(i for i in range(len(bounds) - 1) if bounds[i] <= exact <= bounds[i + 1])
    # within one bucket: inside the exact value's bucket or a neighbour
    lo, hi = bounds[max(0, i - 1)], bounds[min(len(bounds) - 1, i + 2)]
    assert lo <= estimate <= min(hi, s.max), (exact, estimate)


def test_percentile_known_latencies() -> None:
    h = Histogram("x", "s", "", (), (0.05, 0.1, 0.15, 0.2))
    for v in [0.01] * 50 + [0.12] * 45 + [0.19] * 5:
        h.record(v, ())
    s = h.series()[0]
    assert percentile(h.bounds, s.bucket_counts, 0.5, s.min, s.max) <= 0.05
    assert 0.1 <= percentile(h.bounds, s.bucket_counts, 0.9, s.min, s.max) <= 0.15
    assert 0.15 <= percentile(h.bounds, s.bucket_counts, 0.99, s.min, s.max) <= 0.19


def test_histogram_series_count_sum_min_max_and_buckets() -> None:
    h = Histogram("x", "s", "", ("route",), (0.1, 0.5))
    for v in (0.05, 0.1, 0.3, 2.0, 0.07):
        h.record(v, ("/a",))
    h.record(0.2, ("/b",))
    a, b = sorted(h.series(), key=lambda s: s.key)
    assert a.key == ("/a",) and a.count == 5 and a.sum == pytest.approx(2.52)
    assert (a.min, a.max) == (0.05, 2.0)
    assert a.bucket_counts == (3, 1, 1)  # <= 0.1 (upper bounds inclusive), <= 0.5, above
    assert (b.count, b.sum, b.min, b.max, b.bucket_counts) == (1, 0.2, 0.2, 0.2, (0, 1, 0))


def test_histogram_series_are_bounded_and_overflow_counted() -> None:
    h = Histogram("x", "s", "", ("route",), max_series=3)
    for i in range(10):
        h.record(0.1, (f"/r{i}",))
    keys = {s.key for s in h.series()}
    assert len(keys) == 4 and OVERFLOW_KEY in keys and h.overflowed == 7


def test_histogram_keeps_exemplar_per_bucket() -> None:
    h = Histogram("x", "s", "", ())
    h.record(0.003, (), trace_id=0xABC, span_id=0xDEF)
    h.record(0.2, ())
    ex = h.series()[0].exemplars
    assert list(ex) == [0] and ex[0][2:] == (0xABC, 0xDEF)


def _headers(d: dict[str, str]):  # type: ignore[no-untyped-def]
    low = {k.lower(): v for k, v in d.items()}
    return low.get


def test_ratelimit_x_headers_epoch_and_delta() -> None:
    now = 1_800_000_000.0
    rl = ratelimit.parse(
        _headers(
            {
                "X-RateLimit-Limit": "5000",
                "X-RateLimit-Remaining": "4990",
                "X-RateLimit-Reset": str(int(now) + 30),
            }
        ),
        now,
    )
    assert (rl.limit, rl.remaining, rl.reset_seconds) == (5000, 4990, 30)


def test_ratelimit_ietf_structured_and_retry_after() -> None:
    rl = ratelimit.parse(
        _headers({"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'})
    )
    assert (rl.limit, rl.remaining, rl.reset_seconds) == (100, 50, 30)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=120), usegmt=True)
    rl2 = ratelimit.parse(_headers({"Retry-After": date}), now.timestamp())
    assert rl2.reset_seconds == pytest.approx(120, abs=1)
    assert ratelimit.parse(
        _headers({"RateLimit-Limit": "10", "RateLimit-Remaining": "0", "RateLimit-Reset": "7"})
    ) == ratelimit.RateLimit(10, 0, 7)


@pytest.mark.parametrize("bad", ["", "abc", "-1", "inf", "nan", "1e999", "9" * 600, "\x00"])
def test_ratelimit_ignores_garbage(bad: str) -> None:
    rl = ratelimit.parse(_headers({"X-RateLimit-Remaining": bad, "Retry-After": bad, "RateLimit": bad}))
    assert rl.remaining is None or rl.remaining >= 0


def test_measure_without_runtime_just_runs() -> None:
    @otel_perf.measure("plain")
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2
    with otel_perf.measure("block"):
        pass
    assert otel_perf.current_trace_id() == ""


def test_redact_query_handles_encoding_case_and_separators() -> None:
    from otel_perf._analysis.redact import redact_query

    names = frozenset({"api_key", "token"})
    assert redact_query("api%5Fkey=s3cr3t&page=2", names) == "api%5Fkey=REDACTED&page=2"
    assert redact_query("TOKEN=abc;x=1", names) == "TOKEN=REDACTED;x=1"
    assert redact_query("q=token", names) == "q=token"
    assert redact_query("", names) == ""
