"""Shoppers for the demo: requests to the frontend at a steady average rate (Poisson arrivals),
in a realistic mix — browsing, product pages (a few unknown ones), carts, checkouts.

    python traffic.py --target 127.0.0.1:7151 --rps 20 [--duration 60] [--report-every 10]

Prints one line per period: requests, rate, server errors, client errors, p50 and p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import time

import aiohttp

PRODUCT_IDS = ["tea-01", "tea-02", "mug-01", "pot-01", "kettle-01", "filter-01", "scale-01", "bean-01"]
USERS = [f"user-{n}" for n in range(1, 51)]


def product_id() -> str:
    return "discontinued-99" if random.random() < 0.05 else random.choice(PRODUCT_IDS)


async def browse(session: aiohttp.ClientSession, base: str, user: str) -> list[int]:
    async with session.get(f"{base}/", params={"user": user}) as response:
        return [response.status]


async def view_product(session, base, user) -> list[int]:
    async with session.get(f"{base}/products/{product_id()}") as response:
        return [response.status]


async def add_to_cart(session, base, user) -> list[int]:
    async with session.post(f"{base}/cart", json={"user": user, "product_id": product_id()}) as response:
        return [response.status]


async def view_cart(session, base, user) -> list[int]:
    async with session.get(f"{base}/cart", params={"user": user}) as response:
        return [response.status]


async def buy(session, base, user) -> list[int]:
    statuses = await add_to_cart(session, base, user)
    async with session.post(f"{base}/checkout", json={"user": user}) as response:
        return statuses + [response.status]


# (share of visits, what the visitor does)
MIX = [(0.40, browse), (0.25, view_product), (0.15, add_to_cart), (0.10, view_cart), (0.10, buy)]


class Stats:
    def __init__(self):
        self.latencies: list[float] = []
        self.server_errors = self.client_errors = self.failed = 0
        self.total = 0

    def record(self, seconds: float, statuses: list[int]) -> None:
        self.latencies.append(seconds)
        self.total += len(statuses)
        self.server_errors += sum(status >= 500 for status in statuses)
        self.client_errors += sum(400 <= status < 500 for status in statuses)

    def line(self, period_s: float) -> str:
        if not self.latencies:
            return f"traffic: no answers in the last {period_s:.0f}s ({self.failed} connection failures)"
        cuts = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else self.latencies * 99
        return (
            f"traffic: {self.total} requests in {period_s:.0f}s ({self.total / period_s:.1f}/s), "
            f"{self.server_errors} server errors ({100 * self.server_errors / max(self.total, 1):.1f}%), "
            f"{self.client_errors} client errors, {self.failed} failed; visit p50 {cuts[49] * 1000:.0f} ms, "
            f"p99 {cuts[98] * 1000:.0f} ms"
        )


async def visit(session, base: str, stats: Stats) -> None:
    action = random.choices([action for _, action in MIX], weights=[share for share, _ in MIX])[0]
    started = time.monotonic()
    try:
        statuses = await action(session, base, random.choice(USERS))
    except (aiohttp.ClientError, asyncio.TimeoutError):
        stats.failed += 1
        return
    stats.record(time.monotonic() - started, statuses)


async def generate(
    target: str, rps: float, duration_s: float | None, report_every_s: float, max_in_flight: int
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if duration_s:
        loop.call_later(duration_s, stop.set)
    base = f"http://{target}"
    in_flight: set[asyncio.Task] = set()
    stats, period_start = Stats(), time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=random.expovariate(rps))
            except asyncio.TimeoutError:
                pass
            if not stop.is_set() and len(in_flight) < max_in_flight:
                task = asyncio.create_task(visit(session, base, stats))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if time.monotonic() - period_start >= report_every_s:
                print(stats.line(time.monotonic() - period_start), flush=True)
                stats, period_start = Stats(), time.monotonic()
        if in_flight:
            await asyncio.wait(in_flight, timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="HOST:PORT of the frontend (its sidecar's inbound)")
    parser.add_argument("--rps", type=float, default=20.0, help="visits per second on average (default 20)")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until SIGINT/SIGTERM)")
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--max-in-flight", type=int, default=200, help="visits in progress at most")
    args = parser.parse_args()
    if args.rps <= 0:
        parser.error("--rps must be positive")
    asyncio.run(generate(args.target, args.rps, args.duration, args.report_every, args.max_in_flight))


if __name__ == "__main__":
    main()
