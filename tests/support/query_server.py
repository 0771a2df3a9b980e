"""The query API on a real loopback socket, in a thread of the test process, around a given store.

Tests use it where the store has to be filled directly (``store.insert``) and then read over HTTP,
by urllib in the test or by the `tracemesh traces` CLI in a child process.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Iterator

import orjson
from aiohttp import web

from collector.query_api import setup_query_api
from tests.support.processes import free_port


@contextmanager
def serving_query_api(store) -> Iterator[str]:
    """Yields the API's base URL (``http://127.0.0.1:PORT``) while it serves; always stops it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="query-api", daemon=True)
    thread.start()
    app = web.Application()
    setup_query_api(app, store)
    runner = web.AppRunner(app)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def http_get(url: str) -> tuple[int, dict, object]:
    """Status, headers and decoded JSON body of a GET; HTTP errors are answers here, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), orjson.loads(error.read())
