"""Base-2 exponential histogram buckets, for ``base2_exponential_bucket_histogram``.

The semantics are the SDK's ``ExponentialBucketHistogramAggregation`` (and the
specification's): bucket ``i`` at scale ``s`` holds values in ``(base**i, base**(i+1)]``
with ``base = 2**(2**-s)``; a series starts at ``max_scale`` (20) and halves its
resolution (scale - 1, neighbouring buckets merged) whenever the occupied index range
of either sign would exceed ``max_size`` (160) buckets.  Zero goes to ``zero_count``.

Written for our pre-aggregating instruments: one :class:`ExpBuckets` per series, updated
under the instrument's lock, only when an exporter or a View asks for exponential
histograms (the explicit buckets the stats endpoint reads are kept as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import floor, frexp, ldexp, log

DEFAULT_MAX_SIZE = 160
DEFAULT_MAX_SCALE = 20
MIN_SCALE = -10
_INV_LN2 = 1.0 / log(2.0)


def index_of(value: float, scale: int) -> int:
    """The bucket index of ``value`` (> 0) at ``scale``: ``base**index < value <= base**(index+1)``."""
    mantissa, exponent = frexp(value)  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
    if scale > 0:
        if mantissa == 0.5:  # an exact power of two is the upper edge of the bucket below it
            return ((exponent - 1) << scale) - 1
        return floor(log(value) * ldexp(_INV_LN2, scale))
    power = exponent - 2 if mantissa == 0.5 else exponent - 1
    return power >> -scale


@dataclass(frozen=True)
class ExpSnapshot:
    """A point-in-time copy of one series' exponential buckets."""

    scale: int
    zero_count: int
    positive_offset: int
    positive: tuple[int, ...]
    negative_offset: int
    negative: tuple[int, ...]

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.positive) + sum(self.negative)

    def downscaled(self, scale: int) -> ExpSnapshot:
        """The same counts at a coarser ``scale`` (<= this one)."""
        change = self.scale - scale
        if change <= 0:
            return self
        pos_offset, pos = _downscale(self.positive_offset, self.positive, change)
        neg_offset, neg = _downscale(self.negative_offset, self.negative, change)
        return ExpSnapshot(scale, self.zero_count, pos_offset, tuple(pos), neg_offset, tuple(neg))

    def minus(self, earlier: ExpSnapshot) -> ExpSnapshot:
        """What was recorded since ``earlier`` (a snapshot of the same series; scales only shrink)."""
        scale = min(self.scale, earlier.scale)
        now, before = self.downscaled(scale), earlier.downscaled(scale)
        pos_offset, pos = _subtract(
            now.positive_offset, now.positive, before.positive_offset, before.positive
        )
        neg_offset, neg = _subtract(
            now.negative_offset, now.negative, before.negative_offset, before.negative
        )
        return ExpSnapshot(scale, now.zero_count - before.zero_count, pos_offset, pos, neg_offset, neg)

    def plus(self, other: ExpSnapshot) -> ExpSnapshot:
        """Both series' counts together (at the coarser scale; used when a View drops attributes).

        The result may hold more than ``max_size`` buckets; merged series are rare and short-lived.
        """
        scale = min(self.scale, other.scale)
        a, b = self.downscaled(scale), other.downscaled(scale)
        pos_offset, pos = _add(a.positive_offset, a.positive, b.positive_offset, b.positive)
        neg_offset, neg = _add(a.negative_offset, a.negative, b.negative_offset, b.negative)
        return ExpSnapshot(scale, a.zero_count + b.zero_count, pos_offset, pos, neg_offset, neg)


def _downscale(offset: int, counts: tuple[int, ...] | list[int], change: int) -> tuple[int, list[int]]:
    if not counts:
        return 0, []
    new_offset = offset >> change
    out = [0] * (((offset + len(counts) - 1) >> change) - new_offset + 1)
    for i, count in enumerate(counts):
        out[((offset + i) >> change) - new_offset] += count
    return new_offset, out


def _combine(
    a_offset: int, a: tuple[int, ...], b_offset: int, b: tuple[int, ...], sign: int
) -> tuple[int, tuple[int, ...]]:
    if not b:
        return a_offset, a
    if not a:
        a_offset = b_offset
    low = min(a_offset, b_offset)
    high = max(a_offset + len(a), b_offset + len(b))
    out = [0] * (high - low)
    for i, count in enumerate(a):
        out[a_offset - low + i] += count
    for i, count in enumerate(b):
        out[b_offset - low + i] += sign * count
    start, end = 0, len(out)
    while start < end and out[start] == 0:
        start += 1
    while end > start and out[end - 1] == 0:
        end -= 1
    if start == end:
        return 0, ()
    return low + start, tuple(out[start:end])


def _subtract(
    a_offset: int, a: tuple[int, ...], b_offset: int, b: tuple[int, ...]
) -> tuple[int, tuple[int, ...]]:
    return _combine(a_offset, a, b_offset, b, -1)


def _add(a_offset: int, a: tuple[int, ...], b_offset: int, b: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    return _combine(a_offset, a, b_offset, b, 1)


class ExpBuckets:
    """The exponential buckets of one series (not thread-safe: the instrument's lock guards it)."""

    __slots__ = ("max_size", "neg", "neg_offset", "pos", "pos_offset", "scale", "zero_count")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, max_scale: int = DEFAULT_MAX_SCALE) -> None:
        self.max_size = max_size
        self.scale = max_scale
        self.zero_count = 0
        self.pos_offset = 0
        self.pos: list[int] = []
        self.neg_offset = 0
        self.neg: list[int] = []

    def record(self, value: float) -> None:
        if value > 0.0:
            self._add(value, False)
        elif value < 0.0:
            self._add(-value, True)
        elif value == 0.0:
            self.zero_count += 1
        # NaN is not recorded (the SDK's aggregation skips it too)

    def _add(self, magnitude: float, negative: bool) -> None:
        if magnitude == float("inf"):
            return
        index = index_of(magnitude, self.scale)
        counts = self.neg if negative else self.pos
        offset = self.neg_offset if negative else self.pos_offset
        if not counts:
            counts.append(1)
            self._set_offset(negative, index)
            return
        high = offset + len(counts) - 1
        if offset <= index <= high:
            counts[index - offset] += 1
            return
        low, high = min(offset, index), max(high, index)
        change = 0
        while high - low + 1 > self.max_size:
            low >>= 1
            high >>= 1
            change += 1
        if change:
            if self.scale - change < MIN_SCALE:  # values beyond any double's range: keep what fits
                change = self.scale - MIN_SCALE
            self._downscale(change)
            index = index_of(magnitude, self.scale)
            counts = self.neg if negative else self.pos
            offset = self.neg_offset if negative else self.pos_offset
        if index < offset:
            counts[0:0] = [0] * (offset - index)
            self._set_offset(negative, index)
            offset = index
        elif index >= offset + len(counts):
            counts.extend([0] * (index - offset - len(counts) + 1))
        counts[index - offset] += 1

    def _set_offset(self, negative: bool, offset: int) -> None:
        if negative:
            self.neg_offset = offset
        else:
            self.pos_offset = offset

    def _downscale(self, change: int) -> None:
        self.pos_offset, self.pos = _downscale(self.pos_offset, self.pos, change)
        self.neg_offset, self.neg = _downscale(self.neg_offset, self.neg, change)
        self.scale -= change

    def snapshot(self) -> ExpSnapshot:
        return ExpSnapshot(
            self.scale, self.zero_count, self.pos_offset, tuple(self.pos), self.neg_offset, tuple(self.neg)
        )
