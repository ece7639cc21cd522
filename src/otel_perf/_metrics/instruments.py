"""Pre-aggregating metric instruments for the per-request hot path.

The SDK's synchronous instruments cost 4-11 µs per ``record()`` (attribute dict hashing,
view matching, per-call allocation).  Ours take a tuple key whose positions match a fixed
attribute-name tuple, update a preallocated list under one uncontended lock, and only
build attribute dicts at collection time.  The result is converted to ordinary SDK
``Metric`` objects (:mod:`otel_perf._metrics.bridge`), so every exporter sees standard
OpenTelemetry data.

What an exporter or a View asks beyond the default (base-2 exponential buckets, per-exporter
min/max windows for delta temporality, an exemplar for every measurement or none) is added by
:meth:`Histogram.configure`, which swaps in a fuller ``record`` for that instrument only: the
default configuration keeps the lean one.

Series are bounded: past ``max_series`` distinct keys an instrument records into a single
overflow series carrying ``otel.metric.overflow=true`` (as the SDK specification's
cardinality limit does), and counts the overflowed recordings.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from math import isnan
from operator import itemgetter
from typing import Any, TypeVar

from otel_perf._metrics.exponential import ExpBuckets, ExpSnapshot

logger = logging.getLogger("otel_perf")
Key = tuple[object, ...]
_T = TypeVar("_T")
OVERFLOW_KEY: Key = ("__overflow__",)
#: An instrument whose last attribute name is this takes, as the last element of each key, a
#: tuple of (name, value) pairs: attributes the user names (``measure(..., dimensions=...)``).
DIMENSIONS = "*"

#: Semantic-convention bucket bounds for HTTP and DB durations (seconds).
DURATION_BOUNDS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: Body sizes (bytes): the SDK's default histogram bounds, as the official instrumentations use.
SIZE_BOUNDS: tuple[float, ...] = (
    0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000,
)  # fmt: skip
#: Queries per request.
COUNT_BOUNDS: tuple[float, ...] = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)

#: Measurements a histogram (or requests a :class:`RequestRecorder`) queues before it counts
#: them: about 30 KB of tuples at most.
PENDING_MAX = 256
#: A queued request: its key, its route key, seconds, response body size (-1: unknown), statements.
_Pending = tuple[Key, Key, float, int, int]
#: A queued measurement's exemplar: key, value, time_ns, trace_id, span_id.
_Sampled = tuple[Key, float, int, int, int]
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_PAIR = itemgetter(0, 1)
_SECONDS = itemgetter(2)
_SIZE = itemgetter(3)
_QUERIES = itemgetter(4)
_KNOWN = (-1).__lt__  # a size of 0 or more
_INF = float("inf")


def _take(queue: list[_T]) -> list[_T]:
    """Everything in ``queue``, now removed from it.  A slice and a deletion, each one C call:
    an append from another thread lands before or after them, so nothing is counted twice or lost."""
    items = queue[: len(queue)]
    del queue[: len(items)]
    return items


def _grouped(items: list[_T], key_of: Callable[[_T], Any]) -> dict[Any, list[_T]]:
    """``items`` by ``key_of`` each, the keys in the order they first came."""
    keys = list(map(key_of, items))
    if len(dict.fromkeys(keys)) == 1:  # one key (a load test, a single statement): no loop
        return {keys[0]: items}
    groups: dict[Any, list[_T]] = {}
    for key, item in zip(keys, items, strict=True):
        group = groups.get(key)
        if group is None:
            groups[key] = [item]
        else:
            group.append(item)
    return groups


@dataclass(frozen=True)
class HistogramSeries:
    """A point-in-time copy of one histogram series."""

    key: Key
    count: int
    sum: float
    min: float
    max: float
    bucket_counts: tuple[int, ...]
    #: bucket index -> (value, time_ns, trace_id, span_id)
    exemplars: dict[int, tuple[float, int, int, int]]
    #: the exponential buckets, when an exporter or a View asked for them
    exp: ExpSnapshot | None = None
    #: min and max since the window was last taken (delta exporters), else +inf / -inf
    window_min: float = float("inf")
    window_max: float = float("-inf")


class Histogram:
    """Explicit-bucket histogram keyed by a tuple of attribute values."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        attribute_names: tuple[str, ...],
        bounds: Sequence[float] = DURATION_BOUNDS,
        max_series: int = 1000,
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.attribute_names = attribute_names
        self.bounds: tuple[float, ...] = tuple(sorted(set(bounds)))
        self.max_series = max_series
        self.overflowed = 0
        # cell layout: [sum, min, max, bucket_0 .. bucket_n]; exemplars kept apart.  No count:
        # every measurement lands in exactly one bucket, so the buckets add up to it.
        self._cells: dict[Key, list[float]] = {}
        self._exemplars: dict[Key, dict[int, tuple[float, int, int, int]]] = {}
        self._lock = threading.Lock()
        self._width = len(self.bounds) + 1
        # What configure() adds (see there); none of it is touched by the lean record().
        self.exponential: tuple[int, int] | None = None
        self.windows = 0
        self.exemplar_filter = "trace_based"
        self._exp: dict[Key, ExpBuckets] = {}
        self._win: dict[Key, list[float]] = {}
        #: the :class:`RequestRecorder` this histogram is part of (told when configure() changes it)
        self._group: RequestRecorder | None = None
        self._reported = False
        #: what :meth:`record` queued: (key, value), and the exemplars apart
        self._pending: list[tuple[Key, float]] = []
        self._sampled: list[_Sampled] = []

    def record(self, value: float, key: Key, trace_id: int = 0, span_id: int = 0) -> None:
        """Add one measurement; ``trace_id``/``span_id`` (non-zero) keep it as the bucket's exemplar.

        Queued (the exemplar apart), and counted in bulk by :meth:`fold`: every
        :data:`PENDING_MAX` measurements and before the histogram is read.  Counted at once in
        Python, a record cost about 1.2 µs; queued, 0.3-0.4 (timed alone; bench/README.md, "Run 15").
        Keys get a series of their own under ``max_series`` in the order they came, as if each
        measurement had been counted at once.
        """
        pending = self._pending
        pending.append((key, value))
        if trace_id:
            self._sampled.append((key, value, time.time_ns(), trace_id, span_id))
        if len(pending) >= PENDING_MAX:
            self.fold()

    def fold(self) -> None:
        """Count what is queued (this histogram's, and its :class:`RequestRecorder`'s)."""
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        """:meth:`fold`; the caller holds the lock."""
        if self._group is not None:
            self._group._fold_locked()
        # The exemplars first: each is queued after its measurement, so every exemplar taken
        # here has its measurement in the batch taken next (or counted already).
        sampled = _take(self._sampled)
        items = _take(self._pending)
        if items:
            try:
                groups = _grouped(items, _FIRST)
            except TypeError:  # an unhashable key: each measurement alone, that one left out
                self._count_each(items)
            else:
                for key, group in groups.items():
                    self._add_or_each(key, list(map(_SECOND, group)))
        if sampled:
            self._keep_exemplars(sampled)

    def _add_or_each(self, key: Key, values: list[float]) -> None:
        """:meth:`_add_many`, or each value alone if that raises (it raises before it counts any)."""
        try:
            self._add_many(key, values)
        except Exception:
            self._count_each(zip(repeat(key), values))

    def _count_each(self, items: Iterable[tuple[Key, float]]) -> None:
        """Count ``items`` one at a time; one that cannot be counted is reported and left out
        (counted at once, only its own ``record`` failed: the rest of the queue is still counted)."""
        for key, value in items:
            try:
                self._add(value, key, bisect_left(self.bounds, value))
            except Exception as exc:
                if not self._reported:  # once per instrument: a fault in the code that records
                    self._reported = True
                    logger.warning(
                        "otel-perf: internal error in metric %s: the measurement (value %r, key %r) "
                        "could not be counted and was left out; the rest were counted. Please report this "
                        "with the traceback.",
                        self.name, value, key, exc_info=exc,
                    )  # fmt: skip

    def _keep_exemplars(self, sampled: list[_Sampled]) -> None:
        """Each queued measurement's exemplar, the last in its bucket kept (after its count)."""
        cells, bounds, exemplars = self._cells, self.bounds, self._exemplars
        for key, value, time_ns, trace_id, span_id in sampled:
            kept = key if key in cells else OVERFLOW_KEY
            if kept not in cells:  # its measurement was cleared (a forked worker's reset)
                continue
            ex = exemplars.get(kept)
            if ex is None:
                ex = exemplars[kept] = {}
            ex[bisect_left(bounds, value)] = (value, time_ns, trace_id, span_id)

    def _add(self, value: float, key: Key, index: int) -> Key:
        """Count ``value`` in bucket ``index`` of ``key``'s cell; the key it was kept under (the
        overflow key once ``max_series`` keys exist).  The caller holds the lock."""
        cell = self._cells.get(key)
        if cell is None:
            cell, key = self._new_cell(key)
        cell[0] += value
        # Plain comparisons, not min()/max(): two builtin calls per record add up here.
        if value < cell[1]:  # noqa: PLR1730
            cell[1] = value
        if value > cell[2]:  # noqa: PLR1730
            cell[2] = value
        cell[3 + index] += 1
        return key

    def _add_many(self, key: Key, values: list[float]) -> None:
        """:meth:`_add` for each of ``values`` (not empty), in bulk.  The caller holds the lock.

        What can raise (a value that is not a number, a key that cannot be hashed) raises before
        anything is counted."""
        total = sum(values)
        low, high = min(values), max(values)
        one_bucket = True
        if isnan(low) or isnan(high):  # a NaN first (callers leave them out): as _add would
            numbers = [v for v in values if not isnan(v)]
            low, high = min(numbers, default=_INF), max(numbers, default=-_INF)
            one_bucket = False
        cell = self._cells.get(key)
        if cell is None:
            cell, kept = self._new_cell(key)
            if kept is not key:  # the overflow series: _new_cell counted one of them
                self.overflowed += len(values) - 1
        cell[0] += total
        if low < cell[1]:  # noqa: PLR1730
            cell[1] = low
        if high > cell[2]:  # noqa: PLR1730
            cell[2] = high
        bounds = self.bounds
        first = bisect_left(bounds, low)
        if one_bucket and first == bisect_left(bounds, high):  # a constant size or count
            cell[3 + first] += len(values)
            return
        for index, count in _Tally(map(bisect_left, repeat(bounds), values)).items():
            cell[3 + index] += count

    def _record_full(self, value: float, key: Key, trace_id: int = 0, span_id: int = 0) -> None:
        """``record`` plus what :meth:`configure` asked for (only instruments so configured use it)."""
        index = bisect_left(self.bounds, value)
        with self._lock:
            key = self._add(value, key, index)
            mode = self.exemplar_filter
            if mode != "always_off" and (trace_id or mode == "always_on"):
                ex = self._exemplars.get(key)
                if ex is None:
                    ex = self._exemplars[key] = {}
                ex[index] = (value, time.time_ns(), trace_id, span_id)
            if self.exponential is not None:
                buckets = self._exp.get(key)
                if buckets is None:
                    buckets = self._exp[key] = ExpBuckets(*self.exponential)
                buckets.record(value)
            if self.windows:
                win = self._win.get(key)
                if win is None:
                    win = self._win[key] = [float("inf"), float("-inf")] * self.windows
                for i in range(0, len(win), 2):
                    if value < win[i]:  # noqa: PLR1730
                        win[i] = value
                    if value > win[i + 1]:  # noqa: PLR1730
                        win[i + 1] = value

    def configure(
        self,
        *,
        exponential: tuple[int, int] | None = None,
        add_window: bool = False,
        exemplar_filter: str | None = None,
    ) -> int:
        """Ask for more than the default; returns the new window's slot (or -1).

        ``exponential`` (max_size, max_scale) keeps base-2 exponential buckets beside the explicit
        ones; ``add_window`` a min/max per delta exporter, reset when that exporter collects;
        ``exemplar_filter`` ``always_on`` keeps an exemplar for every measurement (trace ids where the
        request was sampled), ``always_off`` none.  Call before recording starts.
        """
        slot = -1
        with self._lock:
            self._fold_locked()  # what was queued, with the settings it was recorded under
            if exponential is not None and self.exponential is None:
                self.exponential = exponential
            if add_window:
                slot = self.windows
                self.windows += 1
                for win in self._win.values():
                    win.extend([float("inf"), float("-inf")])
            if exemplar_filter is not None:
                self.exemplar_filter = exemplar_filter
            full = self.exponential is not None or self.windows or self.exemplar_filter != "trace_based"
            if full:
                self.record = self._record_full  # type: ignore[method-assign]
            else:
                self.__dict__.pop("record", None)
            if self._group is not None:  # under the lock the group shares: no request sees half of it
                self._group.refresh()
        return slot

    def rebound(self, bounds: Sequence[float]) -> None:
        """New explicit bucket bounds (a View's), before anything was recorded."""
        with self._lock:
            if self._cells or self._pending or (self._group is not None and self._group._pending):
                raise RuntimeError(f"{self.name}: bounds can change only before the first measurement")
            self.bounds = tuple(sorted(set(bounds)))
            self._width = len(self.bounds) + 1

    def _new_cell(self, key: Key) -> tuple[list[float], Key]:
        if len(self._cells) >= self.max_series:
            self.overflowed += 1
            key = OVERFLOW_KEY
            cell = self._cells.get(key)
            if cell is not None:
                return cell, key
        cell = [0.0, float("inf"), float("-inf")] + [0] * self._width
        self._cells[key] = cell
        return cell, key

    def series(self, window: int = -1) -> list[HistogramSeries]:
        """Every series now; ``window`` (a slot from :meth:`configure`) also takes and resets its min/max."""
        inf = float("inf")
        with self._lock:
            self._fold_locked()
            items: list[Any] = []
            exp, win = self._exp, self._win
            for k, c in self._cells.items():
                buckets = exp.get(k)
                w_min, w_max = inf, -inf
                if window >= 0:
                    w = win.get(k)
                    if w is not None:
                        w_min, w_max = w[2 * window], w[2 * window + 1]
                        w[2 * window], w[2 * window + 1] = inf, -inf
                items.append(
                    (
                        k,
                        list(c),
                        dict(self._exemplars.get(k, {})),
                        buckets.snapshot() if buckets is not None else None,
                        w_min,
                        w_max,
                    )
                )
        out = []
        for k, c, ex, snap, w_min, w_max in items:
            counts = tuple(int(x) for x in c[3:])
            count = sum(counts)
            out.append(HistogramSeries(k, count, c[0], c[1], c[2], counts, ex, snap, w_min, w_max))
        return out

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._sampled.clear()
            if self._group is not None:  # what it queued goes too (each member is cleared)
                self._group._pending.clear()
                self._group._sampled.clear()
            self._cells.clear()
            self._exemplars.clear()
            self._exp.clear()
            self._win.clear()


class RequestRecorder:
    """What every HTTP request adds to three histograms: queued, and counted in bulk.

    Duration (with its exemplar), response body size and statements per request.  Counted one
    request at a time in Python, even together under one lock, they were about a third of what
    an unsampled request added (175 bytecodes; bench/README.md, "Run 15"); queued, 25.  The three
    histograms share the duration's lock from here on (each still takes it alone to be read,
    reset or configured).  While any of them records more than the
    default (exponential buckets, delta windows, an exemplar filter: :meth:`Histogram.configure`),
    :meth:`record` is each one's own ``record``; read ``record`` on every call, not once.
    The request body size is left out: it is recorded only for requests that declare one.
    """

    def __init__(self, duration: Histogram, response_size: Histogram, queries: Histogram) -> None:
        if any(h._cells or h._pending for h in (duration, response_size, queries)):
            raise RuntimeError("RequestRecorder: the histograms must be grouped before they record")
        if any(h._group is not None for h in (duration, response_size, queries)):
            raise RuntimeError("RequestRecorder: a histogram can be in one group only")
        self.duration, self.response_size, self.queries = duration, response_size, queries
        self._lock = response_size._lock = queries._lock = duration._lock
        for member in (duration, response_size, queries):
            member._group = self
        self._pending: list[_Pending] = []
        #: each queued request that keeps an exemplar
        self._sampled: list[_Sampled] = []
        self.refresh()

    def renew_lock(self) -> None:
        """One new lock for the group (a forked child: a thread of the parent may have held the old one)."""
        lock = threading.Lock()
        self._lock = self.duration._lock = self.response_size._lock = self.queries._lock = lock

    def refresh(self) -> None:
        """Choose the lean or the one-by-one recording (a member was just configured)."""
        members = (self.duration, self.response_size, self.queries)
        if any("record" in member.__dict__ for member in members):  # configure() chose _record_full
            self.record = self._one_by_one  # type: ignore[method-assign]
        else:
            self.__dict__.pop("record", None)

    def record(
        self,
        seconds: float,
        size: int,
        query_count: int,
        key: Key,
        route_key: Key,
        trace_id: int,
        span_id: int,
    ) -> None:
        """One request: ``seconds`` and ``size`` (-1: unknown, not recorded) under ``key``, ``query_count``
        under ``route_key``; ``trace_id``/``span_id`` (non-zero) keep the duration as an exemplar.

        The request is only queued (with its exemplar apart); :meth:`fold` counts the queue into
        the histograms in bulk, every :data:`PENDING_MAX` requests and before any of them is read
        (``series``), mostly in C, in the order the requests came (which keys get a series of their
        own under ``max_series`` is as if each had been counted at once).
        """
        pending = self._pending
        pending.append((key, route_key, seconds, size, query_count))
        if trace_id:
            self._sampled.append((key, seconds, time.time_ns(), trace_id, span_id))
        if len(pending) >= PENDING_MAX:
            self.fold()

    def fold(self) -> None:
        """Count the queued requests into the three histograms."""
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        """:meth:`fold`; the caller holds the lock."""
        sampled = _take(self._sampled)  # first: see Histogram._fold_locked
        items = _take(self._pending)
        if items:
            try:
                groups = _grouped(items, _PAIR)
            except TypeError:  # an unhashable key: each request alone, that one left out
                self._count_each(items)
            else:
                self._count(items, groups)
        if sampled:
            self.duration._keep_exemplars(sampled)

    def _count(self, items: list[_Pending], groups: dict[Any, list[_Pending]]) -> None:
        """Count queued requests into the histograms, grouped by key in the order they came."""
        sized: list[tuple[Key, list[float]]] = []
        for (key, route_key), group in groups.items():
            self.duration._add_or_each(key, list(map(_SECONDS, group)))
            sizes = list(filter(_KNOWN, map(_SIZE, group)))
            if sizes:
                sized.append((key, sizes))
            self.queries._add_or_each(route_key, list(map(_QUERIES, group)))
        response_size = self.response_size
        if len(response_size._cells) + len(sized) > response_size.max_series:
            # Which keys get a series of their own depends on the order: a key's first known
            # size, not its first request (which may have had none), as if counted at once.
            first: dict[Key, int] = {}
            for i, item in enumerate(items):
                if _KNOWN(item[3]):
                    first.setdefault(item[0], i)
            sized.sort(key=lambda pair: first[pair[0]])
        for key, sizes in sized:
            response_size._add_or_each(key, sizes)

    def _count_each(self, items: Iterable[_Pending]) -> None:
        """Count requests one at a time (a batch whose keys could not be grouped)."""
        for key, route_key, seconds, size, query_count in items:
            self.duration._count_each(((key, seconds),))
            if _KNOWN(size):
                self.response_size._count_each(((key, size),))
            self.queries._count_each(((route_key, query_count),))

    def _one_by_one(
        self,
        seconds: float,
        size: int,
        query_count: int,
        key: Key,
        route_key: Key,
        trace_id: int,
        span_id: int,
    ) -> None:
        self.duration.record(seconds, key, trace_id, span_id)
        if size >= 0:
            self.response_size.record(size, key)
        self.queries.record(query_count, route_key)


class _Scalar:
    """A number per key (the shared half of :class:`Counter` and :class:`Gauge`)."""

    def __init__(
        self, name: str, unit: str, description: str, attribute_names: tuple[str, ...], max_series: int
    ) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.attribute_names = attribute_names
        self.max_series = max_series
        self.overflowed = 0
        self._values: dict[Key, float] = {}
        self._lock = threading.Lock()

    def _key(self, key: Key) -> Key:
        """``key``, or the overflow key once ``max_series`` keys exist (caller holds the lock)."""
        if key not in self._values and len(self._values) >= self.max_series:
            self.overflowed += 1
            return OVERFLOW_KEY
        return key

    def values(self) -> dict[Key, float]:
        with self._lock:
            return dict(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class Counter(_Scalar):
    """Monotonic sum (or up-down when ``monotonic=False``) keyed by a tuple of attribute values."""

    kind = "sum"

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        attribute_names: tuple[str, ...],
        monotonic: bool = True,
        max_series: int = 1000,
        callback: Callable[[], Iterable[tuple[float, Key]]] | None = None,
    ) -> None:
        super().__init__(name, unit, description, attribute_names, max_series)
        self.monotonic = monotonic
        #: an observed sum (e.g. requests in flight, an UpDownCounter kept by its owner): its
        #: values come from this callback at collection
        self.callback = callback

    def values(self) -> dict[Key, float]:
        out = super().values()
        if self.callback is not None:
            for value, key in self.callback():
                out[key] = value
        return out

    def add(self, amount: float, key: Key) -> None:
        with self._lock:
            key = self._key(key)
            self._values[key] = self._values.get(key, 0) + amount


class Gauge(_Scalar):
    """Last value per key, set synchronously or produced by a callback at collection."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        unit: str,
        description: str,
        attribute_names: tuple[str, ...],
        callback: Callable[[], Iterable[tuple[float, Key]]] | None = None,
        max_series: int = 1000,
    ) -> None:
        super().__init__(name, unit, description, attribute_names, max_series)
        self.callback = callback

    def set(self, value: float, key: Key) -> None:
        with self._lock:
            self._values[self._key(key)] = value

    def values(self) -> dict[Key, float]:
        out = super().values()
        if self.callback is not None:
            for value, key in self.callback():
                out[key] = value
        return out


Instrument = Histogram | Counter | Gauge
_I = TypeVar("_I", Histogram, Counter, Gauge)


class Registry:
    """All fast instruments of the process, in registration order."""

    def __init__(self, max_series: int = 1000) -> None:
        self.max_series = max_series
        self.start_time_ns = time.time_ns()
        self._instruments: dict[str, Instrument] = {}
        #: what reads the instruments for an exporter (``bridge.Streams``): told about new
        #: histograms (to configure them) and about resets (to forget their delta state)
        self.consumers: list[Any] = []

    def histogram(
        self,
        name: str,
        unit: str,
        description: str,
        attribute_names: tuple[str, ...],
        bounds: Sequence[float] = DURATION_BOUNDS,
    ) -> Histogram:
        inst = Histogram(name, unit, description, attribute_names, bounds, self.max_series)
        return self._add(inst)

    def counter(
        self,
        name: str,
        unit: str,
        description: str,
        attribute_names: tuple[str, ...],
        monotonic: bool = True,
        callback: Callable[[], Iterable[tuple[float, Key]]] | None = None,
    ) -> Counter:
        return self._add(
            Counter(name, unit, description, attribute_names, monotonic, self.max_series, callback)
        )

    def gauge(
        self,
        name: str,
        unit: str,
        description: str,
        attribute_names: tuple[str, ...],
        callback: Callable[[], Iterable[tuple[float, Key]]] | None = None,
    ) -> Gauge:
        return self._add(Gauge(name, unit, description, attribute_names, callback, self.max_series))

    def _add(self, inst: _I) -> _I:
        if inst.name in self._instruments:
            raise ValueError(f"metric {inst.name!r} registered twice")
        self._instruments[inst.name] = inst
        for consumer in self.consumers:
            consumer.prepare(inst)
        return inst

    def attach(self, consumer: Any) -> None:
        """Add an exporter's reader of the instruments; it prepares every instrument, now and later."""
        self.consumers.append(consumer)
        for inst in self._instruments.values():
            consumer.prepare(inst)

    def reset(self) -> None:
        """Empty every instrument and start anew (a forked worker): consumers forget their delta state."""
        for inst in self._instruments.values():
            inst.clear()
            inst.overflowed = 0
        self.start_time_ns = time.time_ns()
        for consumer in self.consumers:
            consumer.reset()

    def get(self, name: str) -> Instrument | None:
        return self._instruments.get(name)

    def instruments(self) -> list[Instrument]:
        return list(self._instruments.values())

    def overflowed(self) -> int:
        return sum(i.overflowed for i in self._instruments.values())
