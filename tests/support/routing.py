"""The routing experiment: service B has three instances, one gets +200 ms at t0; how do callers fare?

Real processes on loopback: a collector (its control port on), the three B instances (one
process, ``tests.apps.delayed``) each behind its own sidecar registered at the collector, and
caller sidecars for A, one set per balancer mode, all calling the same B (so the collector sees
the mesh-wide traffic, as it would in production). Per mode:

* a steady caller sends ``steady_rps`` from before t0 to the end: the share of its requests that
  reach the slow instance per second after t0, the time until that share stays at or below 10 %,
  and its p99 after t0;
* ``fresh_callers`` light callers (started with the others, idle until then) begin ``fresh_after_s``
  after t0 and each send ``fresh_requests`` requests at ``fresh_rps``: many callers each sending
  little. After t0 their local view has no history of B at all; before t0 (a negative
  ``fresh_after_s``) a little, which ages between their rare requests.

``tests/test_routing_experiment.py`` runs it short; ``bench/routing.py`` long, and prints it.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.collector import collector_for
from tests.support.mesh import App, Mesh, Sidecar
from tests.support.processes import ManagedProcess, free_port, wait_for_port

MODES = ("round-robin", "ewma", "mesh")
SLOW = 0  # the instance that gets the delay


@dataclass
class Sample:
    sent_at: float  # seconds since t0 (negative before)
    latency_s: float
    instance: int  # -1 when the request failed


@dataclass
class Outcome:
    mode: str
    steady: list[Sample] = field(default_factory=list)
    fresh: list[Sample] = field(default_factory=list)

    def steady_after(self, start_s: float = 0.0) -> list[Sample]:
        return [s for s in self.steady if s.sent_at >= start_s]

    def time_to_shift_s(self, share: float = 0.1, min_requests: int = 5) -> float | None:
        """Seconds after t0 from which every 1-second bin (of at least ``min_requests``: the last,
        partial one may hold a couple) sends at most ``share`` to the slow instance (None if the
        last bin still does not)."""
        bins: dict[int, list[int]] = {}
        for sample in self.steady_after():
            counts = bins.setdefault(int(sample.sent_at), [0, 0])
            counts[0] += sample.instance == SLOW
            counts[1] += 1
        shifted = None
        for second in sorted(bins):
            slow, total = bins[second]
            if total < min_requests:
                continue
            if slow > share * total:
                shifted = None
            elif shifted is None:
                shifted = float(second)
        return shifted


def slow_share(samples: list[Sample]) -> float:
    return sum(s.instance == SLOW for s in samples) / len(samples) if samples else float("nan")


def p99_ms(samples: list[Sample]) -> float:
    latencies = sorted(s.latency_s for s in samples)
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000


@dataclass
class Experiment:
    directory: Path
    delay_ms: float = 200.0
    warmup_s: float = 4.0
    after_s: float = 10.0
    steady_rps: float = 30.0
    fresh_callers: int = 5
    fresh_after_s: float = 5.0
    fresh_requests: int = 8
    fresh_rps: float = 2.0
    modes: tuple[str, ...] = MODES
    say: Callable[[str], None] = print
    inspect: Callable | None = None  # called with the running collector after the run, before stopping

    def run(self) -> dict[str, Outcome]:
        mesh = Mesh(self.directory)
        collector = collector_for(self.directory)
        control = collector.control_address
        try:
            collector.start()
            self.say(f"collector up (control {control})")
            ports = [free_port() for _ in range(3)]
            delay_port = free_port()
            args = [sys.executable, "-m", "tests.apps.delayed", "--ports", ",".join(map(str, ports)), "--control", str(delay_port)]
            process = ManagedProcess(args, self.directory / "b-instances.log")
            mesh.processes.append(process)
            for port in (*ports, delay_port):
                wait_for_port(port, process=process.popen)
            common = ("--control", control, "--collector", collector.grpc_address)
            for port in ports:
                mesh.sidecar("b", App("b", port, process), collector=None, outbound=False, extra=common)
            steady = {mode: self._caller(mesh, collector, control, mode) for mode in self.modes}
            fresh_modes = [mode for mode in self.modes if mode != "round-robin"] * self.fresh_callers
            with ThreadPoolExecutor(4) as pool:  # start them in parallel: a proxy takes ~0.5 s to start
                fresh = list(pool.map(lambda mode: (mode, self._caller(mesh, collector, control, mode)), fresh_modes))
            for caller in [*steady.values(), *(caller for _, caller in fresh)]:
                wait_known(caller, "b", 3)
            self.say(f"B's three instances registered; {len(steady) + len(fresh)} callers know them")
            outcomes = asyncio.run(self._drive(steady, fresh, delay_port))
            if self.inspect is not None:
                self.inspect(collector)
            return outcomes
        finally:
            mesh.close()
            collector.stop()

    def _caller(self, mesh: Mesh, collector, control: str, mode: str) -> Sidecar:
        extra = ("--control", control, "--balancer", mode)
        return mesh.sidecar(f"a-{mode}", collector=collector.grpc_address, extra=extra)

    async def _drive(self, steady: dict[str, Sidecar], fresh: list[tuple[str, Sidecar]], delay_port: int):
        outcomes = {mode: Outcome(mode) for mode in self.modes}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            t0 = time.monotonic() + self.warmup_s
            end = t0 + self.after_s
            start = time.monotonic()
            tasks = [
                _paced(session, caller.outbound, self.steady_rps, start, None, t0, end, outcomes[mode].steady)
                for mode, caller in steady.items()
            ]
            light_start = t0 + self.fresh_after_s
            tasks += [
                _paced(session, caller.outbound, self.fresh_rps, light_start, self.fresh_requests, t0, None, outcomes[mode].fresh)
                for mode, caller in fresh
            ]
            tasks = [asyncio.create_task(task) for task in tasks]
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            _set_delay(delay_port, SLOW, self.delay_ms)
            self.say(f"t0: +{self.delay_ms:g} ms on instance {SLOW}")
            await asyncio.gather(*tasks)
        return outcomes


def wait_known(sidecar: Sidecar, service: str, endpoints: int, timeout: float = 20.0) -> None:
    """Until the sidecar's balancer for ``service`` holds ``endpoints`` endpoints (from the control stream)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = sidecar.metrics()
        if text.count(f'tracemesh_endpoint_load_seconds{{destination="{service}"') >= endpoints:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{sidecar.service}'s sidecar never learned {endpoints} endpoints of {service}")


def _set_delay(port: int, index: int, ms: float) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/delay/{index}/{ms:g}", method="PUT")
    with urllib.request.urlopen(request, timeout=5):
        pass


async def _paced(
    session, port: int, rps: float, start: float, count: int | None, t0: float, end: float | None, out: list[Sample]
):
    """Send GETs with Host: b to a caller's outbound at ``rps`` from ``start`` (open loop: a slow
    answer does not delay the next request), ``count`` of them or until ``end``."""
    url = f"http://127.0.0.1:{port}/work"
    pending = []
    next_at = start
    sent = 0
    while (count is None or sent < count) and (end is None or next_at < end):
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        pending.append(asyncio.create_task(_one(session, url, t0, out)))
        sent += 1
        next_at += 1.0 / rps
    await asyncio.gather(*pending)


async def _one(session, url: str, t0: float, out: list[Sample]) -> None:
    started = time.monotonic()
    try:
        async with session.get(url, headers={"Host": "b"}, timeout=aiohttp.ClientTimeout(total=10)) as response:
            body = await response.read()
            instance = int(body) if response.status == 200 else -1
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        instance = -1
    out.append(Sample(started - t0, time.monotonic() - started, instance))
