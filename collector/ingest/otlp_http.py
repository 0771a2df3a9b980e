"""OTLP/HTTP receiver: ``POST /v1/traces`` with a protobuf or JSON ``ExportTraceServiceRequest``.

Replies use the request's encoding, as the OTLP/HTTP spec asks: an ``ExportTraceServiceResponse``
(with ``partial_success`` when some spans were rejected) or, for a bad request, a
``google.rpc.Status`` naming the problem.
"""

from __future__ import annotations

from aiohttp import web
from google.protobuf import json_format
from google.rpc.status_pb2 import Status

from collector.ingest.http_intake import back_pressure, spool_request
from collector.ingest.intake import Intake
from collector.spool import SpoolFull
from spans.otlp_decode import PayloadError, decode_otlp_json, decode_otlp_protobuf, export_response

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DECODERS = {PROTOBUF: decode_otlp_protobuf, JSON: decode_otlp_json}
INVALID_ARGUMENT = 3  # google.rpc.Code


def _reply(message, content_type: str, status: int = 200) -> web.Response:
    if content_type == JSON:
        return web.Response(status=status, body=json_format.MessageToJson(message, indent=None), content_type=JSON)
    return web.Response(status=status, body=message.SerializeToString(), content_type=PROTOBUF)


def traces_handler(intake: Intake):
    async def post_traces(request: web.Request) -> web.Response:
        content_type = request.content_type
        decode = DECODERS.get(content_type)
        if decode is None:
            return web.Response(status=415, text=f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type!r}")
        try:
            batch = await spool_request(request, intake, decode)
        except SpoolFull as exc:
            return back_pressure(str(exc))
        except PayloadError as exc:
            return _reply(Status(code=INVALID_ARGUMENT, message=str(exc)), content_type, 400)
        if batch.rejected and not batch.accepted:
            message = f"every span was rejected: {batch.error_message()}"
            return _reply(Status(code=INVALID_ARGUMENT, message=message), content_type, 400)
        return _reply(export_response(batch), content_type)

    return post_traces


def otlp_http_app(intake: Intake, max_request_bytes: int) -> web.Application:
    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_post("/v1/traces", traces_handler(intake))
    return app
