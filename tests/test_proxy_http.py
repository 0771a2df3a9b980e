"""HTTP/1.1 through a real hop: client -> outbound sidecar ("client") -> inbound sidecar ("web") -> app.

Every request crosses both proxies, so each framing rule is checked on both the server and the client
side of the relay. Requests are written byte by byte (``RawClient``) to see exactly what came back.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from spans.conventions import PROXY_ERROR_HEADER
from tests.support.mesh import Mesh, RawClient
from tests.support.processes import REPO_ROOT, free_port, tracemesh_command, wait_for_port

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("http"))
    app = mesh.app("web")
    web = mesh.sidecar("web", app=app, outbound=False)
    endpoints = mesh.endpoints({"web": [f"127.0.0.1:{web.inbound}"]})
    route_port = free_port()
    client = mesh.sidecar("client", endpoints=endpoints, extra=("--route", f"127.0.0.1:{route_port}=web"))
    wait_for_port(route_port)
    limited = mesh.sidecar("limited", app=app, outbound=False, extra=("--max-body", "64k"))
    yield {"app": app, "web": web, "client": client, "route": route_port, "limited": limited}
    mesh.close()


@pytest.fixture()
def conn(mesh):
    client = RawClient(mesh["client"].outbound)
    yield client
    client.close()


def test_keep_alive_serves_many_requests_on_one_connection(conn):
    for _ in range(5):
        response = conn.request("GET", "/stats", {"Host": "web"})
        assert response.status == 200
        assert json.loads(response.body)["service"] == "web"
        assert response.header("connection") is None  # keep-alive is the HTTP/1.1 default
    assert not conn.closed_by_peer(wait=0.2)


def test_connection_close_is_honoured(conn):
    response = conn.request("GET", "/stats", {"Host": "web", "Connection": "close"})
    assert response.status == 200
    assert response.header("connection") == "close"
    assert conn.closed_by_peer()


def test_chunked_request_and_response_roundtrip(conn):
    pieces = [b"alpha-", b"x" * 5000, b"-omega"]
    conn.send(b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in pieces:
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    response = conn.read_response()
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"".join(pieces)


def test_large_upload_and_download_stream_through_without_buffering(mesh, conn):
    """40 MiB echoed through both proxies while it is still being sent: memory stays bounded."""
    rss_before = [mesh[name].rss_mb() for name in ("client", "web")]
    block = os.urandom(1 << 20)
    blocks = 40
    expected = hashlib.sha256(block * blocks).hexdigest()

    def upload():
        conn.send(b"PUT /echo HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n" % (len(block) * blocks))
        for _ in range(blocks):
            conn.send(block)

    sender = threading.Thread(target=upload)
    sender.start()
    response = conn.read_response()
    sender.join(timeout=30)
    assert response.status == 200
    assert hashlib.sha256(response.body).hexdigest() == expected
    rss_after = [mesh[name].rss_mb() for name in ("client", "web")]
    for before, after in zip(rss_before, rss_after):
        assert after - before < 24, f"proxy RSS grew from {before:.0f} to {after:.0f} MB relaying 40 MiB"


def test_response_chunks_arrive_as_the_app_writes_them(conn):
    conn.send(b"GET /stream?n=4&size=10&delay=0.4 HTTP/1.1\r\nHost: web\r\n\r\n")
    started = time.monotonic()
    while b"\r\n\r\n" not in conn.buffer or len(conn.buffer.split(b"\r\n\r\n", 1)[1]) < 10:
        conn._fill()
    first_chunk_after = time.monotonic() - started
    response = conn.read_response()
    total = time.monotonic() - started
    assert response.body.startswith(b"0" * 10)
    assert first_chunk_after < 0.8 < 1.2 <= total


def test_expect_100_continue_is_relayed_before_the_body(conn):
    body = b"z" * 3000
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    interim = conn.read_response()
    assert interim.status == 100
    conn.send(body)
    response = conn.read_response()
    assert response.status == 200 and response.body == body


def test_upgrade_is_refused_and_served_as_plain_http(conn):
    response = conn.request(
        "GET", "/headers", {"Host": "web", "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    )  # fmt: skip
    assert response.status == 200  # never 101: the app never saw the Upgrade
    seen = {name.lower() for name, _ in json.loads(response.body)["headers"]}
    assert "upgrade" not in seen and "connection" not in seen
    assert conn.request("GET", "/stats", {"Host": "web"}).status == 200  # still plain HTTP/1.1


def test_requests_pipelined_behind_an_upgrade_request_are_served(conn):
    conn.send(
        b"GET /status/201 HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /status/202 HTTP/1.1\r\nHost: web\r\n\r\n"
    )
    assert [conn.read_response().status for _ in range(2)] == [201, 202]


def test_connect_tunnels_are_refused_with_501(conn):
    response = conn.request("CONNECT", "web:443", {"Host": "web:443"})
    assert response.status == 501
    assert response.header(PROXY_ERROR_HEADER) == "upgrade_not_supported"


def test_absolute_uri_form_names_the_destination(conn):
    response = conn.request("GET", "http://web/headers?x=1", {"Host": "ignored-when-absolute"})
    assert response.status == 200
    received = json.loads(response.body)
    assert received["path"] == "/headers?x=1"  # origin-form upstream
    assert dict((k.lower(), v) for k, v in received["headers"])["host"] == "web"


def test_host_with_port_and_mixed_case_resolve(conn):
    assert conn.request("GET", "/stats", {"Host": "WEB:8080"}).status == 200


def test_route_listener_needs_no_host(mesh):
    client = RawClient(mesh["route"])
    try:
        assert client.request("GET", "/stats", {"Host": "anything"}).status == 200
    finally:
        client.close()


def test_unknown_destination_is_answered_at_once(conn):
    started = time.monotonic()
    response = conn.request("GET", "/", {"Host": "nowhere"})
    assert response.status == 502
    assert response.header(PROXY_ERROR_HEADER) == "unknown_destination"
    assert time.monotonic() - started < 0.5
    assert conn.request("GET", "/stats", {"Host": "web"}).status == 200  # connection still usable


def test_head_204_and_304_carry_no_body(conn):
    head = conn.request("HEAD", "/stats", {"Host": "web"})
    assert head.status == 200 and int(head.header("content-length")) > 0
    no_content = conn.request("GET", "/status/204", {"Host": "web"})
    assert no_content.status == 204
    not_modified = conn.request("GET", "/status/304", {"Host": "web"})
    assert not_modified.status == 304
    after = conn.request("GET", "/stats", {"Host": "web"})  # framing intact: no stray body bytes
    assert after.status == 200 and json.loads(after.body)["service"] == "web"
    assert conn.buffer == b""


def test_hop_by_hop_headers_do_not_cross_the_proxy(conn):
    response = conn.request(
        "GET", "/headers", {"Host": "web", "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
                            "Proxy-Connection": "keep-alive", "TE": "trailers", "X-End-To-End": "kept"}
    )  # fmt: skip
    seen = {name.lower(): value for name, value in json.loads(response.body)["headers"]}
    for hop in ("x-hop", "keep-alive", "proxy-connection", "te"):
        assert hop not in seen
    assert seen["x-end-to-end"] == "kept"
    assert seen["traceparent"].startswith("00-")


def test_pipelined_requests_are_answered_in_order(conn):
    conn.send(b"".join(b"GET /status/%d HTTP/1.1\r\nHost: web\r\n\r\n" % code for code in (201, 202, 203)))
    assert [conn.read_response().status for _ in range(3)] == [201, 202, 203]


def test_malformed_request_gets_400_and_the_proxy_lives_on(mesh, conn):
    conn.send(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    response = conn.read_response()
    assert response.status == 400
    assert response.header(PROXY_ERROR_HEADER).startswith("malformed_request")
    assert conn.closed_by_peer()
    again = RawClient(mesh["client"].outbound)
    try:
        assert again.request("GET", "/stats", {"Host": "web"}).status == 200
    finally:
        again.close()


def test_connection_naming_too_many_fields_gets_400(mesh, conn):
    named = ", ".join(f"x-{i}" for i in range(40))
    conn.send(f"GET /stats HTTP/1.1\r\nHost: web\r\nConnection: {named}\r\n\r\n".encode())
    response = conn.read_response()
    assert response.status == 400
    assert response.header(PROXY_ERROR_HEADER) == "malformed_request: too many fields named in connection"
    assert conn.closed_by_peer()


def test_http10_client_gets_a_close_delimited_body(mesh):
    client = RawClient(mesh["client"].outbound)
    try:
        client.send(b"GET /stream?n=3&size=4 HTTP/1.0\r\nHost: web\r\n\r\n")
        response = client.read_response()  # no length, not chunked: read until close
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert response.body == b"000011112222"
    finally:
        client.close()


def test_body_over_the_limit_is_refused_with_413(mesh):
    client = RawClient(mesh["limited"].inbound)
    try:
        response = client.request("POST", "/echo", {"Host": "web"}, b"x" * (65 * 1024))
        assert response.status == 413
        assert response.header(PROXY_ERROR_HEADER) == "request_too_large"
    finally:
        client.close()


def test_head_over_the_limit_is_refused_with_431(mesh):
    client = RawClient(mesh["limited"].inbound)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: web\r\n")
        try:
            for i in range(100):
                client.send(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000))
        except BrokenPipeError:
            pass  # the proxy may have half-closed already; its answer is waiting
        response = client.read_response()
        assert response.status == 431
    finally:
        client.close()


def test_sigterm_lets_a_request_in_flight_finish(tmp_path, mesh):
    drain_mesh = Mesh(tmp_path)
    try:
        sidecar = drain_mesh.sidecar("draining", app=mesh["app"], outbound=False)
        client = RawClient(sidecar.inbound)
        client.send(b"GET /stream?n=4&size=10&delay=0.3 HTTP/1.1\r\nHost: web\r\n\r\n")
        while b"\r\n\r\n" not in client.buffer:
            client._fill()
        sidecar.process.popen.send_signal(signal.SIGTERM)
        response = client.read_response()
        assert response.body == b"0" * 10 + b"1" * 10 + b"2" * 10 + b"3" * 10
        assert sidecar.process.popen.wait(timeout=10) == 0
        with pytest.raises(OSError):
            RawClient(sidecar.inbound, timeout=1)
        client.close()
    finally:
        drain_mesh.close()


def test_cli_explains_itself_and_refuses_bad_flags():
    help_text = subprocess.run(tracemesh_command("proxy", "--help"), capture_output=True, text=True, cwd=REPO_ROOT)
    assert help_text.returncode == 0 and "--route ADDR=SERVICE" in help_text.stdout
    missing_app = subprocess.run(
        tracemesh_command("proxy", "--service", "x", "--inbound", "127.0.0.1:1"), capture_output=True, text=True,
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert missing_app.returncode == 2 and "--inbound needs --app" in missing_app.stderr
    bad_route = subprocess.run(
        tracemesh_command("proxy", "--service", "x", "--route", "nonsense"), capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert bad_route.returncode == 2 and "ADDR=SERVICE" in bad_route.stderr
