"""The latency sketch: quantiles within its relative error of the exact ones, merging is lossless."""

from __future__ import annotations

import numpy as np
import pytest

from collector.graph.sketch import RELATIVE_ACCURACY, LatencySketch

QS = (0.5, 0.9, 0.95, 0.99, 0.999, 0.0, 1.0)


def sketch_of(values) -> LatencySketch:
    sketch = LatencySketch()
    for value in values:
        sketch.add(int(value))
    return sketch


def lognormal_latencies(seed: int, size: int) -> np.ndarray:
    """Latencies in ns around 5 ms with a long tail, like a real service."""
    return np.random.default_rng(seed).lognormal(mean=np.log(5e6), sigma=1.2, size=size).astype(np.int64) + 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_are_within_the_relative_accuracy_of_numpy_order_statistics(seed):
    values = lognormal_latencies(seed, 20_000)
    sketch = sketch_of(values)
    for q in QS:
        exact = np.percentile(values, q * 100, method="lower")
        estimate = sketch.quantile(q)
        assert abs(estimate - exact) <= RELATIVE_ACCURACY * exact + 1e-9, (q, estimate, exact)


def test_merged_windows_give_the_same_quantiles_as_one_sketch_of_everything():
    values = lognormal_latencies(7, 30_000)
    whole = sketch_of(values)
    merged = LatencySketch()
    for part in np.array_split(values, 17):  # e.g. 17 windows, or several collectors
        merged.merge(sketch_of(part))
    assert merged.buckets == whole.buckets
    assert (merged.count, merged.total_ns, merged.min_ns, merged.max_ns) == (
        whole.count,
        whole.total_ns,
        whole.min_ns,
        whole.max_ns,
    )
    assert merged.quantiles((0.5, 0.95, 0.99)) == whole.quantiles((0.5, 0.95, 0.99))


def test_a_bimodal_distribution_keeps_both_modes():
    # 90 % fast (1 ms), 10 % slow (200 ms): an average of percentiles would blur this; the sketch must not.
    values = [1_000_000] * 900 + [200_000_000] * 100
    sketch = sketch_of(values)
    assert sketch.quantile(0.5) == pytest.approx(1_000_000, rel=RELATIVE_ACCURACY)
    assert sketch.quantile(0.95) == pytest.approx(200_000_000, rel=RELATIVE_ACCURACY)


def test_empty_sketch_has_no_quantiles_and_zero_durations_are_counted():
    assert LatencySketch().quantiles((0.5, 0.99)) == [None, None]
    sketch = sketch_of([0, 0, 0, 10_000])
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == pytest.approx(10_000, rel=RELATIVE_ACCURACY)
    assert sketch.count == 4


def test_cumulative_counts_match_exact_counts_up_to_values_near_a_bound():
    values = lognormal_latencies(11, 10_000)
    bounds = [1e6, 2.5e6, 5e6, 1e7, 5e7]
    counts = sketch_of(values).cumulative_counts(bounds)
    for bound, count in zip(bounds, counts):
        surely_below = int(np.sum(values <= bound * (1 - 2 * RELATIVE_ACCURACY)))
        possibly_below = int(np.sum(values <= bound * (1 + 2 * RELATIVE_ACCURACY)))
        assert surely_below <= count <= possibly_below
    assert counts == sorted(counts)
