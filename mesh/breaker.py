"""Failure accrual: take an endpoint that keeps failing out of the balancer, and let it back in carefully.

After ``threshold`` consecutive failures the endpoint is ejected for ``min_backoff_s``. When that time has
passed exactly one request is let through as a probe: its success restores the endpoint, its failure ejects
it again for twice as long, up to ``max_backoff_s`` (1, 2, 4, ... 60 s by default). This is what stops a
dead endpoint from eating a share of every retry while it is down, without forgetting it exists.

``threshold=0`` turns accrual off (an inbound proxy must never eject the one local app it fronts).

A probe that never reports back (its caller went away) does not wedge the endpoint: another probe is
allowed one backoff period later. Failures of requests sent before the current probe (stragglers that
were already in flight when the endpoint was ejected) do not count against the probe.
"""

from __future__ import annotations

_NEVER = float("-inf")


class FailureAccrual:
    def __init__(self, threshold: int = 5, min_backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        if threshold < 0 or min_backoff_s <= 0 or max_backoff_s < min_backoff_s:
            raise ValueError("need threshold >= 0 and 0 < min_backoff_s <= max_backoff_s")
        self.threshold = threshold
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.consecutive_failures = 0  # > 0 while ejected: with none, success() has nothing to do (relay skips it)
        self.ejections = 0  # times this endpoint was ejected (first ejections and failed probes)
        self.ejected = False  # True from ejection until a success (probing included)
        self._backoff_s = min_backoff_s
        self._until = 0.0  # no request (not even a probe) before this time
        self._probe_sent_at = _NEVER

    def success(self) -> None:
        self.consecutive_failures = 0
        if self.ejected:
            self.ejected = False
            self._backoff_s = self.min_backoff_s
            self._probe_sent_at = _NEVER

    def failure(self, now: float, sent_at: float | None = None) -> None:
        """A request to this endpoint failed at ``now``; ``sent_at`` (when known) is when it was sent."""
        if not self.ejected:
            self.consecutive_failures += 1
            if self.consecutive_failures == self.threshold:
                self.ejected = True
                self._eject(now)
            return
        if self._probe_sent_at == _NEVER or (sent_at is not None and sent_at < self._probe_sent_at):
            return  # a straggler from before the probe: says nothing new
        self._backoff_s = min(self._backoff_s * 2.0, self.max_backoff_s)
        self._probe_sent_at = _NEVER
        self._eject(now)

    def available(self, now: float) -> bool:
        """May a request go to this endpoint now? While ejected, True exactly once per backoff (the probe)."""
        if not self.ejected:
            return True
        if now < self._until:
            return False
        self._probe_sent_at = now
        self._until = now + self._backoff_s
        return True

    def _eject(self, now: float) -> None:
        self.ejections += 1
        self._until = now + self._backoff_s
