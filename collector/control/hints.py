"""Autoscaling hints per service from its edge metrics: how many replicas it should have, and why.

Signals, over the recent requests into the service (all callers): demand (requests per second),
concurrency by Little's law (RPS × mean latency: how many requests are in flight on average), and
the p95 latency against its target. Two recommendations are made and the larger wins (the reason
names it):

* latency: p95 above target → scale by p95 / target (as the HPA does with a utilization ratio),
  at most doubling per decision;
* concurrency: ceil(concurrency / ``concurrency_per_replica``) replicas carry the in-flight load.

When p95 is within ``tolerance`` of the target nothing is driven by latency. Scaling down waits:
the recommendation is the highest one made over the last ``scale_down_window_s`` (the HPA's
stabilization window), so a dip in demand does not shrink and regrow the service.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from collector.graph.windows import EdgeStats


@dataclass(frozen=True)
class HintRules:
    latency_target_s: float = 0.25
    concurrency_per_replica: float = 10.0
    tolerance: float = 0.1
    scale_down_window_s: float = 60.0


@dataclass
class ScalingHint:
    service: str
    rps: float
    concurrency: float
    mean_latency_s: float
    p95_latency_s: float
    latency_target_s: float
    current_replicas: int
    desired_replicas: int
    reason: str
    over_capacity: bool

    def json(self) -> dict:
        """The HTTP API shape (KEDA's metrics-api scaler reads ``desiredReplicas``)."""
        return {
            "service": self.service,
            "desiredReplicas": self.desired_replicas,
            "currentReplicas": self.current_replicas,
            "reason": self.reason,
            "overCapacity": self.over_capacity,
            "rps": round(self.rps, 3),
            "concurrency": round(self.concurrency, 3),
            "meanLatencyMs": round(self.mean_latency_s * 1000, 3),
            "p95LatencyMs": round(self.p95_latency_s * 1000, 3),
            "latencyTargetMs": round(self.latency_target_s * 1000, 3),
        }


class ScalingAdvisor:
    """Keeps each service's recent recommendations for the scale-down window."""

    def __init__(self, rules: HintRules = HintRules()):
        self.rules = rules
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def hint(self, service: str, stats: EdgeStats, seconds: float, replicas: int, now: float) -> ScalingHint:
        """The hint for ``service`` from ``stats`` of its requests over the last ``seconds``,
        with ``replicas`` instances now."""
        rules = self.rules
        replicas = max(replicas, 1)
        rps = stats.requests / seconds if seconds > 0 else 0.0
        mean_s = stats.latency.total_ns / stats.requests / 1e9 if stats.requests else 0.0
        p95_ns = stats.latency.quantile(0.95)
        p95_s = p95_ns / 1e9 if p95_ns is not None else 0.0
        concurrency = rps * mean_s
        by_concurrency = max(1, math.ceil(concurrency / rules.concurrency_per_replica - 1e-9))
        ratio = p95_s / rules.latency_target_s
        if ratio > 1 + rules.tolerance:
            by_latency = min(2 * replicas, math.ceil(replicas * ratio))
        else:
            by_latency = replicas if ratio > 0.5 else 1
        if by_latency > replicas and by_latency >= by_concurrency:
            raw, reason = by_latency, f"latency: p95 {p95_s * 1000:.0f}ms > target {rules.latency_target_s * 1000:.0f}ms"
        elif by_concurrency > replicas:
            raw, reason = by_concurrency, (
                f"concurrency: {concurrency:.1f} in flight > {rules.concurrency_per_replica:g} per replica"
            )
        else:
            raw = max(by_latency, by_concurrency)
            reason = (
                "steady: latency and concurrency within target"
                if raw == replicas
                else f"concurrency: {concurrency:.1f} in flight fits {raw} replica(s)"
            )
        desired = self._stabilized(service, raw, now)
        if desired > raw:
            reason = f"holding {desired} for the scale-down window ({reason})"
        return ScalingHint(
            service=service,
            rps=rps,
            concurrency=concurrency,
            mean_latency_s=mean_s,
            p95_latency_s=p95_s,
            latency_target_s=rules.latency_target_s,
            current_replicas=replicas,
            desired_replicas=desired,
            reason=reason,
            over_capacity=ratio > 1 + rules.tolerance or concurrency > rules.concurrency_per_replica * replicas,
        )

    def _stabilized(self, service: str, raw: int, now: float) -> int:
        history = self._history.setdefault(service, deque())
        history.append((now, raw))
        while history and history[0][0] < now - self.rules.scale_down_window_s:
            history.popleft()
        return max(count for _, count in history)

    def forget_except(self, services) -> None:
        for service in [s for s in self._history if s not in services]:
            del self._history[service]
