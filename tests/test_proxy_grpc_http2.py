"""The proxy's HTTP/2 layer seen from the wire: flow control bounds what it buffers, and malformed input
costs only the stream or connection that sent it. The caller here is the `h2` library or raw frames,
so the test controls exactly what is acknowledged and sent."""

from __future__ import annotations

import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from mesh import http2
from tests.support.grpc_apps import EchoApp, method
from tests.support.grpc_proxy import ProxyLoop

pytestmark = pytest.mark.timeout(60)

FRAME_HEAD = struct.Struct(">BHBBI")


@pytest.fixture(scope="module")
def app():
    server = EchoApp()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(app):
    loop = ProxyLoop()
    address, _spans = loop.inbound("echo", app.address)
    yield loop, address
    loop.stop()


def connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.settimeout(0.2)
    return sock


def grpc_request(path: str) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "echo"),
            ("content-type", "application/grpc"), ("te", "trailers")]


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def read_chunks(sock: socket.socket, seconds: float):
    """What ``sock`` receives, chunk by chunk, for ``seconds`` or until the connection closes."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            return
        yield data


def pump(sock: socket.socket, conn: h2.connection.H2Connection, seconds: float) -> list:
    """Read for ``seconds`` (or until the connection closes), answering nothing but what h2 must."""
    events = []
    for data in read_chunks(sock, seconds):
        events += conn.receive_data(data)
        sock.sendall(conn.data_to_send())
    return events


def test_caller_that_stops_reading_bounds_what_the_proxy_buffers(proxy):
    """8 MiB streamed to a caller that grants only the default 64 KiB window: the proxy holds at most
    its own stream window (1 MiB) and the rest waits in the server, until the caller reads again."""
    loop, address = proxy
    sock = connect(address)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, grpc_request(method("ServerStream")))
    conn.send_data(stream_id, grpc_message(b"8:1048576"), end_stream=True)
    sock.sendall(conn.data_to_send())

    events = pump(sock, conn, 1.5)
    received = sum(len(event.data) for event in events if isinstance(event, h2.events.DataReceived))
    assert 0 < received <= 65535
    relay = loop.listeners[0].grpc
    buffered = sum(
        len(item[1]) for server in relay.connections for stream in server.streams.values() for item in stream.pending or ()
        if item[0]
    )
    assert buffered <= http2.STREAM_WINDOW

    total = received
    trailers = None
    conn.acknowledge_received_data(received, stream_id)
    conn.increment_flow_control_window(32 * 1024 * 1024)
    conn.increment_flow_control_window(32 * 1024 * 1024, stream_id)
    sock.sendall(conn.data_to_send())
    deadline = time.monotonic() + 20
    while trailers is None and time.monotonic() < deadline:
        for event in pump(sock, conn, 0.3):
            if isinstance(event, h2.events.DataReceived):
                total += len(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = dict(event.headers)
        sock.sendall(conn.data_to_send())
    sock.close()
    assert trailers is not None and trailers[b"grpc-status"] == b"0"
    assert total == 8 * (5 + 1048576)


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return FRAME_HEAD.pack(len(payload) >> 16, len(payload) & 0xFFFF, frame_type, flags, stream_id) + payload


@pytest.mark.parametrize("malformed, error", [
    pytest.param(frame(http2.HEADERS, http2.FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"), http2.COMPRESSION_ERROR,
                 id="header index far beyond any table"),
    pytest.param(frame(http2.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"), http2.FRAME_SIZE_ERROR, id="short WINDOW_UPDATE"),
    pytest.param(frame(http2.RST_STREAM, 0, 1, b"\x00" * 5), http2.FRAME_SIZE_ERROR, id="long RST_STREAM"),
    pytest.param(frame(http2.PING, 0, 0, b"1234"), http2.FRAME_SIZE_ERROR, id="short PING"),
    pytest.param(frame(http2.SETTINGS, 0, 0, b"\x00\x04\x00\x00"), http2.FRAME_SIZE_ERROR, id="SETTINGS not in sixes"),
    pytest.param(frame(http2.GOAWAY, 0, 0, b"\x00" * 4), http2.FRAME_SIZE_ERROR, id="short GOAWAY"),
    pytest.param(frame(http2.DATA, http2.FLAG_PADDED, 1, b"\x05abc"), http2.PROTOCOL_ERROR, id="DATA padding too long"),
    pytest.param(frame(http2.HEADERS, http2.FLAG_PADDED | http2.FLAG_END_HEADERS, 1, b"\x09ab"), http2.PROTOCOL_ERROR,
                 id="HEADERS padding too long"),
])  # fmt: skip
def test_malformed_frame_ends_only_that_connection(proxy, malformed, error):
    _loop, address = proxy
    sock = connect(address)
    sock.sendall(http2.PREFACE + frame(http2.SETTINGS, 0, 0, b"") + malformed)
    received = b"".join(read_chunks(sock, 5))
    sock.close()
    frames = []
    while len(received) >= 9:
        high, low, frame_type, _flags, _stream = FRAME_HEAD.unpack_from(received)
        length = high << 16 | low
        frames.append((frame_type, received[9:9 + length]))
        received = received[9 + length:]
    goaways = [payload for frame_type, payload in frames if frame_type == http2.GOAWAY]
    assert goaways and struct.unpack(">I", goaways[0][4:8])[0] == error
    with grpc.insecure_channel(address) as channel:
        assert channel.unary_unary(method("Unary"))(b"still serving", timeout=5) == b"still serving"


def test_request_without_path_is_refused_as_a_stream_error(proxy):
    _loop, address = proxy
    sock = connect(address)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "echo")], end_stream=True)
    sock.sendall(conn.data_to_send())
    resets = [event for event in pump(sock, conn, 1.0) if isinstance(event, h2.events.StreamReset)]
    sock.close()
    assert [event.error_code for event in resets] == [http2.PROTOCOL_ERROR]


class ResettingServer:
    """An HTTP/2 server (the `h2` library on a thread) that answers every request with RST_STREAM(code)."""

    def __init__(self, error_code: int):
        self.error_code = error_code
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.resets = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    conn.reset_stream(event.stream_id, self.error_code)
                    self.resets += 1
            sock.sendall(conn.data_to_send())

    def stop(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("error_code, status", [(http2.CANCEL, grpc.StatusCode.CANCELLED),
                                                (http2.INTERNAL_ERROR, grpc.StatusCode.INTERNAL)])
def test_server_reset_reaches_the_caller_as_the_same_reset(error_code, status):
    server = ResettingServer(error_code)
    loop = ProxyLoop()
    try:
        address, spans = loop.inbound("resetting", server.address)
        with grpc.insecure_channel(address) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary(method("Unary"))(b"x", timeout=5)
    finally:
        loop.stop()
        server.stop()
    assert raised.value.code() == status
    assert server.resets == 1
