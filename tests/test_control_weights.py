"""Routing weights from mesh-wide latency and errors: demote fast, never starve, recover slowly."""

from collector.control.weights import RoutingWeights, WeightRules
from collector.graph.windows import EdgeStats

MS = 1_000_000


def stats(requests: int, latency_ms: float, errors: int = 0) -> EdgeStats:
    result = EdgeStats()
    for _ in range(requests):
        result.latency.add(int(latency_ms * MS))
    result.requests = requests
    result.errors = errors
    return result


def weights_of(result: dict) -> dict:
    return {key: round(value.weight, 4) for key, value in result.items()}


def test_equal_endpoints_keep_full_weight_despite_noise():
    weights = RoutingWeights()
    for latency in (5, 6, 5.5, 6.1):
        result = weights.update({"a": stats(50, 5), "b": stats(50, latency), "c": stats(50, 5.2)})
        assert weights_of(result) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_a_slow_endpoint_drops_at_once_but_never_below_the_probe_floor():
    weights = RoutingWeights(WeightRules(min_weight=0.01))
    weights.update({"a": stats(50, 5), "b": stats(50, 5)})
    result = weights.update({"a": stats(50, 5), "b": stats(50, 205)})
    assert result["a"].weight == 1.0
    assert result["b"].weight == 0.01  # (205/5)^-2 is far below the floor
    assert result["b"].mean_latency_s == 0.205
    moderately = RoutingWeights().update({"a": stats(50, 10), "b": stats(50, 20)})
    assert moderately["b"].weight == 0.25  # twice as slow: 1/2^2


def test_recovery_is_gradual():
    weights = RoutingWeights(WeightRules(rise=1.5))
    weights.update({"a": stats(50, 5), "b": stats(50, 205)})
    seen = [weights.update({"a": stats(50, 5), "b": stats(50, 5)})["b"].weight for _ in range(14)]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert all(later <= earlier * 1.5 + 1e-9 for earlier, later in zip(seen, seen[1:]))
    assert seen[3] < 0.1  # four good ticks do not swing all traffic back


def test_no_evidence_creeps_back_up():
    weights = RoutingWeights(WeightRules(idle_rise=1.1, min_requests=5))
    weights.update({"a": stats(50, 5), "b": stats(50, 205)})
    before = weights.update({"a": stats(50, 5), "b": stats(2, 205)})["b"].weight  # too few to judge
    after = weights.update({"a": stats(50, 5), "b": None})["b"].weight
    assert 0.01 < before < after < 0.02


def test_errors_demote_and_eject():
    weights = RoutingWeights(WeightRules(eject_error_rate=0.5))
    result = weights.update({"a": stats(100, 5), "b": stats(100, 5, errors=20), "c": stats(100, 5, errors=60)})
    assert result["b"].weight == 0.6 and not result["b"].ejected
    assert result["c"].ejected and result["c"].weight == weights.rules.min_weight
    assert result["c"].error_rate == 0.6


def test_endpoints_that_leave_are_forgotten():
    weights = RoutingWeights()
    weights.update({"a": stats(50, 5), "b": stats(50, 205)})
    weights.update({"a": stats(50, 5)})
    assert weights.update({"a": stats(50, 5), "b": None})["b"].weight == 1.0  # a new endpoint starts trusted
