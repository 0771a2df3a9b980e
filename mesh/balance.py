"""Power-of-two-choices load balancing over peak-EWMA load, skipping ejected endpoints.

Picking the least loaded of ALL endpoints makes every proxy stampede the same one; picking at random
ignores that one endpoint is slow. Drawing two at random and taking the cheaper (load / weight) gets
nearly the best of both at O(1) per request (Mitzenmacher; Finagle, linkerd2-proxy). An ejected
endpoint (failure accrual) is skipped, except for the single probe its breaker lets through after each
backoff, which is sent as soon as it is due so a recovered endpoint rejoins quickly.

Weights come from the collector's mesh-wide view (``mesh.control_client``). Dividing by a small
weight alone would starve an endpoint for good once P2C always prefers its peers, so a
``probe_share`` of picks goes to a uniformly drawn endpoint: a demoted endpoint keeps being measured
and recovers when it does. ``RoundRobinBalancer`` ignores load and weights: the baseline the
routing benchmark compares against.

The common case (no endpoint ejected, nothing excluded) touches two endpoints and allocates nothing.
"""

from __future__ import annotations

import random as _random_module
from cython.cimports.cpython.time import monotonic  # C calls, no Python call per read
from typing import Callable, Collection, Iterable

from mesh.breaker import FailureAccrual
from mesh.ewma import PeakEwma

_INFINITY = float("inf")


class Endpoint:
    """One address of a destination with its own load estimate and failure accrual."""

    def __init__(self, address: str, ewma: PeakEwma | None = None, breaker: FailureAccrual | None = None):
        self.address = address
        self.ewma = PeakEwma() if ewma is None else ewma
        self.breaker = FailureAccrual() if breaker is None else breaker
        self.weight = 1.0  # relative capacity; 0 drains the endpoint

    def cost(self, now: float) -> float:
        weight = self.weight
        return self.ewma.load(now) / weight if weight > 0 else _INFINITY

    def __repr__(self) -> str:
        return f"Endpoint({self.address!r})"


class _EndpointSet:
    """What every balancer keeps: its endpoints, replaced on each discovery update."""

    def __init__(self, endpoints: Iterable[str], new_endpoint: Callable[[str], Endpoint]):
        self._new_endpoint = new_endpoint
        self.endpoints: list[Endpoint] = []
        self.probe_share = 0.0  # of picks drawn uniformly (set with collector weights; round-robin ignores it)
        self.update(endpoints)

    def update(self, addresses: Iterable[str]) -> None:
        """Replace the endpoint set; endpoints that stay keep their load estimate and breaker state."""
        current = {endpoint.address: endpoint for endpoint in self.endpoints}
        updated: list[Endpoint] = []
        for address in dict.fromkeys(addresses):
            endpoint = current.get(address)
            updated.append(self._new_endpoint(address) if endpoint is None else endpoint)
        self.endpoints = updated

    def pick(self, now: float | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for the next request (or retry: ``exclude`` the ones already tried); None if none is usable."""
        raise NotImplementedError


class P2CBalancer(_EndpointSet):
    def __init__(
        self,
        endpoints: Iterable[str] = (),
        new_endpoint: Callable[[str], Endpoint] = Endpoint,
        random: Callable[[], float] = _random_module.random,
    ):
        self._random = random
        super().__init__(endpoints, new_endpoint)

    def pick(self, now: float | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for the next request (or retry: ``exclude`` the ones already tried); None if none is usable."""
        endpoints = self.endpoints
        count = len(endpoints)
        if count == 0:
            return None
        if now is None:
            now = monotonic()
        if count == 1:
            endpoint = endpoints[0]
            breaker = endpoint.breaker
            return endpoint if endpoint not in exclude and (not breaker.ejected or breaker.available(now)) else None
        a, b = self._draw_two(endpoints, count)
        if exclude or a.breaker.ejected or b.breaker.ejected:
            return self._pick_among_usable(now, exclude)
        if self.probe_share and self._random() < self.probe_share:
            return a
        if a.weight == 1.0 == b.weight:  # no weights from the collector: the cost is the load (two calls less)
            return a if a.ewma.load(now) <= b.ewma.load(now) else b
        return a if a.cost(now) <= b.cost(now) else b

    def _pick_among_usable(self, now: float, exclude: Collection[Endpoint]) -> Endpoint | None:
        usable = []
        for endpoint in self.endpoints:
            if endpoint in exclude:
                continue
            if endpoint.breaker.ejected:
                if endpoint.breaker.available(now):
                    return endpoint  # its probe is due: send it now
                continue
            usable.append(endpoint)
        count = len(usable)
        if count <= 1:
            return usable[0] if usable else None
        a, b = self._draw_two(usable, count)
        return a if a.cost(now) <= b.cost(now) else b

    def _draw_two(self, candidates: list[Endpoint], count: int) -> tuple[Endpoint, Endpoint]:
        """Two distinct candidates, uniformly at random (count >= 2)."""
        random = self._random
        first = int(random() * count)
        second = int(random() * (count - 1))
        if second >= first:
            second += 1
        return candidates[first], candidates[second]


class RoundRobinBalancer(_EndpointSet):
    """Each endpoint in turn (skipping excluded and ejected ones, probes aside), blind to load."""

    def __init__(self, endpoints: Iterable[str] = (), new_endpoint: Callable[[str], Endpoint] = Endpoint):
        self._next = 0
        super().__init__(endpoints, new_endpoint)

    def pick(self, now: float | None = None, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        endpoints = self.endpoints
        count = len(endpoints)
        if now is None:
            now = monotonic()
        for _ in range(count):
            endpoint = endpoints[self._next % count]
            self._next += 1
            if endpoint not in exclude and endpoint.breaker.available(now):
                return endpoint
        return None
