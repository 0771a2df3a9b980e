"""A real OTLP/gRPC TraceService on a loopback port that keeps what it receives, and can be told to
answer with an error or to stall: the collector stand-in for span-export tests."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, port: int = 0):
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.calls = 0
        self.fail_with: grpc.StatusCode | None = None  # answer every call with this status
        self.delay_s = 0.0  # sleep before answering
        self.reject_spans = 0  # report this many spans per call as rejected (partial success)
        self._lock = threading.Lock()
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
        with self._lock:
            self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            context.abort(self.fail_with, f"test sink answers {self.fail_with.name}")
        with self._lock:
            self.requests.append(request)
        response = trace_service_pb2.ExportTraceServiceResponse()
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


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Polls ``condition`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
