"""Admission control per destination: a bounded number of requests in flight, a bounded queue behind them.

An overloaded upstream is made worse by a proxy that holds on to everything sent to it: memory grows,
latency grows, and callers time out on requests that still get sent later. So a destination admits at
most ``max_in_flight`` requests; up to ``max_queue`` more wait in order; a request that finds the queue
full, or that has waited ``max_wait_s``, is refused at once with ``Shed`` and the proxy answers 503
(gRPC UNAVAILABLE) naming the reason. Single-threaded asyncio, so plain counters, no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque

QUEUE_FULL = "queue_full"
QUEUE_TIMEOUT = "queue_timeout"


class Shed(Exception):
    """The request was refused before reaching an upstream; ``reason`` is QUEUE_FULL or QUEUE_TIMEOUT."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AdmissionQueue:
    def __init__(self, max_in_flight: int = 1000, max_queue: int = 1000, max_wait_s: float = 1.0):
        if max_in_flight < 1 or max_queue < 0 or max_wait_s <= 0:
            raise ValueError("need max_in_flight >= 1, max_queue >= 0, max_wait_s > 0")
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self.in_flight = 0
        self.shed_total = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Admit at once if a slot is free and nobody is queued (the hot path: no await, no allocation)."""
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> float:
        """Admit this request, waiting in line if needed; returns the seconds waited. Raises ``Shed``."""
        if self.try_acquire():
            return 0.0
        if len(self._waiters) >= self.max_queue:
            self.shed_total += 1
            raise Shed(QUEUE_FULL)
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.max_wait_s, self._expire, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._forget(waiter)
            elif waiter.exception() is None:
                self.release()  # a slot was handed over just as the caller went away
            raise
        finally:
            timer.cancel()
        return loop.time() - started

    def release(self) -> None:
        """An admitted request is done: its slot goes to the first waiter, if any."""
        self.in_flight -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
                return

    def _expire(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            self._forget(waiter)
            self.shed_total += 1
            waiter.set_exception(Shed(QUEUE_TIMEOUT))

    def _forget(self, waiter: asyncio.Future) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
