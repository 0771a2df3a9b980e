"""The control plane's state: once per tick, registry + live edge metrics -> one versioned snapshot.

The snapshot is the whole mesh state (state of the world, as in xDS): every service with a live
registered inbound, its endpoints with their routing weights, and its scaling hint. A new version
is published only when the snapshot's content changes; watchers block on a condition until then.
The epoch is random per collector start, so a proxy that resumes with a version from an earlier
collector gets a full snapshot rather than a wrong "nothing changed".
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from collector.control.hints import HintRules, ScalingAdvisor, ScalingHint
from collector.control.registry import Instance, Registry
from collector.control.weights import RoutingWeights, WeightRules
from collector.graph import ServiceGraph
from collector.graph.windows import EdgeStats
from spans.control import control_pb2 as pb

log = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000


class ControlPlane:
    def __init__(
        self,
        graph: ServiceGraph,
        registry: Registry,
        weight_rules: WeightRules = WeightRules(),
        hint_rules: HintRules = HintRules(),
        *,
        tick_s: float = 1.0,
        weights_range_s: float = 10.0,
        hints_range_s: float = 60.0,
        probe_share: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.graph = graph
        self.registry = registry
        self.tick_s = tick_s
        self.weights_range_s = weights_range_s
        self.hints_range_s = hints_range_s
        self.probe_share = probe_share
        self.epoch = secrets.token_hex(8)
        self.version = 0
        self.hints: dict[str, ScalingHint] = {}
        self._clock = clock
        self._weights: dict[str, RoutingWeights] = {}
        self._weight_rules = weight_rules
        self._advisor = ScalingAdvisor(hint_rules)
        self._state = pb.MeshState(epoch=self.epoch)
        self._state_bytes = b""
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- ticking -------------------------------------------------------------------------------

    def start(self) -> None:
        self.tick()
        self._thread = threading.Thread(target=self._run, name="control-plane", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _run(self) -> None:
        while not self._stopping.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep serving the last good state
                log.exception("control plane tick failed; keeping the last state")

    def tick(self) -> None:
        """Recompute weights and hints and publish a new version if anything changed."""
        now = self._clock()
        now_ns = self.graph.now_ns()
        instances = self.registry.live(now)
        by_service: dict[str, list[Instance]] = {}
        for instance in instances:
            if instance.inbound:
                by_service.setdefault(instance.service, []).append(instance)
        recent = self.graph.endpoint_stats(now_ns - int(self.weights_range_s * SECOND_NS), now_ns)
        longer = self.graph.endpoint_stats(now_ns - int(self.hints_range_s * SECOND_NS), now_ns)
        self.hints = self._hints(by_service, longer, now_ns, now)
        state = pb.MeshState(epoch=self.epoch)
        for service in sorted(by_service):
            members = sorted(by_service[service], key=lambda i: i.inbound)
            destination = state.destinations.add(service=service, probe_share=self.probe_share)
            weights = self._weights.setdefault(service, RoutingWeights(self._weight_rules))
            judged = weights.update({i.inbound: self._evidence(recent, longer, service, i) for i in members})
            for instance in members:
                weight = judged[instance.inbound]
                destination.endpoints.add(
                    address=instance.inbound,
                    instance_id=instance.instance_id,
                    zone=instance.zone,
                    weight=round(weight.weight, 4),
                    ejected=weight.ejected,
                    mean_latency_ms=round(weight.mean_latency_s * 1000, 3),
                    error_rate=round(weight.error_rate, 4),
                )
            hint = self.hints.get(service)
            if hint is not None:
                destination.hint.CopyFrom(hint_message(hint))
        for gone in [s for s in self._weights if s not in by_service]:
            del self._weights[gone]
        content = state.SerializeToString(deterministic=True)
        if content != self._state_bytes:
            with self._changed:
                self.version += 1
                state.version = self.version
                self._state, self._state_bytes = state, content
                self._changed.notify_all()

    def _evidence(self, recent: dict, longer: dict, service: str, instance: Instance) -> EdgeStats | None:
        """An endpoint's recent requests, or over the longer hint range when it had too few lately
        (a demoted endpoint gets only probes): judged on old but real evidence, it neither jumps
        back to full weight for lack of data nor stays demoted once its probes come back fast."""
        stats = _endpoint_stats(recent, service, instance)
        if stats is not None and stats.requests >= self._weight_rules.min_requests:
            return stats
        return _endpoint_stats(longer, service, instance)

    def _hints(
        self, by_service: dict[str, list[Instance]], per_endpoint: dict, now_ns: int, now: float
    ) -> dict[str, ScalingHint]:
        range_ns = int(self.hints_range_s * SECOND_NS)
        per_service: dict[str, EdgeStats] = {}
        endpoints_seen: dict[str, int] = {}
        for (service, _), stats in per_endpoint.items():
            per_service.setdefault(service, EdgeStats()).merge(stats)
            endpoints_seen[service] = endpoints_seen.get(service, 0) + 1
        # The windows read cover whole 10-second windows up to now: that is the rate's denominator.
        window_ns = self.graph.window_ns
        start_ns = (now_ns - range_ns) - (now_ns - range_ns) % window_ns
        seconds = (now_ns - start_ns) / SECOND_NS
        hints = {}
        for service in sorted(set(per_service) | set(by_service)):
            replicas = len(by_service.get(service, ())) or endpoints_seen.get(service, 0)
            hints[service] = self._advisor.hint(service, per_service.get(service) or EdgeStats(), seconds, replicas, now)
        self._advisor.forget_except(hints)
        return hints

    # ---- reading -------------------------------------------------------------------------------

    def state(self) -> pb.MeshState:
        with self._changed:
            return self._state

    def wait_for_change(self, epoch: str, version: int, timeout_s: float) -> pb.MeshState | None:
        """The current state once it differs from (epoch, version); None after ``timeout_s``
        without a change or when stopping."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._state.epoch == epoch and self._state.version == version:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return None
                self._changed.wait(left)
            return self._state


def _endpoint_stats(recent: dict, service: str, instance: Instance) -> EdgeStats | None:
    """An instance's requests, whether callers named it by address (proxied) or by instance id."""
    by_address = recent.get((service, instance.inbound))
    by_id = recent.get((service, instance.instance_id))
    if by_address is None or by_id is None:
        return by_address or by_id
    merged = EdgeStats()
    merged.merge(by_address)
    merged.merge(by_id)
    return merged


def hint_message(hint: ScalingHint) -> pb.ScalingHint:
    return pb.ScalingHint(
        rps=round(hint.rps, 3),
        concurrency=round(hint.concurrency, 3),
        mean_latency_ms=round(hint.mean_latency_s * 1000, 3),
        p95_latency_ms=round(hint.p95_latency_s * 1000, 3),
        latency_target_ms=round(hint.latency_target_s * 1000, 3),
        current_replicas=hint.current_replicas,
        desired_replicas=hint.desired_replicas,
        reason=hint.reason,
        over_capacity=hint.over_capacity,
    )
