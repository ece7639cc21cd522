"""Unit behaviour: percentiles from histograms, rate-limit headers, instruments, public API."""

from __future__ import annotations

import random
import sys
import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest

import otel_perf
from otel_perf._analysis import ratelimit
from otel_perf._analysis.stats import percentile
from otel_perf._metrics import instruments
from otel_perf._metrics.instruments import (
    DURATION_BOUNDS,
    OVERFLOW_KEY,
    PENDING_MAX,
    Histogram,
    RequestRecorder,
)


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


def _request_histograms(max_series: int = 1000) -> tuple[Histogram, Histogram, Histogram]:
    key = ("route", "method", "status")
    return (
        Histogram("d", "s", "", key, (0.1, 0.5), max_series),
        Histogram("b", "By", "", key, (10, 100), max_series),
        Histogram("q", "{query}", "", key[:2], (1, 5), max_series),
    )


REQUESTS = [
    # seconds, body bytes (-1: unknown), queries, key, trace id, span id
    (0.05, 12, 0, ("/a", "GET", 200), 0, 0),
    (0.3, -1, 3, ("/a", "GET", 200), 0xA1, 0xB1),
    (2.0, 500, 7, ("/a", "GET", 500), 0xA2, 0xB2),
    (0.07, 0, 1, ("/b", "POST", 201), 0, 0),
    (0.2, 40, 2, ("/c", "GET", 200), 0xA3, 0xB3),
    (0.6, 99, 9, ("/d", "GET", 200), 0, 0),
]


#: What an exporter's settings make Histogram.configure() ask for (None: the default, lean).
SETTINGS: dict[str, dict[str, Any] | None] = {
    "default": None,
    "always_off": {"exemplar_filter": "always_off"},  # OTEL_METRICS_EXEMPLAR_FILTER
    "always_on": {"exemplar_filter": "always_on"},
    "exponential": {"exponential": (160, 20)},  # base2_exponential_bucket_histogram
    "delta window": {"add_window": True},  # a delta exporter's min/max per window
}


def _state(h: Histogram) -> list[tuple[object, ...]]:
    """Every series of ``h``; exemplars without their timestamps."""
    out = []
    for s in h.series(0 if h.windows else -1):
        exemplars = {i: e[:1] + e[2:] for i, e in s.exemplars.items()}
        window = (s.window_min, s.window_max)
        out.append((s.key, s.count, s.sum, s.min, s.max, s.bucket_counts, exemplars, s.exp, window))
    return sorted(out, key=repr)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("configured", ["before grouping", "after grouping"])
@pytest.mark.parametrize("max_series", [1000, 2])
def test_request_recorder_records_what_three_records_would(
    setting: str, configured: str, max_series: int
) -> None:
    grouped, alone = _request_histograms(max_series), _request_histograms(max_series)
    asked = SETTINGS[setting]
    if asked is not None:
        for h in alone:
            h.configure(**asked)
    if asked is not None and configured == "before grouping":  # an exporter attached first
        for h in grouped:
            h.configure(**asked)
    recorder = RequestRecorder(*grouped)
    if asked is not None and configured == "after grouping":
        grouped[1].configure(**asked)  # one member is enough to go one by one
        assert "record" in recorder.__dict__
        for h in (grouped[0], grouped[2]):
            h.configure(**asked)
    assert ("record" in recorder.__dict__) == (asked is not None)
    for seconds, size, queries, key, trace_id, span_id in REQUESTS:
        recorder.record(seconds, size, queries, key, key[:2], trace_id, span_id)
        duration, sizes, counts = alone
        duration.record(seconds, key, trace_id, span_id)
        if size >= 0:
            sizes.record(size, key)
        counts.record(queries, key[:2])
    for got, want in zip(grouped, alone, strict=True):
        assert _state(got) == _state(want)
        assert got.overflowed == want.overflowed
    assert any(s[6] for s in _state(grouped[0])) == (setting != "always_off")
    assert grouped[0]._lock is grouped[1]._lock is grouped[2]._lock


def test_request_recorder_goes_lean_again_and_takes_each_histogram_once() -> None:
    grouped = _request_histograms()
    recorder = RequestRecorder(*grouped)
    grouped[2].configure(exemplar_filter="always_on")
    assert "record" in recorder.__dict__
    grouped[2].configure(exemplar_filter="trace_based")  # back to the default
    assert "record" not in recorder.__dict__
    with pytest.raises(RuntimeError, match="one group only"):
        RequestRecorder(*grouped)


def test_request_recorder_refuses_histograms_that_recorded() -> None:
    duration, sizes, counts = _request_histograms()
    sizes.record(1, ("/a", "GET", 200))
    with pytest.raises(RuntimeError, match="before they record"):
        RequestRecorder(duration, sizes, counts)


def test_request_recorder_counts_its_queue_every_pending_max_requests_and_when_read() -> None:
    grouped = _request_histograms()
    recorder = RequestRecorder(*grouped)
    key = ("/a", "GET", 200)
    for _ in range(PENDING_MAX - 1):
        recorder.record(0.05, 12, 1, key, key[:2], 0, 0)
    assert grouped[0]._cells == {}  # queued, not counted yet
    recorder.record(0.3, -1, 4, key, key[:2], 0xA1, 0xB1)  # the queue is full: counted
    assert recorder._pending == [] and recorder._sampled == []
    (cell,) = grouped[0]._cells.values()
    assert sum(cell[3:]) == PENDING_MAX and cell[1:3] == [0.05, 0.3]
    recorder.record(2.0, 7, 0, key, key[:2], 0, 0)
    (duration,) = grouped[0].series()  # reading counts what is queued
    assert duration.count == PENDING_MAX + 1 and duration.max == 2.0
    assert [e[2:] for e in duration.exemplars.values()] == [(0xA1, 0xB1)]
    (sizes,) = grouped[1].series()
    assert (sizes.count, sizes.sum, sizes.min, sizes.max) == (
        PENDING_MAX,
        12 * (PENDING_MAX - 1) + 7,
        0 + 7,
        12,
    )
    (queries,) = grouped[2].series()
    assert queries.key == key[:2] and queries.sum == PENDING_MAX - 1 + 4 and queries.min == 0


def test_request_recorder_queue_is_dropped_by_clear_and_counted_before_configure() -> None:
    grouped = _request_histograms()
    recorder = RequestRecorder(*grouped)
    key = ("/a", "GET", 200)
    recorder.record(0.05, 12, 1, key, key[:2], 0xA1, 0xB1)
    for h in grouped:  # a forked worker's reset: nothing of the parent's is counted
        h.clear()
    assert grouped[0].series() == [] and grouped[1].series() == [] and grouped[2].series() == []
    recorder.record(0.05, 12, 1, key, key[:2], 0, 0)
    grouped[0].configure(exponential=(160, 20))  # one by one from here: what was queued is counted
    assert recorder._pending == []
    recorder.record(0.07, 12, 1, key, key[:2], 0, 0)
    (duration,) = grouped[0].series()
    assert duration.count == 2 and duration.exp is not None and duration.exp.count == 1
    queued = _request_histograms()
    RequestRecorder(*queued).record(0.05, 12, 1, key, key[:2], 0, 0)
    assert queued[1]._cells == {}
    with pytest.raises(RuntimeError, match="before the first measurement"):
        queued[1].rebound((1, 2))  # a measurement is queued: the bounds are taken


@pytest.mark.parametrize("max_series", [1000, 2])
@pytest.mark.parametrize("n", [5, PENDING_MAX, 3 * PENDING_MAX + 7])
def test_queued_histogram_counts_what_counting_at_once_would(max_series: int, n: int) -> None:
    rng = random.Random(n)
    queued = Histogram("d", "s", "", ("k",), (0.1, 0.5), max_series)
    at_once = Histogram("d", "s", "", ("k",), (0.1, 0.5), max_series)
    at_once.configure(exponential=(160, 20))  # counted at each record (_record_full)
    for i in range(n):
        key = (rng.choice("abc"),) if i > 2 else ("a",)  # one key at first: the fast fold
        value = rng.choice([0.05, 0.1, 0.3, 0.5, 2.0])
        sampled = (i + 1, i + 2) if i % 4 == 0 else (0, 0)
        queued.record(value, key, *sampled)
        at_once.record(value, key, *sampled)
    assert len(queued._pending) == n % PENDING_MAX
    # the sums added in another order: equal to the last few bits
    got = [(*s[:2], round(s[2], 9), *s[3:7]) for s in _state(queued)]  # type: ignore[call-overload]
    assert got == [(*s[:2], round(s[2], 9), *s[3:7]) for s in _state(at_once)]  # type: ignore[call-overload]
    assert queued.overflowed == at_once.overflowed
    assert queued._pending == [] and sum(s[1] for s in got) == n


@pytest.mark.parametrize("recorder_too", [False, True])
def test_queues_lose_nothing_to_concurrent_reads(recorder_too: bool) -> None:
    grouped = _request_histograms()
    recorder = RequestRecorder(*grouped)
    statements = Histogram("s", "s", "", ("k",), (0.1, 0.5))
    per_thread, threads = 3000, 4
    stop = threading.Event()

    def write(n: int) -> None:
        key = (f"/r{n}", "GET", 200)
        for i in range(per_thread):
            if recorder_too:
                recorder.record(0.01 * (i % 7), i % 50, i % 3, key, key[:2], i % 5, 1)
            statements.record(i % 3, key[:1], i % 5, 1)

    def read() -> None:
        while not stop.is_set():
            grouped[0].series()
            statements.series()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes, often
    try:
        reader = threading.Thread(target=read)
        reader.start()
        writers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        reader.join()
    finally:
        sys.setswitchinterval(interval)
    # every measurement counted once: counts, integer sums and buckets exact for every key
    per_key_queries = sum(i % 3 for i in range(per_thread))
    checked = [statements, *grouped] if recorder_too else [statements]
    for h in checked:
        series = h.series()
        assert len(series) == threads and all(s.count == per_thread for s in series), h.name
        assert all(s.key != OVERFLOW_KEY for s in series), h.name
    for h in checked[:2]:  # the histograms with exemplars: each series has its own
        assert all(s.exemplars for s in h.series()), h.name
    assert all(s.sum == per_key_queries for s in statements.series())
    if recorder_too:
        assert all(s.sum == sum(i % 50 for i in range(per_thread)) for s in grouped[1].series())
        assert all(s.sum == per_key_queries for s in grouped[2].series())
        assert all(s.bucket_counts == (2000, 1000, 0) for s in grouped[2].series())  # bounds (1, 5)


def test_an_exemplar_queued_during_a_fold_stays_with_its_series(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Histogram("d", "s", "", ("k",), (0.1, 0.5))
    h.record(0.05, ("old",))
    takes = []
    real_take = instruments._take

    def take_with_a_record_between(queue: list[Any]) -> list[Any]:
        items = real_take(queue)
        takes.append(len(items))
        if len(takes) == 1:  # another thread records between the fold's two takes
            h._pending.append((("new",), 0.3))
            h._sampled.append((("new",), 0.3, 1, 170, 187))
        return items

    monkeypatch.setattr(instruments, "_take", take_with_a_record_between)
    h.series()
    monkeypatch.setattr(instruments, "_take", real_take)
    series = {s.key: s for s in h.series()}
    assert set(series) == {("old",), ("new",)}  # no overflow series: nothing overflowed
    assert [e[2:] for e in series[("new",)].exemplars.values()] == [(170, 187)]


def test_request_recorder_gives_size_series_in_the_order_sizes_came() -> None:
    grouped = _request_histograms(max_series=1)
    recorder = RequestRecorder(*grouped)
    for path, size in (("/a", -1), ("/b", 5), ("/a", 7)):  # /a's first request has no known size
        recorder.record(0.05, size, 0, (path, "GET", 200), (path, "GET"), 0, 0)
    sizes = {s.key: s.sum for s in grouped[1].series()}
    assert sizes == {("/b", "GET", 200): 5, OVERFLOW_KEY: 7}  # as counting at once: /b first
    assert {s.key for s in grouped[0].series()} == {("/a", "GET", 200), OVERFLOW_KEY}


def test_a_measurement_that_cannot_be_counted_costs_only_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OTEL_PERF__RAISE_ERRORS", raising=False)
    h = Histogram("bad", "s", "", ("k",), (0.1, 0.5))
    grouped = _request_histograms()
    recorder = RequestRecorder(*grouped)
    for i in range(299):
        h.record(0.05, ("a",) if i != 10 else (["unhashable"],))  # type: ignore[arg-type]
        h.record(0.3, ("b",))
        key = ("/a", "GET", 200) if i != 20 else (["unhashable"],)
        recorder.record(0.05, 3, 1, key, key[:2], 0, 0)  # type: ignore[arg-type]
    h.record(float("nan"), ("c",))  # a NaN first in its group: counted as counting at once would
    h.record(0.3, ("c",))
    h.record("0.2", ("d",))  # type: ignore[arg-type]  # not a number: the rest of its group counts
    h.record(0.2, ("d",))
    with caplog.at_level("WARNING", logger="otel_perf"):
        counted = {s.key: s for s in h.series()}
        assert {s.key: s.count for s in grouped[0].series()} == {("/a", "GET", 200): 298}
    assert counted[("a",)].count == 298 and counted[("b",)].count == 299
    assert counted[("c",)].bucket_counts == (1, 1, 0) and counted[("c",)].min == 0.3
    assert (counted[("d",)].count, counted[("d",)].sum) == (1, 0.2)
    reported = [r.args[0] for r in caplog.records if "internal error in metric" in r.getMessage()]  # type: ignore[index]
    assert sorted(reported) == ["b", "bad", "d", "q"]  # once per instrument


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


def test_basicconfig_behaves_as_without_us_in_every_case() -> None:
    """With our line and OTLP handlers on the root: ``level=`` alone sets the level (a bad one
    raises, as without us); a bad argument or a failing file raises once, ours put back; a
    stream gets the app's handler and the OTLP one, not ours."""
    import io
    import logging

    import pytest

    from otel_perf._integrations import logs

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), dict(logs._state))
    calls: list[dict[str, object]] = []

    def original(**kwargs: object) -> None:
        calls.append(kwargs)
        logging.basicConfig(**kwargs)  # type: ignore[arg-type]

    basic = logs._basic_config(original)
    otlp = logging.NullHandler()
    try:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        logs._state.pop("stream", None)
        logs._state.pop("otlp", None)
        logs.install_handlers("json", "svc", otlp)
        ours = list(root.handlers)
        assert len(ours) == 2

        basic(level=logging.DEBUG)
        assert root.level == logging.DEBUG and root.handlers == ours and calls == []
        with pytest.raises(ValueError):
            basic(level="info")  # logging knows "INFO", not "info"
        with pytest.raises(ValueError):
            basic(lvl=10)
        assert root.handlers == ours
        with pytest.raises(FileNotFoundError):
            basic(filename="/nonexistent-dir/x.log")
        assert root.handlers == ours and len(calls) == 2  # each call of the app's run once
        out = io.StringIO()
        basic(stream=out, format="APP %(message)s", level=logging.INFO)
        assert [type(h) for h in root.handlers].count(logging.StreamHandler) == 1
        assert logs._state["stream"] not in root.handlers and logs._state["otlp"] in root.handlers
        logging.getLogger("cron").info("hello")
        assert out.getvalue() == "APP hello\n"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[1]:
            root.addHandler(handler)
        root.setLevel(saved[0])
        logs._state.clear()
        logs._state.update(saved[2])
