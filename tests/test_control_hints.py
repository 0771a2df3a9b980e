"""Autoscaling hints: Little's law, latency against target, the driving signal named, no flapping."""

import pytest

from collector.control.hints import HintRules, ScalingAdvisor
from collector.graph.windows import EdgeStats

MS = 1_000_000


def stats(requests: int, latencies_ms: list[float]) -> EdgeStats:
    result = EdgeStats()
    for index in range(requests):
        result.latency.add(int(latencies_ms[index % len(latencies_ms)] * MS))
    result.requests = requests
    return result


def test_concurrency_is_rps_times_mean_latency():
    advisor = ScalingAdvisor(HintRules(concurrency_per_replica=10))
    hint = advisor.hint("b", stats(6000, [100, 200]), seconds=60, replicas=2, now=0)
    assert hint.rps == 100
    assert hint.mean_latency_s == pytest.approx(0.15, rel=0.01)
    assert hint.concurrency == pytest.approx(15.0, rel=0.01)
    assert hint.desired_replicas == 2 and hint.reason.startswith("steady")
    assert not hint.over_capacity
    assert hint.json()["desiredReplicas"] == 2 and hint.json()["service"] == "b"


def test_concurrency_drives_scale_up():
    advisor = ScalingAdvisor(HintRules(concurrency_per_replica=10, latency_target_s=1.0))
    hint = advisor.hint("b", stats(60_000, [35]), seconds=60, replicas=2, now=0)  # 1000 rps x 35 ms = 35
    assert hint.desired_replicas == 4
    assert hint.reason.startswith("concurrency: 35.0 in flight")
    assert hint.over_capacity


def test_latency_over_target_drives_scale_up_at_most_doubling():
    advisor = ScalingAdvisor(HintRules(latency_target_s=0.25, concurrency_per_replica=1000))
    hint = advisor.hint("b", stats(600, [100, 100, 100, 100, 100, 100, 100, 100, 100, 400]), seconds=60, replicas=3, now=0)
    assert hint.p95_latency_s == pytest.approx(0.4, rel=0.02)
    assert hint.desired_replicas == 5  # ceil(3 x 400/250)
    assert hint.reason.startswith("latency: p95 400ms > target 250ms")
    much_slower = advisor.hint("c", stats(600, [2000]), seconds=60, replicas=3, now=0)
    assert much_slower.desired_replicas == 6


def test_latency_within_tolerance_changes_nothing():
    advisor = ScalingAdvisor(HintRules(latency_target_s=0.25, tolerance=0.1, concurrency_per_replica=1000))
    hint = advisor.hint("b", stats(600, [260]), seconds=60, replicas=3, now=0)
    assert hint.desired_replicas == 3 and not hint.over_capacity


def test_scale_down_waits_for_the_stabilization_window():
    advisor = ScalingAdvisor(HintRules(concurrency_per_replica=10, latency_target_s=1.0, scale_down_window_s=60))
    busy = advisor.hint("b", stats(60_000, [50]), seconds=60, replicas=2, now=0)  # concurrency 50
    assert busy.desired_replicas == 5
    quiet = stats(600, [50])  # concurrency 0.5
    held = advisor.hint("b", quiet, seconds=60, replicas=5, now=30)
    assert held.desired_replicas == 5 and held.reason.startswith("holding 5")
    released = advisor.hint("b", quiet, seconds=60, replicas=5, now=61)
    assert released.desired_replicas == 1


def test_fast_and_idle_fits_fewer_replicas():
    advisor = ScalingAdvisor(HintRules(concurrency_per_replica=10, scale_down_window_s=0))
    hint = advisor.hint("b", stats(6000, [40, 60]), seconds=60, replicas=3, now=0)  # p95 well under target, 5 in flight
    assert hint.desired_replicas == 1 and hint.reason == "concurrency: 5.0 in flight fits 1 replica(s)"


def test_no_traffic_recommends_one_replica_eventually():
    advisor = ScalingAdvisor(HintRules(scale_down_window_s=0))
    hint = advisor.hint("b", EdgeStats(), seconds=60, replicas=3, now=0)
    assert hint.rps == 0 and hint.desired_replicas == 1
