"""The proxy's request deadlines, checked every ``tick_s``.

One sweep for all requests is much cheaper than a timer per request (a timer handle per request,
scheduled and cancelled), and timeouts are configured in whole milliseconds or more. Anything with a
``deadline`` (monotonic seconds) and a ``timed_out()`` method can be pending: HTTP/1.1 exchanges and
gRPC calls both are.
"""

from __future__ import annotations

import asyncio
import time

_monotonic = time.monotonic


class Deadlines:
    def __init__(self, tick_s: float = 0.02):
        self.tick_s = tick_s
        self.pending: set = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = _monotonic()
            for request in [r for r in self.pending if r.deadline <= now]:
                request.timed_out()
