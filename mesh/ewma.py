"""Peak-EWMA load estimate of one endpoint: how long a new request sent there can expect to take.

Load = RTT estimate × (pending + 1), as in Finagle and linkerd2-proxy. The RTT estimate jumps up to any
slower observation at once (peak-sensitive: a degrading endpoint is avoided immediately) and moves down
toward faster observations only as fast as time passes (exponential decay over ``decay_s``). Reading the
load also decays the estimate toward zero, so an endpoint nobody has used for a while looks cheap again
and gets probed with real traffic instead of being shunned forever on one old slow response.

Times are ``time.monotonic()`` seconds; every method takes ``now`` so tests drive a simulated clock.
"""

from __future__ import annotations

from cython.cimports.cpython.time import monotonic  # C calls, no Python call per read
from cython.cimports.libc.math import exp

DEFAULT_DECAY_S = 10.0
DEFAULT_INITIAL_RTT_S = 0.03  # assumed for a new endpoint until it has answered



class PeakEwma:
    def __init__(self, decay_s: float = DEFAULT_DECAY_S, initial_rtt_s: float = DEFAULT_INITIAL_RTT_S, now: float | None = None):
        if decay_s <= 0 or initial_rtt_s <= 0:
            raise ValueError("decay_s and initial_rtt_s must be positive")
        self.decay_s = decay_s
        self.rtt_s = initial_rtt_s
        self.pending = 0
        self._updated_at = monotonic() if now is None else now

    def start(self, now: float | None = None) -> float:
        """Mark one request pending; returns its start time for ``finish``."""
        self.pending += 1
        return monotonic() if now is None else now

    def load_and_start(self, now: float) -> float:
        """``load(now)`` then ``start(now)`` in one call (the relay's every attempt): returns the load the
        request is sent at; ``now`` is its t0 for ``finish``."""
        if now > self._updated_at:
            self.rtt_s *= exp((self._updated_at - now) / self.decay_s)
            self._updated_at = now
        pending = self.pending
        self.pending = pending + 1
        return self.rtt_s * (pending + 1)

    def finish(self, t0: float, now: float | None = None) -> None:
        """The request started at ``t0`` has completed (successfully or not): observe its RTT."""
        at = monotonic() if now is None else now
        if self.pending > 0:
            self.pending -= 1
        rtt = at - t0
        if rtt > self.rtt_s:
            self.rtt_s = rtt
        else:
            decay = exp((self._updated_at - at) / self.decay_s) if at > self._updated_at else 1.0
            self.rtt_s = self.rtt_s * decay + rtt * (1.0 - decay)
        self._updated_at = at

    def load(self, now: float | None = None) -> float:
        """Expected cost of one more request: decayed RTT estimate × (pending + 1)."""
        at = monotonic() if now is None else now
        if at > self._updated_at:
            self.rtt_s *= exp((self._updated_at - at) / self.decay_s)
            self._updated_at = at
        return self.rtt_s * (self.pending + 1)
