"""When a failed request may be sent again, and how many retries a destination can afford.

Retries are what turn a struggling service into a dead one: if every caller retries every failure, load
multiplies exactly when capacity is lowest. So a retry must be safe (the request is idempotent, or it
never reached the upstream) and paid for from a budget that grows with real traffic: over a sliding
window of ``ttl_s`` seconds, retries may be at most ``ratio`` × original requests plus a reserve of
``min_per_s`` × ``ttl_s`` (so quiet destinations can still retry). Backoff between attempts is jittered
so that callers who failed together do not retry together.

Whether the request body can be replayed is the data path's call: it may only retry requests whose body
it kept whole, which it does for bodies up to ``MAX_REPLAY_BODY`` bytes.
"""

from __future__ import annotations

import random as _random_module
from typing import Callable, Collection

import cython
from cython.cimports.cpython.time import monotonic  # C calls, no Python call per read

MAX_REPLAY_BODY = 64 * 1024

# Error kinds the data path reports to ``http_retryable`` when there is no response status.
CONNECT_FAILED = "connect_failed"  # refused / unreachable / connect timeout: nothing was sent
CONNECTION_LOST = "connection_lost"  # closed or reset after sending, before a response arrived

IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
RETRYABLE_HTTP_STATUSES = frozenset((502, 503, 504))
GRPC_UNAVAILABLE = 14
DEFAULT_GRPC_RETRYABLE = frozenset((GRPC_UNAVAILABLE,))

_SLOTS = 10  # retry.pxd sizes the slot arrays with the same number


class RetryBudget:
    """Sliding-window retry budget, counted in ``_SLOTS`` time slots of ``ttl_s / _SLOTS`` each.

    Every original request deposits, so the counts are C arrays (retry.pxd): a deposit is a few
    machine instructions, where list slots of Python ints cost a few hundred."""

    def __init__(self, ratio: float = 0.2, min_per_s: float = 10.0, ttl_s: float = 10.0, now: float | None = None):
        if ratio < 0 or min_per_s < 0 or ttl_s <= 0:
            raise ValueError("need ratio >= 0, min_per_s >= 0, ttl_s > 0")
        self.ratio = ratio
        self.reserve = min_per_s * ttl_s
        self._slot_s = ttl_s / _SLOTS
        if cython.sizeof(self._deposits) != _SLOTS * cython.sizeof(cython.longlong):
            raise RuntimeError("retry.pxd's slot arrays must hold _SLOTS counts")  # else writes run past them
        for index in range(_SLOTS):
            self._deposits[index] = 0
            self._withdrawals[index] = 0
        self._deposited = 0  # sums over the window
        self._withdrawn = 0
        self._slot = self._slot_at(monotonic() if now is None else now)

    def deposit(self, now: float) -> None:
        """Count one original request (not a retry) made at ``now``."""
        slot = self._slot_at(now)
        if slot != self._slot:
            self._advance(slot)
        self._deposits[slot % _SLOTS] += 1
        self._deposited += 1

    def withdraw(self, now: float | None = None) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        slot = self._slot_at(monotonic() if now is None else now)
        if slot != self._slot:
            self._advance(slot)
        if self._withdrawn + 1 > self.ratio * self._deposited + self.reserve + 1e-9:
            return False
        self._withdrawals[slot % _SLOTS] += 1
        self._withdrawn += 1
        return True

    def _slot_at(self, now: float) -> int:
        """The number of the slot ``now`` falls in."""
        return cython.cast(cython.longlong, now / self._slot_s)

    def _advance(self, slot: int) -> None:
        """Forget the slots that fell out of the window since the last call."""
        for expired in range(self._slot + 1, min(slot, self._slot + _SLOTS) + 1):
            index = expired % _SLOTS
            self._deposited -= self._deposits[index]
            self._withdrawn -= self._withdrawals[index]
            self._deposits[index] = 0
            self._withdrawals[index] = 0
        self._slot = slot


def backoff(
    attempt: int, base_s: float = 0.025, cap_s: float = 0.25, random: Callable[[], float] = _random_module.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): exponential, capped, half of it jittered."""
    ceiling = min(cap_s, base_s * (1 << min(attempt - 1, 30)))
    return ceiling * (0.5 + 0.5 * random())


def http_retryable(method: bytes, status: int | None, error: str | None) -> bool:
    """May an HTTP request that got ``status`` (or failed with ``error``) be sent again?"""
    if error == CONNECT_FAILED:
        return True  # the upstream never saw it, whatever the method
    if method not in IDEMPOTENT_METHODS:
        return False
    if error is not None:
        return error == CONNECTION_LOST
    return status in RETRYABLE_HTTP_STATUSES


def grpc_retryable(status: int, retryable: Collection[int] = DEFAULT_GRPC_RETRYABLE) -> bool:
    """May a gRPC call that ended with ``status`` (before any response message) be sent again?"""
    return status in retryable
