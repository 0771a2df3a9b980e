"""Tracing for the gRPC services (grpc.aio, generic handlers, JSON messages: no generated code).

Server: ``traced_service(tracer, "shop.Payments", {"Charge": charge})`` where ``charge(request: dict)
-> dict`` is an async function that raises ``RpcFailure`` to fail the call. Client: ``GrpcOutbound``
sends every call to the local sidecar's outbound address with the destination service as
``:authority`` and the trace context in the metadata.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
from opentelemetry.trace import Status, StatusCode

from telemetry import client_span, from_json_bytes, json_bytes, server_span


class RpcFailure(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _rpc_attributes(service: str, method: str) -> dict:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _record_grpc_status(span, code: grpc.StatusCode, message: str = "") -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, message or code.name))


def traced_service(tracer, service: str, methods: dict) -> grpc.GenericRpcHandler:
    def traced(method: str, function):
        async def handle(request: dict, context: grpc.aio.ServicerContext) -> dict:
            metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            failure = None
            with server_span(tracer, f"{service}/{method}", metadata, _rpc_attributes(service, method)) as span:
                try:
                    answer = await function(request)
                except RpcFailure as error:
                    failure = error
                    _record_grpc_status(span, error.code, error.message)
                else:
                    _record_grpc_status(span, grpc.StatusCode.OK)
            if failure is not None:  # abort raises: end the span first, with the call's own status
                await context.abort(failure.code, failure.message)
            return answer

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=from_json_bytes, response_serializer=json_bytes
        )

    return grpc.method_handlers_generic_handler(
        service, {method: traced(method, function) for method, function in methods.items()}
    )


class GrpcOutbound:
    """Unary gRPC calls to other services through this instance's sidecar."""

    def __init__(self, tracer, outbound: str):
        self.tracer = tracer
        self.outbound = outbound
        self.channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, destination: str) -> grpc.aio.Channel:
        if destination not in self.channels:
            self.channels[destination] = grpc.aio.insecure_channel(
                self.outbound, options=[("grpc.default_authority", destination)]
            )
        return self.channels[destination]

    async def call(self, destination: str, service: str, method: str, request: dict, timeout_s: float = 10.0) -> dict:
        """Raises ``grpc.aio.AioRpcError`` when the call fails."""
        with client_span(self.tracer, f"{service}/{method}", destination, _rpc_attributes(service, method)) as (
            span,
            metadata,
        ):
            stub = self._channel(destination).unary_unary(
                f"/{service}/{method}", request_serializer=json_bytes, response_deserializer=from_json_bytes
            )
            try:
                answer = await stub(request, metadata=tuple(metadata.items()), timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                _record_grpc_status(span, error.code(), error.details() or "")
                raise
            _record_grpc_status(span, grpc.StatusCode.OK)
            return answer

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def serve(port: int, handlers: list[grpc.GenericRpcHandler], on_start=None, on_stop=None) -> None:
    """Serve on 127.0.0.1:port until SIGINT/SIGTERM, then finish the calls in flight (1 s).
    ``on_start`` / ``on_stop``: coroutine functions run in the server's loop before / after."""
    if on_start is not None:
        await on_start()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)
    if on_stop is not None:
        await on_stop()
