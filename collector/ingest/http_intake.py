"""The aiohttp side of the intake, shared by the OTLP/HTTP and Zipkin receivers.

aiohttp already enforces the body limit (413) and undoes ``Content-Encoding: gzip``; decoding and
spooling are CPU and disk work, so they run in a worker thread and the event loop stays free for
other requests and the query API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from collector.ingest.intake import RETRY_AFTER_S, Intake
from spans.otlp_decode import DecodedBatch


async def spool_request(request: web.Request, intake: Intake, decode: Callable[[bytes], DecodedBatch]) -> DecodedBatch:
    """Decode and spool the request body. Raises ``SpoolFull``, ``PayloadError`` or HTTP 413."""
    body = await request.read()
    return await asyncio.get_running_loop().run_in_executor(None, intake.accept, decode, body)


def back_pressure(message: str) -> web.Response:
    return web.Response(status=503, text=message, headers={"Retry-After": str(RETRY_AFTER_S)})
