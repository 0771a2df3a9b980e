"""Zipkin v2 receiver: ``POST /api/v2/spans`` (JSON) on the HTTP API port, as Zipkin serves it.

Zipkin's API has no partial-success reply, so the choice here is: the valid spans of a request
are stored and the reply is ``400`` naming each rejected span (index, id and problem); a request
with no bad span gets Zipkin's ``202 Accepted``. Zipkin reporters do not retry 4xx replies, so
the kept spans are not sent twice.
"""

from __future__ import annotations

from aiohttp import web

from collector.ingest.http_intake import back_pressure, spool_request
from collector.ingest.intake import Intake
from collector.ingest.zipkin_decode import decode_zipkin_json
from collector.spool import SpoolFull
from spans.otlp_decode import PayloadError


def spans_handler(intake: Intake):
    async def post_spans(request: web.Request) -> web.Response:
        if request.content_type not in ("application/json", "application/octet-stream", ""):
            return web.Response(status=415, text=f"only Zipkin v2 JSON is accepted, got {request.content_type!r}")
        try:
            batch = await spool_request(request, intake, decode_zipkin_json)
        except SpoolFull as exc:
            return back_pressure(str(exc))
        except PayloadError as exc:
            return web.Response(status=400, text=str(exc))
        if batch.rejected:
            return web.Response(
                status=400,
                text=f"stored {batch.accepted} spans, rejected {len(batch.rejected)}: {batch.error_message()}",
            )
        return web.Response(status=202)

    return post_spans


def add_zipkin_routes(app: web.Application, intake: Intake) -> None:
    app.router.add_post("/api/v2/spans", spans_handler(intake))
