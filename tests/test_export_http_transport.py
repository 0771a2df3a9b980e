"""The OTLP/HTTP transport's own HTTP/1.1 client (an asyncio connection on the exporter's loop) against
a real socket server that answers with scripted bytes: it reads plain and chunked answers, reconnects
when told to close, and turns a collector that hangs, hangs up, or answers garbage into a clear
ExportRefused, retryable or not, never a hang."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from mesh.export import ExportRefused, HttpTransport
from tests.support.trace_sink import wait_until

OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


class ScriptedServer:
    """Accepts connections on 127.0.0.1; to each request answers the next scripted reply (bytes, or
    None to hang up without answering), then closes the connection if the reply says so."""

    def __init__(self, replies: list[bytes | None]):
        self.replies = list(replies)
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/traces"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.replies:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                while self.replies and self._answer_one(connection):
                    pass

    def _answer_one(self, connection: socket.socket) -> bool:
        """Reads one request and answers it; False when the connection is done."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += connection.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        reply = self.replies.pop(0)
        if reply is None:
            return False
        connection.sendall(reply)
        return b"connection: close" not in reply.lower()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def server(request):
    created = []

    def make(replies):
        created.append(ScriptedServer(replies))
        return created[-1]

    yield make
    for server in created:
        server.close()


def send_all(url: str, payloads: list[bytes], timeout_s: float = 2.0) -> list[bytes | ExportRefused]:
    """Sends each payload in turn on one transport (one event loop); each answer body or refusal."""

    async def run():
        transport = HttpTransport(url)
        results = []
        for payload in payloads:
            try:
                results.append(await transport.send(payload, timeout_s))
            except ExportRefused as refused:
                results.append(refused)
        transport.close()
        return results

    return asyncio.run(run())


def test_requests_go_out_as_protobuf_posts_on_one_kept_alive_connection(server):
    scripted = server([OK_EMPTY, OK_EMPTY, OK_EMPTY])
    assert send_all(scripted.url, [b"a", b"bb", b"c" * 100_000]) == [b"", b"", b""]
    assert scripted.connections == 1
    first = scripted.requests[0]
    assert first.startswith(b"POST /v1/traces HTTP/1.1\r\n")
    assert b"\r\nContent-Type: application/x-protobuf\r\n" in first and first.endswith(b"\r\n\r\na")
    assert scripted.requests[2].endswith(b"c" * 100_000)


def test_a_chunked_answer_is_read_whole(server):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\x0a\x02\x08\r\n1\r\n\x02\r\n0\r\n\r\n"
    scripted = server([chunked, OK_EMPTY])
    assert send_all(scripted.url, [b"x", b"y"]) == [b"\x0a\x02\x08\x02", b""]


def test_connection_close_is_honoured_and_the_next_batch_reconnects(server):
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    scripted = server([closing, OK_EMPTY])
    assert send_all(scripted.url, [b"x", b"y"]) == [b"", b""]
    assert scripted.connections == 2


@pytest.mark.parametrize(
    "reply, reason, retryable",
    [
        (None, "the collector closed the connection", True),
        (b"SMTP ready\r\n\r\n", "malformed HTTP response", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + bytes(70_000), "too large", False),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", "HTTP 503: busy", True),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 7\r\n\r\nbad otl", "HTTP 400: bad otl", False),
    ],
)
def test_a_collector_that_hangs_up_or_answers_wrong_is_refused_and_the_next_batch_gets_a_fresh_start(
    server, reply, reason, retryable
):
    scripted = server([reply, OK_EMPTY])
    refused, after = send_all(scripted.url, [b"x", b"y"])
    assert isinstance(refused, ExportRefused) and reason in str(refused)
    assert refused.retryable is retryable
    assert after == b""


def test_a_collector_that_never_answers_times_out(server):
    scripted = server([b"", OK_EMPTY])  # an empty reply: the request is read, nothing is sent back
    (refused,) = send_all(scripted.url, [b"x"], timeout_s=0.3)
    assert isinstance(refused, ExportRefused) and refused.retryable
    assert "no answer within 0.3s" in str(refused)
    assert wait_until(lambda: len(scripted.requests) == 1)


def test_nobody_listening_is_a_retryable_refusal():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (refused,) = send_all(f"http://127.0.0.1:{port}", [b"x"])
    assert isinstance(refused, ExportRefused) and refused.retryable
    assert "ConnectionRefusedError" in str(refused)
