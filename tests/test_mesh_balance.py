"""P2C over peak-EWMA: traffic moves to fast endpoints, spreads evenly between equal ones, skips ejected ones."""

import heapq
import random
from collections import Counter

import pytest

from mesh.balance import Endpoint, P2CBalancer
from mesh.breaker import FailureAccrual


def simulate(latencies: dict[str, float], requests: int, interval_s: float, seed: int = 7) -> Counter:
    """Send ``requests`` at a fixed rate through a balancer; each endpoint answers after its latency."""
    balancer = P2CBalancer(latencies, random=random.Random(seed).random)
    completions: list[tuple[float, int, Endpoint, float]] = []
    picks: Counter = Counter()
    for n in range(requests):
        now = n * interval_s
        while completions and completions[0][0] <= now:
            done_at, _, endpoint, t0 = heapq.heappop(completions)
            endpoint.ewma.finish(t0, now=done_at)
        endpoint = balancer.pick(now=now)
        picks[endpoint.address] += 1
        t0 = endpoint.ewma.start(now=now)
        heapq.heappush(completions, (now + latencies[endpoint.address], n, endpoint, t0))
    return picks


def test_most_picks_go_to_the_low_latency_endpoint():
    picks = simulate({"fast:1": 0.002, "slow:1": 0.050}, requests=5000, interval_s=0.001)
    assert picks["fast:1"] > 0.8 * 5000


def test_a_slow_endpoint_among_fast_ones_gets_far_less_than_its_share():
    latencies = {"a:1": 0.005, "b:1": 0.005, "c:1": 0.005, "slow:1": 0.200}
    picks = simulate(latencies, requests=8000, interval_s=0.002)
    assert picks["slow:1"] < 0.08 * 8000  # a fair share would be 25%


def test_equal_endpoints_share_the_load():
    latencies = {f"e{i}:1": 0.010 for i in range(4)}
    picks = simulate(latencies, requests=8000, interval_s=0.001)
    assert all(0.18 * 8000 < count < 0.32 * 8000 for count in picks.values()), picks


def test_ejected_endpoint_is_skipped_until_its_single_probe():
    balancer = P2CBalancer(["a:1", "b:1", "c:1"], random=random.Random(1).random)
    a, b, c = balancer.endpoints
    for _ in range(a.breaker.threshold):
        a.breaker.failure(0.0)
    assert all(balancer.pick(now=0.5) is not a for _ in range(200))
    picks = [balancer.pick(now=1.0) for _ in range(200)]
    assert picks.count(a) == 1  # the probe, and nothing more until it reports


def test_all_endpoints_ejected_or_excluded_means_none():
    balancer = P2CBalancer(["a:1", "b:1"])
    a, b = balancer.endpoints
    assert balancer.pick(now=0.0, exclude=(a,)) is b
    assert balancer.pick(now=0.0, exclude=(a, b)) is None
    for endpoint in (a, b):
        for _ in range(endpoint.breaker.threshold):
            endpoint.breaker.failure(0.0)
    assert balancer.pick(now=0.1) is None
    assert P2CBalancer().pick() is None


def test_single_endpoint_is_picked_unless_ejected():
    balancer = P2CBalancer(["only:1"], new_endpoint=lambda address: Endpoint(address, breaker=FailureAccrual(threshold=1)))
    only = balancer.endpoints[0]
    assert balancer.pick(now=0.0) is only
    only.breaker.failure(0.0)
    assert balancer.pick(now=0.5) is None
    assert balancer.pick(now=1.0) is only  # probe


def test_update_keeps_surviving_endpoints_state():
    balancer = P2CBalancer(["a:1", "b:1"])
    a, b = balancer.endpoints
    a.ewma.start()
    balancer.update(["b:1", "c:1", "c:1"])
    assert [endpoint.address for endpoint in balancer.endpoints] == ["b:1", "c:1"]
    assert balancer.endpoints[0] is b
    balancer.update(["a:1"])
    assert balancer.endpoints[0] is not a and balancer.endpoints[0].ewma.pending == 0


def test_zero_weight_endpoint_is_drained():
    balancer = P2CBalancer(["a:1", "b:1"])
    balancer.endpoints[0].weight = 0.0
    assert all(balancer.pick(now=0.0) is balancer.endpoints[1] for _ in range(50))


@pytest.mark.parametrize("count", [2, 3, 10])
def test_every_endpoint_can_be_drawn(count):
    balancer = P2CBalancer([f"e{i}:1" for i in range(count)], random=random.Random(3).random)
    seen = set()
    for n in range(400):
        endpoint = balancer.pick(now=float(n))
        seen.add(endpoint.address)
    assert len(seen) == count
