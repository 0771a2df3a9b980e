"""A latency distribution that can be added to one value at a time and merged by plain addition.

Percentiles of an edge must be exact enough to steer traffic and must combine across 10-second
windows and across collectors; averaging per-window percentiles does neither. So latencies are
counted in logarithmic buckets (the DDSketch mapping): bucket ``i`` holds the values in
``(GAMMA**(i-1), GAMMA**i]`` nanoseconds, and any quantile read back is within
``RELATIVE_ACCURACY`` of the true order statistic. Merging is adding counts per bucket index.

The bucket index scheme is written here rather than taken from the ``ddsketch`` package because
it is a storage contract: the ClickHouse rollup keeps ``(index, count)`` arrays merged with
``sumMap``, and the Prometheus exposition derives cumulative ``le`` buckets from it, so the
mapping must be explicit, stable and cheap (one ``log`` and one dict update per value).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from itertools import accumulate

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INVERSE_LOG_GAMMA = 1 / math.log(GAMMA)
# The value that represents bucket i is REPRESENTATIVE_FACTOR * GAMMA**i: its relative distance to
# either bucket bound is exactly RELATIVE_ACCURACY.
_REPRESENTATIVE_FACTOR = 2 / (GAMMA + 1)


def bucket_index(value_ns: float) -> int:
    """The bucket a positive value falls in (values <= 0 are counted apart, as zeros)."""
    return math.ceil(math.log(value_ns) * _INVERSE_LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The value reported for every member of bucket ``index``."""
    return _REPRESENTATIVE_FACTOR * GAMMA**index


class LatencySketch:
    """Counts of durations (nanoseconds) per logarithmic bucket, plus count, sum, min and max."""

    __slots__ = ("buckets", "zeros", "count", "total_ns", "min_ns", "max_ns")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.zeros = 0
        self.count = 0
        self.total_ns = 0
        self.min_ns = math.inf
        self.max_ns = 0

    @classmethod
    def from_buckets(
        cls, indexes: list[int], counts: list[int], *, zeros: int, total_ns: int, min_ns: int, max_ns: int
    ) -> LatencySketch:
        """A sketch rebuilt from its stored parts (the ClickHouse rollup's bucket arrays and totals)."""
        sketch = cls()
        sketch.buckets = dict(zip(indexes, counts))
        sketch.zeros = zeros
        sketch.count = zeros + sum(counts)
        sketch.total_ns = total_ns
        if sketch.count:
            sketch.min_ns, sketch.max_ns = min_ns, max_ns
        return sketch

    def add(self, value_ns: int, index: int | None = None) -> None:
        """Count one value; ``index`` is its ``bucket_index`` when the caller computed it already
        (one value counted in several sketches takes one ``log``)."""
        self.count += 1
        self.total_ns += value_ns
        if value_ns < self.min_ns:
            self.min_ns = value_ns
        if value_ns > self.max_ns:
            self.max_ns = value_ns
        if value_ns <= 0:
            self.zeros += 1
            return
        if index is None:
            index = bucket_index(value_ns)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1

    def merge(self, other: LatencySketch) -> None:
        buckets = self.buckets
        if buckets:
            get = buckets.get
            for index, count in other.buckets.items():
                buckets[index] = get(index, 0) + count
        else:
            buckets.update(other.buckets)
        self.zeros += other.zeros
        self.count += other.count
        self.total_ns += other.total_ns
        if other.min_ns < self.min_ns:
            self.min_ns = other.min_ns
        if other.max_ns > self.max_ns:
            self.max_ns = other.max_ns

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1) in nanoseconds; None when the sketch is empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Quantiles ``qs`` (0..1) in nanoseconds.

        Each is within RELATIVE_ACCURACY of the order statistic of rank ``floor(q * (count - 1))``
        (numpy's ``method="lower"``); None for every q when the sketch is empty."""
        if self.count == 0:
            return [None] * len(qs)
        indexes = sorted(self.buckets)
        # below[k]: how many values lie below bucket indexes[k] (the zeros and earlier buckets).
        below = list(accumulate(map(self.buckets.__getitem__, indexes), initial=self.zeros))
        results: list[float | None] = []
        for q in qs:
            rank = math.floor(q * (self.count - 1))
            if rank < self.zeros:
                results.append(0.0)
                continue
            index = indexes[bisect_right(below, rank) - 1]
            # The extremes are known exactly; never report a value outside them.
            results.append(min(max(bucket_value(index), self.min_ns), self.max_ns))
        return results

    def mean_ns(self) -> float | None:
        return self.total_ns / self.count if self.count else None

    def cumulative_counts(self, bounds_ns: list[float]) -> list[int]:
        """How many values lie at or below each bound (ascending), as Prometheus ``le`` buckets.

        A bucket is counted under a bound when its representative value is, so a count can be off
        only by the values within RELATIVE_ACCURACY of that bound."""
        per_bound = [0] * len(bounds_ns)
        for index, count in self.buckets.items():
            position = bisect_left(bounds_ns, bucket_value(index))
            if position < len(bounds_ns):
                per_bound[position] += count
        cumulative = []
        running = self.zeros
        for count in per_bound:
            running += count
            cumulative.append(running)
        return cumulative
