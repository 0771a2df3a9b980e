"""`tracemesh tap` and the proxy's ``GET /tap``: requests flowing through real sidecars, watched live.

The end-to-end tests send rounds of mixed requests through a client sidecar until the tap command
has printed its ``--max`` lines, then check that every line is a request the filter asked for. The
in-process tests drive the admin server on a real loopback socket to see what no process shows:
the recorder carries no tap once the watcher is gone, a slow reader's tap drops and counts, and
stopping the proxy ends the stream.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client import CollectorRegistry

from mesh.admin import AdminServer
from mesh.export import SpanRecorder
from mesh.tap import TAP_CAPACITY, TapFilter, TapHub, parse_filter, request_json
from mesh.tap_cli import request_line
from spans import conventions as conv
from tests.support.mesh import Mesh
from tests.support.processes import REPO_ROOT, free_port, tracemesh_command

pytestmark = pytest.mark.timeout(60)

ROUND = ("/hello", "/status/503", "/status/200", "/other/500", "/status/500", "/status/404")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("tap"))
    app = mesh.app("web")
    web = mesh.sidecar("web", app=app, outbound=False)
    client = mesh.sidecar("client", endpoints=mesh.endpoints({"web": [f"127.0.0.1:{web.inbound}"]}))
    yield {"web": web, "client": client}
    mesh.close()


def get(port: int, path: str, host: str = "web") -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def tap_while_traffic_flows(sidecar, *args: str, port: int | None = None) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``tracemesh tap`` on ``sidecar`` (which must end by itself, e.g. with ``--max``) while rounds
    of ROUND go through the client sidecar; its result and how many rounds were sent."""
    tap = subprocess.Popen(
        tracemesh_command("tap", "--proxy-admin", f"127.0.0.1:{sidecar.admin}", *args),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    rounds = 0
    deadline = time.monotonic() + 20
    try:
        while tap.poll() is None and time.monotonic() < deadline:
            for path in ROUND:
                get(port, path)
            rounds += 1
            time.sleep(0.05)
        stdout, stderr = tap.communicate(timeout=5)
    finally:
        tap.kill()
    return subprocess.CompletedProcess(tap.args, tap.returncode, stdout, stderr), rounds


def test_tap_json_lines_narrowed_by_path_and_status_class(mesh):
    result, rounds = tap_while_traffic_flows(
        mesh["client"], "--json", "--path", "/status/", "--status", "5xx", "--max", "4", port=mesh["client"].outbound)
    assert (result.returncode, result.stderr) == (0, ""), result
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4 and rounds >= 2
    for line in lines:
        assert line["path"] in ("/status/503", "/status/500"), line
        assert (line["direction"], line["service"], line["method"], line["status"]) == (
            "outbound", "web", "GET", int(line["path"][-3:]))
        assert line["endpoint"] == f"127.0.0.1:{mesh['web'].inbound}"
        assert line["durationMs"] > 0 and len(line["traceId"]) == 32 and line["time"].endswith("Z")


def test_tap_exact_status_on_the_inbound_side_in_text(mesh):
    result, _ = tap_while_traffic_flows(
        mesh["web"], "--service", "web", "--status", "503", "--max", "2", port=mesh["client"].outbound)
    assert (result.returncode, result.stderr) == (0, ""), result
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        fields = line.split("  ")
        assert fields[1:5] == ["inbound", "web", "GET /status/503", "503"], line
        assert fields[5].endswith("ms") and fields[-1].startswith("trace=")


def test_a_tap_for_another_service_sees_nothing_of_this_traffic(mesh):
    tap = subprocess.Popen(
        tracemesh_command("tap", "--proxy-admin", f"127.0.0.1:{mesh['client'].admin}", "--service", "payments", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    try:
        time.sleep(1.5)  # the command is connected well before this
        for _ in range(5):
            assert [get(mesh["client"].outbound, path) for path in ROUND][:2] == [404, 503]
    finally:
        tap.terminate()
        stdout, _ = tap.communicate(timeout=5)
    assert stdout == ""
    # the tap is gone: requests are still served, and a new tap sees them
    result, _ = tap_while_traffic_flows(mesh["client"], "--json", "--max", "1", port=mesh["client"].outbound)
    assert result.returncode == 0 and orjson.loads(result.stdout)["service"] == "web"


def test_bad_tap_filters_are_a_400_naming_the_problem(mesh):
    admin = f"http://127.0.0.1:{mesh['client'].admin}"
    for query, message in (("status=5x", "status: '5x' is not"), ("colour=red", "unknown parameter 'colour'")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{admin}/tap?{query}", timeout=5)
        assert refused.value.code == 400 and message in refused.value.read().decode()


def test_an_unreachable_proxy_is_one_line_and_exit_1():
    result = subprocess.run(tracemesh_command("tap", "--proxy-admin", f"127.0.0.1:{free_port()}"),
                            capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("tracemesh: cannot reach the proxy's admin port at 127.0.0.1:")
    assert result.stderr.count("\n") == 1


def test_bad_status_option_is_a_usage_error():
    result = subprocess.run(tracemesh_command("tap", "--proxy-admin", "127.0.0.1:1", "--status", "abc"),
                            capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert result.returncode == 2 and "is not an HTTP status (503) or class (5xx)" in result.stderr


# ---- in process: the tap's life on the recorder ------------------------------------------------


def span(path: str, status: int, peer: str = "web") -> tuple:
    attributes = ((conv.DIRECTION, "outbound"), (conv.PEER_SERVICE, peer), (conv.URL_PATH, path), (conv.HTTP_STATUS, status))
    return ("ab" * 16, "cd" * 8, "", "GET", 3, time.time_ns(), 2_000_000, 0, "", attributes)


def test_parse_filter():
    assert parse_filter("") == TapFilter()
    assert parse_filter("service=Web&path=/api&status=5XX") == TapFilter("web", "/api", 0, 5)
    assert parse_filter("status=404") == TapFilter(status=404)
    for query in ("status=600", "status=5x", "service=a&service=b", "limit=3"):
        with pytest.raises(ValueError):
            parse_filter(query)


def test_a_slow_reader_makes_its_tap_drop_and_count_never_block():
    recorder = SpanRecorder(capacity=0)
    hub = TapHub(recorder, "client")
    tap = hub.open(parse_filter("status=5xx"), capacity=2)
    for status in (500, 200, 503, 502, 504):
        recorder.record(span("/x", status))
    assert (tap.dropped, recorder.dropped) == (2, 5)
    assert [record[9][3][1] for record in asyncio.run(tap.take())] == [500, 503]
    hub.remove(tap)
    assert recorder.taps == ()


def test_the_admin_stream_installs_its_tap_only_while_a_client_reads():
    async def scenario():
        recorder = SpanRecorder()
        admin = AdminServer(CollectorRegistry(), TapHub(recorder, "client"))
        await admin.start("127.0.0.1", 0)
        assert recorder.taps == ()
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
        writer.write(b"GET /tap?path=/api HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
        assert len(recorder.taps) == 1
        for path in ("/api/a", "/other", "/api/b"):
            recorder.record(span(path, 200))
        size = int(await reader.readuntil(b"\r\n"), 16)
        chunk = (await reader.readexactly(size + 2))[:-2]
        assert [orjson.loads(line)["path"] for line in chunk.splitlines()] == ["/api/a", "/api/b"]
        # more than a tap holds arrive before its reader runs: the rest are dropped, and the stream says so
        for _ in range(TAP_CAPACITY + 5):
            recorder.record(span("/api/burst", 200))
        size = int(await reader.readuntil(b"\r\n"), 16)
        *requests, last = (await reader.readexactly(size + 2))[:-2].splitlines()
        assert (len(requests), orjson.loads(last)) == (TAP_CAPACITY, {"dropped": 5})
        writer.close()  # the watcher leaves: its tap is removed at once
        for _ in range(100):
            if not recorder.taps:
                break
            await asyncio.sleep(0.01)
        assert recorder.taps == ()
        # a watcher still there when the proxy stops gets the end of the stream
        reader, writer = await asyncio.open_connection("127.0.0.1", admin.port)
        writer.write(b"GET /tap HTTP/1.1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await admin.stop()
        assert await asyncio.wait_for(reader.read(), 5) == b"0\r\n\r\n"
        assert recorder.taps == ()
        writer.close()

    asyncio.run(scenario())


def test_a_grpc_request_shows_its_method_path_and_grpc_status():
    attributes = ((conv.RPC_SYSTEM, "grpc"), (conv.RPC_SERVICE, "shop.Cart"), (conv.RPC_METHOD, "Add"),
                  (conv.RPC_GRPC_STATUS, 14), (conv.DIRECTION, "outbound"), (conv.PEER_SERVICE, "cart"))
    record = ("ab" * 16, "cd" * 8, "", "shop.Cart/Add", 3, time.time_ns(), 1_500_000, 2, "unavailable", attributes)
    line = request_json(record, "client")
    assert (line["service"], line["method"], line["path"], line["status"], line["grpcStatus"]) == (
        "cart", "POST", "/shop.Cart/Add", None, 14)
    assert request_line(line).split("  ")[1:5] == ["outbound", "cart", "POST /shop.Cart/Add", "grpc=14"]
    recorder = SpanRecorder()
    tap = TapHub(recorder, "client").open(parse_filter("service=cart&path=/shop.Cart/"))
    recorder.record(record)
    assert tap.dropped == 0 and len(asyncio.run(tap.take())) == 1
