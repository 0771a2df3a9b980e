"""Destinations: per-service policy and the reliability state the outbound data path shares per service.

A destination is one service the app calls. Everything that must be per service lives here together:
the balancer over its endpoints (each with its load estimate and failure accrual), its retry budget and
its admission queue, plus the policy (timeouts, limits) they were built from. Destinations are created
on first use from discovery and follow it: endpoint changes reach the balancer, a service removed from
discovery stops resolving.

Discovery is anything with ``has(service)``, ``resolve(service) -> tuple[str, ...]`` and
``subscribe(listener(service, addresses))`` (``mesh.discovery.EndpointsFile`` today).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from mesh.balance import Endpoint, P2CBalancer, RoundRobinBalancer
from mesh.breaker import FailureAccrual
from mesh.retry import DEFAULT_GRPC_RETRYABLE, RetryBudget
from mesh.shed import AdmissionQueue

# Balancer modes: local peak-EWMA P2C, the same combined with the collector's weights, round-robin.
EWMA = "ewma"
MESH = "mesh"
ROUND_ROBIN = "round-robin"
BALANCERS = (EWMA, MESH, ROUND_ROBIN)


EndpointsListener = Callable[[str, tuple[str, ...]], None]  # (service, its addresses now)


class Discovery(Protocol):
    def has(self, service: str) -> bool: ...

    def resolve(self, service: str) -> tuple[str, ...]: ...

    def subscribe(self, listener: EndpointsListener) -> None: ...


class EndpointsListeners:
    """The listeners a Discovery tells of changed addresses; one that raises is logged and the rest still hear."""

    def __init__(self, log: logging.Logger):
        self._log = log
        self._listeners: list[EndpointsListener] = []

    def append(self, listener: EndpointsListener) -> None:
        self._listeners.append(listener)

    def notify(self, service: str, addresses: tuple[str, ...]) -> None:
        for listener in self._listeners:
            try:
                listener(service, addresses)
            except Exception:
                self._log.exception("endpoints listener failed for service %r", service)


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    timeout_s: float = 10.0  # whole request, retries and backoff included
    connect_timeout_s: float = 1.0
    max_in_flight: int = 1000
    max_queue: int = 1000
    max_queue_wait_s: float = 1.0
    max_retries: int = 3  # per request, on top of the budget
    retry_ratio: float = 0.2
    retry_min_per_s: float = 10.0
    failure_threshold: int = 5  # consecutive failures that eject an endpoint; 0 = never eject
    grpc_retryable: frozenset[int] = DEFAULT_GRPC_RETRYABLE
    balancer: str = EWMA  # one of BALANCERS


class Destination:
    def __init__(self, name: str, policy: DestinationPolicy, addresses: Sequence[str] = ()):
        self.name = name
        self.policy = policy
        threshold = policy.failure_threshold
        balancer = RoundRobinBalancer if policy.balancer == ROUND_ROBIN else P2CBalancer
        self.balancer = balancer(addresses, new_endpoint=lambda address: Endpoint(address, breaker=FailureAccrual(threshold)))
        self.retry_budget = RetryBudget(ratio=policy.retry_ratio, min_per_s=policy.retry_min_per_s)
        self.admission = AdmissionQueue(policy.max_in_flight, policy.max_queue, policy.max_queue_wait_s)

    def __repr__(self) -> str:
        return f"Destination({self.name!r}, {len(self.balancer.endpoints)} endpoints)"


_MAX_NAMES = 4096


class Destinations:
    def __init__(
        self,
        discovery: Discovery,
        default_policy: DestinationPolicy = DestinationPolicy(),
        overrides: dict[str, DestinationPolicy] | None = None,
    ):
        self.discovery = discovery
        self.default_policy = default_policy
        self.overrides = dict(overrides or {})
        self._by_name: dict[str, Destination] = {}  # also keyed by the spellings callers used
        # Host / :authority bytes as received -> destination: what ``by_authority`` resolved, kept for the
        # data path to read without a call or a decode (stacks share it as ``destination_by_authority``)
        self.authorities: dict[bytes, Destination] = {}
        discovery.subscribe(self._on_change)

    def get(self, name: str) -> Destination | None:
        """The destination a Host / :authority names, or None when no such service is known.

        Case and a trailing ":port" are ignored when the name as given is not a service
        ("Payments:80" finds "payments").
        """
        destination = self._by_name.get(name)
        if destination is not None:
            return destination
        service = self._service_for(name)
        if service is None:
            return None
        destination = self._by_name.get(service)
        if destination is None:
            policy = self.overrides.get(service, self.default_policy)
            destination = Destination(service, policy, self.discovery.resolve(service))
            self._by_name[service] = destination
        if len(self._by_name) < _MAX_NAMES:  # callers choose the spellings: bound what is remembered
            self._by_name[name] = destination
        return destination

    def by_authority(self, authority: bytes) -> Destination | None:
        """``get`` for a Host / :authority as received; remembered in ``authorities`` while it resolves."""
        destination = self.get(authority.decode("latin-1"))
        if destination is not None and len(self.authorities) < _MAX_NAMES:
            self.authorities[authority] = destination
        return destination

    def __iter__(self):
        return iter({id(d): d for d in self._by_name.values()}.values())

    def _service_for(self, name: str) -> str | None:
        has = self.discovery.has
        if has(name):
            return name
        lowered = name.lower()
        if has(lowered):
            return lowered
        host, sep, port = lowered.rpartition(":")
        if sep and port.isdigit() and ":" not in host and has(host):
            return host
        return None

    def _on_change(self, service: str, addresses: tuple[str, ...]) -> None:
        destination = self._by_name.get(service)
        if destination is None:
            return
        destination.balancer.update(addresses)
        if not self.discovery.has(service):
            for name in [name for name, d in self._by_name.items() if d is destination]:
                del self._by_name[name]
            for authority in [authority for authority, d in self.authorities.items() if d is destination]:
                del self.authorities[authority]


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """"250ms", "2s", "1.5s", "1m" or plain seconds ("3") -> seconds; ValueError naming the problem."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (like 250ms, 2s, 1m)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: duration must be positive")
    return seconds


def parse_timeouts(
    values: Sequence[str], default: DestinationPolicy = DestinationPolicy()
) -> tuple[DestinationPolicy, dict[str, DestinationPolicy]]:
    """``--timeout`` flags: "DUR" sets every destination's timeout, "SERVICE=DUR" one service's.

    Returns (default policy, per-service overrides built on that default).
    """
    per_service: dict[str, float] = {}
    for value in values:
        service, sep, duration = value.rpartition("=")
        try:
            seconds = parse_duration(duration)
        except ValueError as error:
            raise ValueError(f"--timeout {value!r}: {error}") from None
        if not sep:
            default = dataclasses.replace(default, timeout_s=seconds)
        elif not service:
            raise ValueError(f"--timeout {value!r}: expected SERVICE=DURATION")
        else:
            per_service[service] = seconds
    overrides = {service: dataclasses.replace(default, timeout_s=s) for service, s in per_service.items()}
    return default, overrides
