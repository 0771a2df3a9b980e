"""Real OTLP receivers on loopback ports that keep what they receive and can be told to refuse or to
stall: the collector stand-ins for span-export tests. ``GrpcTraceSink`` serves OTLP/gRPC
(``TraceService/Export``), ``HttpTraceSink`` OTLP/HTTP (``POST /v1/traces``, binary protobuf)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service_pb2.ExportTraceServiceResponse

RETRYABLE, PERMANENT = "retryable", "permanent"


class _TraceSink:
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.calls = 0
        self.refuse: str | None = None  # RETRYABLE or PERMANENT: answer every call with such an error
        self.delay_s = 0.0  # sleep before answering
        self.reject_spans = 0  # report this many spans per call as rejected (partial success)
        self._lock = threading.Lock()

    def _receive(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse | None:
        """The response to send, or None when the call is to be refused (``self.refuse``)."""
        with self._lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.refuse:
            return None
        with self._lock:
            self.requests.append(request)
        response = ExportTraceServiceResponse()
        if self.reject_spans:
            response.partial_success.rejected_spans = self.reject_spans
            response.partial_success.error_message = "test sink rejects some spans"
        return response

    def spans(self) -> list:
        with self._lock:
            return [
                span
                for request in self.requests
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]


class GrpcTraceSink(_TraceSink, trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, port: int = 0):
        super().__init__()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=0).wait(5)

    def Export(self, request, context):
        response = self._receive(request)
        if response is None:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if self.refuse == RETRYABLE else grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, f"test sink answers {code.name}")
        return response


class HttpTraceSink(_TraceSink):
    def __init__(self, port: int = 0):
        super().__init__()
        sink = self
        self._connections: set = set()  # open keep-alive sockets, closed on stop like a killed process

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter expects

            def setup(self):
                super().setup()
                with sink._lock:
                    sink._connections.add(self.connection)

            def finish(self):
                with sink._lock:
                    sink._connections.discard(self.connection)
                super().finish()

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
                    return self._answer(404, b"")
                response = sink._receive(ExportTraceServiceRequest.FromString(body))
                if response is None:
                    return self._answer(503 if sink.refuse == RETRYABLE else 400, b"test sink refuses")
                self._answer(200, response.SerializeToString())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:  # already closed by the client
                    pass
        self._thread.join(5)


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Polls ``condition`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


@contextlib.contextmanager
def loop_in_thread():
    """A running event loop in a thread of its own: where an ``OtlpExporter`` encodes (a proxy's data path)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
