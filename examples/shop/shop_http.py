"""Tracing for the aiohttp services: a server middleware and a client for calls through the sidecar."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from telemetry import client_span, record_http_status, server_span


def tracing_middleware(tracer):
    """One SERVER span per request, named ``METHOD /route/{param}``, continuing the incoming trace."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        attributes = {"http.request.method": request.method, "http.route": route, "url.path": request.path}
        with server_span(tracer, f"{request.method} {route}", request.headers, attributes) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                record_http_status(span, exc.status)
                raise
            record_http_status(span, response.status)
            return response

    return middleware


class HttpOutbound:
    """HTTP calls to other services through this instance's sidecar (``outbound`` = its address):
    the destination service goes in ``Host``, the trace context in ``traceparent``."""

    def __init__(self, tracer, outbound: str, timeout_s: float = 10.0):
        self.tracer = tracer
        self.outbound = outbound
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app=None) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self, app=None) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, service: str, path: str, json=None) -> tuple[int, object]:
        """(status, JSON body or text) of ``method http://service/path``."""
        attributes = {"http.request.method": method, "server.address": service, "url.full": f"http://{service}{path}"}
        with client_span(self.tracer, method, service, attributes) as (span, trace_headers):
            async with self.session.request(
                method, f"http://{self.outbound}{path}", headers={"Host": service, **trace_headers}, json=json
            ) as response:
                record_http_status(span, response.status)
                if response.content_type == "application/json":
                    return response.status, await response.json()
                return response.status, await response.text()


def run(app: web.Application, port: int) -> None:
    """Serve on 127.0.0.1:port until SIGINT/SIGTERM."""
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, shutdown_timeout=2.0)
