"""Real gRPC services and clients for the proxy tests, on generic handlers with bytes messages (no generated code).

``EchoApp`` serves ``tracemesh.test.Echo`` with one method per behaviour a proxy must pass through:
the four call kinds, metadata and trailers, any status with any message, slow calls that notice
cancellation, and big messages. ``ChainApp`` is a service that calls the next one, passing the trace
context on the way an instrumented app would, for the A -> B -> C tracing test.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc

SERVICE = "tracemesh.test.Echo"
MAX_MESSAGE = 16 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
TRACE_HEADERS = ("traceparent", "tracestate", "b3")


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def _echo_metadata(context) -> None:
    """Custom metadata (x-*) comes back as initial metadata and, renamed ``*-trailer``, as trailers."""
    custom = [(key, value) for key, value in context.invocation_metadata() if key.startswith("x-")]
    context.send_initial_metadata(custom)
    context.set_trailing_metadata([(key.replace("-bin", "-trailer-bin") if key.endswith("-bin") else key + "-trailer", value)
                                   for key, value in custom])


class EchoApp:
    """A gRPC server on 127.0.0.1:<port> (threads of this process); ``stop()`` ends it."""

    def __init__(self, port: int = 0, workers: int = 16):
        self.cancelled: list[str] = []  # methods whose call the server saw cancelled
        self.cancelled_event = threading.Event()
        self.seen_metadata: list[dict[str, str]] = []
        self.sleep_deadlines: list[float | None] = []  # time remaining when each Sleep call arrived
        self.calls: dict[str, int] = {}  # method -> calls that reached this server
        self._lock = threading.Lock()
        self._flaky_seen: set[bytes] = set()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=CHANNEL_OPTIONS)
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Sleep": grpc.unary_unary_rpc_method_handler(self.sleep),
            "Big": grpc.unary_unary_rpc_method_handler(self.big),
            "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)

    def _note(self, context) -> None:
        self.seen_metadata.append(dict(context.invocation_metadata()))

    def _count(self, method_name: str) -> None:
        with self._lock:
            self.calls[method_name] = self.calls.get(method_name, 0) + 1

    def unary(self, request: bytes, context) -> bytes:
        self._note(context)
        _echo_metadata(context)
        return request

    def client_stream(self, requests, context) -> bytes:
        _echo_metadata(context)
        count = total = 0
        for request in requests:
            count += 1
            total += len(request)
        return f"{count}:{total}".encode()

    def server_stream(self, request: bytes, context):
        _echo_metadata(context)
        count, size = (int(part) for part in request.split(b":"))
        for index in range(count):
            yield bytes([index % 256]) * size

    def bidi(self, requests, context):
        _echo_metadata(context)
        for request in requests:
            yield request[::-1]

    def fail(self, request: bytes, context) -> bytes:
        """Request ``code|message`` (UTF-8): ends the call with that status and message."""
        self._count("Fail")
        code, _, message = request.decode().partition("|")
        context.set_trailing_metadata([("x-failed", code)])
        context.abort(_status_code(int(code)), message)

    def sleep(self, request: bytes, context) -> bytes:
        """Sleeps ``request`` seconds unless cancelled first (then records it)."""
        self._note(context)
        self.sleep_deadlines.append(context.time_remaining())
        done = threading.Event()

        def on_done():
            if not done.is_set():
                self.cancelled.append("Sleep")
                self.cancelled_event.set()

        context.add_callback(on_done)
        deadline = time.monotonic() + float(request)
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        done.set()
        return b"slept"

    def flaky(self, request: bytes, context) -> bytes:
        """UNAVAILABLE the first time a request body is seen, an echo the second time."""
        self._count("Flaky")
        with self._lock:
            first = request not in self._flaky_seen
            self._flaky_seen.add(request)
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet, try again")
        return request

    def big(self, request: bytes, context) -> bytes:
        """Answers with ``len(request)`` bytes derived from it, so both directions carry the size."""
        return request[::-1]


def _status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    raise ValueError(f"no gRPC status {value}")


class ChainApp:
    """Service ``tracemesh.test.Chain``: ``Call`` forwards to ``next_target`` (its outbound proxy, naming
    ``next_service`` in :authority), copying the trace headers it received, as an instrumented app would."""

    def __init__(self, name: str, next_target: str | None = None, next_service: str = "", port: int = 0):
        self.name = name
        options = [("grpc.default_authority", next_service)] if next_service else []
        self.channel = grpc.insecure_channel(next_target, options=options) if next_target else None
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(self.call)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tracemesh.test.Chain", {"Call": handler}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def call(self, request: bytes, context) -> bytes:
        answer = request + b">" + self.name.encode()
        if self.channel is None:
            return answer
        trace = [(key, value) for key, value in context.invocation_metadata() if key in TRACE_HEADERS]
        return self.channel.unary_unary("/tracemesh.test.Chain/Call")(answer, metadata=trace, timeout=10)

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)
        if self.channel is not None:
            self.channel.close()


if __name__ == "__main__":  # python -m tests.support.grpc_apps PORT: an EchoApp in its own process
    import sys

    EchoApp(int(sys.argv[1])).server.wait_for_termination()
