"""Routing weights per endpoint from the mesh-wide latency and error rate of its requests.

The weight tells every proxy how much to discount an endpoint relative to the best one of its
service (proxies divide their own peak-EWMA load by it), so an endpoint the whole mesh sees as
slow or failing loses traffic even at a proxy that never sent it a request. The rules keep it
stable:

* Compared with the fastest endpoint that has enough requests (``min_requests``); a latency
  within ``tolerance`` of it counts as equal, so equal endpoints never wobble around 1.
* Slower by a factor r: weight 1/r², failing (error rate e): × (1 − 2e); an error rate of at
  least ``eject_error_rate`` ejects it. Never below ``min_weight``: every endpoint keeps a share.
* A weight drops at once (traffic moves away fast) but rises at most ``rise`` × per tick, and
  changes smaller than ``deadband`` are not published, so one good tick does not swing traffic
  back and forth. An endpoint with too few requests to judge creeps back up by ``idle_rise`` per
  tick: it recovers when the mesh has no evidence against it any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.graph.windows import EdgeStats


@dataclass
class EndpointWeight:
    weight: float = 1.0
    ejected: bool = False
    mean_latency_s: float = 0.0  # of the last tick that had enough requests (0 = never)
    error_rate: float = 0.0


@dataclass(frozen=True)
class WeightRules:
    min_requests: int = 5
    tolerance: float = 1.25
    min_weight: float = 0.01
    eject_error_rate: float = 0.5
    rise: float = 1.5
    idle_rise: float = 1.1
    deadband: float = 0.1


class RoutingWeights:
    """Per endpoint (any hashable key), the published weight; ``update`` once per tick."""

    def __init__(self, rules: WeightRules = WeightRules()):
        self.rules = rules
        self._weights: dict = {}

    def update(self, stats: dict) -> dict:
        """``stats``: endpoint key -> ``EdgeStats`` of its recent requests (None or absent = none)
        for the endpoints of ONE service. Returns key -> ``EndpointWeight``; endpoints not in
        ``stats`` are forgotten."""
        rules = self.rules
        judged = {key: s for key, s in stats.items() if s is not None and s.requests >= rules.min_requests}
        best = min((s.latency.total_ns / s.requests for s in judged.values()), default=None)
        result = {}
        for key in stats:
            current = self._weights.get(key) or EndpointWeight()
            sample = judged.get(key)
            if sample is None:
                current.weight = min(1.0, current.weight * rules.idle_rise)
                current.ejected = current.ejected and current.weight < 1.0
            else:
                self._judge(current, sample, best)
            result[key] = current
        self._weights = result
        return result

    def _judge(self, current: EndpointWeight, sample: EdgeStats, best_ns: float) -> None:
        rules = self.rules
        mean_ns = sample.latency.total_ns / sample.requests
        current.mean_latency_s = mean_ns / 1e9
        current.error_rate = sample.errors / sample.requests
        ratio = mean_ns / best_ns if best_ns > 0 else 1.0
        target = 1.0 if ratio <= rules.tolerance else 1.0 / (ratio * ratio)
        target *= max(0.0, 1.0 - 2.0 * current.error_rate)
        current.ejected = current.error_rate >= rules.eject_error_rate
        target = rules.min_weight if current.ejected else max(rules.min_weight, min(1.0, target))
        if target < current.weight:
            proposed = target
        else:
            proposed = min(target, current.weight * rules.rise)
        if abs(proposed - current.weight) > rules.deadband * current.weight or proposed in (1.0, rules.min_weight):
            current.weight = proposed
