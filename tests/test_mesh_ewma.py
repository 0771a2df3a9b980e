"""Peak-EWMA load: jumps to slow observations at once, forgets them only as time passes."""

import math

import pytest

from mesh.ewma import PeakEwma


def test_new_endpoint_costs_its_initial_rtt_times_pending_plus_one():
    ewma = PeakEwma(decay_s=10.0, initial_rtt_s=0.05, now=0.0)
    assert ewma.load(now=0.0) == pytest.approx(0.05)
    ewma.start(now=0.0)
    ewma.start(now=0.0)
    assert ewma.pending == 2
    assert ewma.load(now=0.0) == pytest.approx(0.15)


def test_a_slower_response_becomes_the_estimate_at_once():
    ewma = PeakEwma(decay_s=10.0, initial_rtt_s=0.01, now=0.0)
    t0 = ewma.start(now=0.0)
    ewma.finish(t0, now=0.5)
    assert ewma.pending == 0
    assert ewma.load(now=0.5) == pytest.approx(0.5)


def test_faster_responses_pull_the_estimate_down_by_elapsed_time():
    ewma = PeakEwma(decay_s=10.0, initial_rtt_s=1.0, now=0.0)
    t0 = ewma.start(now=9.9)
    ewma.finish(t0, now=10.0)  # 0.1 s observed, 10 s (one decay period) after the last update
    weight = math.exp(-1.0)
    assert ewma.rtt_s == pytest.approx(1.0 * weight + 0.1 * (1 - weight))


def test_idle_load_decays_toward_zero_so_the_endpoint_is_tried_again():
    ewma = PeakEwma(decay_s=10.0, initial_rtt_s=1.0, now=0.0)
    assert ewma.load(now=10.0) == pytest.approx(math.exp(-1.0))
    assert ewma.load(now=20.0) == pytest.approx(math.exp(-2.0))  # reads compound, not reset
    assert ewma.load(now=100.0) < 1e-4


def test_quick_responses_in_a_row_barely_move_a_peak():
    ewma = PeakEwma(decay_s=10.0, initial_rtt_s=0.001, now=0.0)
    t0 = ewma.start(now=0.0)
    ewma.finish(t0, now=1.0)  # one 1 s response
    now = 1.0
    for _ in range(10):  # ten 1 ms responses within 10 ms
        t0 = ewma.start(now=now)
        now += 0.001
        ewma.finish(t0, now=now)
    assert ewma.rtt_s > 0.99


def test_load_and_start_is_load_then_start():
    one = PeakEwma(decay_s=10.0, initial_rtt_s=0.2, now=0.0)
    other = PeakEwma(decay_s=10.0, initial_rtt_s=0.2, now=0.0)
    for now in (0.0, 3.0, 3.0, 7.5):
        expected = one.load(now=now)
        one.start(now=now)
        assert other.load_and_start(now) == pytest.approx(expected)
        assert (other.pending, other.rtt_s) == (one.pending, pytest.approx(one.rtt_s))
    other.finish(7.5, now=8.0)
    one.finish(7.5, now=8.0)
    assert (other.pending, other.load(now=9.0)) == (one.pending, pytest.approx(one.load(now=9.0)))


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError):
        PeakEwma(decay_s=0)
