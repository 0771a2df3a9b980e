"""Helpers for the service-graph history tests: a settable clock, edges by (source, target), and
the graph API of a ``ServiceGraph`` served on a free loopback port."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from collector.graph.api import setup_graph_api
from collector.graph.service_graph import ServiceGraph
from tests.support.processes import free_port

S = 1_000_000_000
T0 = 1_800_000_000 * S  # 2027-01-15T08:00:00Z, a window boundary
LATER = T0 + 2 * 3600 * S  # beyond the hour a graph keeps in memory


class Clock:
    def __init__(self, now_ns: int):
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def edges(answer: dict) -> dict[tuple[str, str], dict]:
    return {(edge["source"], edge["target"]): edge for edge in answer["edges"]}


def get_json(graph: ServiceGraph, requests: list[tuple[str, dict]]) -> list[tuple[int, dict]]:
    """Serve ``graph`` on a free loopback port, GET each (path, params), return (status, JSON)."""

    async def scenario():
        app = web.Application()
        setup_graph_api(app, graph)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
                answers = []
                for path, params in requests:
                    async with session.get(path, params=params) as response:
                        assert response.content_type == "application/json"
                        answers.append((response.status, await response.json()))
                return answers
        finally:
            await runner.cleanup()

    return asyncio.run(scenario())
