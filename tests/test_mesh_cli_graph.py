"""`tracemesh stat`, `edges` and `top` against a real collector fed known proxy spans over OTLP/HTTP.

The spans are what proxies record (outbound CLIENT spans naming ``peer.service``), encoded by the
proxies' own encoder and posted to the collector's OTLP/HTTP receiver, so the numbers the commands
print went through ingest, the service graph and its API. Most calls run the entry point in this
process (a child pays a second of imports each); one of each kind runs as a user would.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import time
from contextlib import redirect_stderr, redirect_stdout

import orjson
import pytest

from mesh.export import proxy_resource
from spans import conventions as conv
from spans.model import KIND_CLIENT, STATUS_ERROR, STATUS_UNSET
from spans.otlp_encode import encode_export_request
from tests.support.collector import collector_for
from tests.support.processes import REPO_ROOT, free_port, tracemesh_command
from tracemesh.cli import main

pytestmark = pytest.mark.timeout(120)

MS = 1_000_000
WINDOW_S = 10  # the collector's graph window
CHECKOUT_REQUESTS, CHECKOUT_ERRORS = 100, 5
FRONTEND_PAYMENTS, CHECKOUT_PAYMENTS, RETRIES_EACH = 20, 10, 2


def proxy_span(peer: str, duration_ms: float, *, route: str, method: str = "GET", status: int = 200, retries: int = 0):
    """An outbound span as a proxy records it, ending now."""
    end_ns = time.time_ns()
    duration_ns = int(duration_ms * MS)
    attributes = (
        (conv.DIRECTION, "outbound"),
        (conv.PEER_SERVICE, peer),
        (conv.HTTP_METHOD, method),
        ("http.route", route),
        (conv.HTTP_STATUS, status),
        (conv.RETRIES, retries),
    )
    return (os.urandom(16).hex(), os.urandom(8).hex(), "", method, KIND_CLIENT, end_ns - duration_ns, duration_ns,
            STATUS_ERROR if status >= 500 else STATUS_UNSET, "", attributes)


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    """frontend → checkout: 100 requests of 1..100 ms, 5 of them 503 (GET /cart 60, POST /pay 40);
    frontend → payments: 20 requests of 5 ms with 2 retries each; checkout → payments: 10 of 5 ms."""
    collector = collector_for(tmp_path_factory.mktemp("graph-cli")).start()
    # The live graph answers from the first whole 10 s window after start-up (earlier ones come
    # from the stored history once written): let the requests end in that one.
    time.sleep(WINDOW_S - time.time() % WINDOW_S + 0.1)
    checkout = [
        proxy_span("checkout", i, route="/cart" if i <= 60 else "/pay", method="GET" if i <= 60 else "POST",
                   status=503 if i % 20 == 0 else 200)
        for i in range(1, CHECKOUT_REQUESTS + 1)
    ]
    payments = [proxy_span("payments", 5, route="/charge", retries=RETRIES_EACH) for _ in range(FRONTEND_PAYMENTS)]
    from_checkout = [proxy_span("payments", 5, route="/charge") for _ in range(CHECKOUT_PAYMENTS)]
    for service, records in (("frontend", checkout + payments), ("checkout", from_checkout)):
        status, _, body = collector.post(
            collector.otlp_http_url, encode_export_request(proxy_resource(service), "tests", records), "application/x-protobuf"
        )
        assert status == 200, body
    wait_for_requests(collector, CHECKOUT_REQUESTS + FRONTEND_PAYMENTS + CHECKOUT_PAYMENTS)
    yield collector
    collector.stop()


def wait_for_requests(collector, total: int, timeout: float = 15.0) -> None:
    """The graph counts spans after the receiver acknowledged them; wait until it counted them all."""
    deadline = time.monotonic() + timeout
    while sum(edge["requests"] for edge in collector.get_json("/api/v1/graph")["edges"]) < total:
        assert time.monotonic() < deadline, collector.get_json("/api/v1/graph")
        time.sleep(0.1)


def tracemesh(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


def as_a_user(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(tracemesh_command(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def json_of(collector, *args: str) -> dict:
    code, stdout, stderr = tracemesh(*args, "--collector-url", collector.api_url, "--json")
    assert (code, stderr) == (0, ""), (code, stdout, stderr)
    return orjson.loads(stdout)


def table_rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_stat_shows_each_services_inbound_success_rate_rps_and_percentiles(collector):
    body = json_of(collector, "stat")
    services = {row["service"]: row for row in body["services"]}
    assert set(services) == {"frontend", "checkout", "payments"}
    checkout = services["checkout"]
    assert (checkout["requests"], checkout["errors"]) == (CHECKOUT_REQUESTS, CHECKOUT_ERRORS)
    assert checkout["successRate"] == pytest.approx(0.95)
    # a 1 m window widened to whole 10 s windows: the rate is over 60 to 71 seconds
    assert CHECKOUT_REQUESTS / 71 <= checkout["rps"] <= CHECKOUT_REQUESTS / 60
    assert checkout["p50"] == pytest.approx(50, rel=0.03)
    assert checkout["p95"] == pytest.approx(95, rel=0.03)
    assert checkout["p99"] == pytest.approx(99, rel=0.03)
    payments = services["payments"]
    assert (payments["requests"], payments["successRate"]) == (FRONTEND_PAYMENTS + CHECKOUT_PAYMENTS, 1.0)
    assert payments["p50"] == pytest.approx(5, rel=0.03)
    # frontend is called by nobody: listed, with no numbers
    assert (services["frontend"]["requests"], services["frontend"]["successRate"], services["frontend"]["p99"]) == (0, None, None)


def test_stat_table_for_one_service(collector):
    result = as_a_user("stat", "checkout", "--collector-url", collector.api_url)
    assert (result.returncode, result.stderr) == (0, ""), result
    header, *rows = table_rows(result.stdout)
    assert header == ["SERVICE", "KIND", "SUCCESS", "RPS", "P50", "P95", "P99", "REQUESTS"]
    [row] = rows
    assert row[:3] == ["checkout", "service", "95.00%"] and row[-1] == "100"
    assert re.fullmatch(r"1\.[4-7]\d", row[3]) and all(cell.endswith("ms") for cell in row[4:7])


def test_stat_of_an_unknown_service_says_there_is_no_traffic(collector):
    code, stdout, stderr = tracemesh("stat", "nobody", "--collector-url", collector.api_url)
    assert (code, stderr) == (0, "") and stdout.startswith("no traffic to nobody between ")


def test_edges_per_caller_and_callee_with_retries(collector):
    edges = {(row["source"], row["target"]): row for row in json_of(collector, "edges")["edges"]}
    assert set(edges) == {("frontend", "checkout"), ("frontend", "payments"), ("checkout", "payments")}
    assert (edges[("frontend", "payments")]["requests"], edges[("frontend", "payments")]["retries"]) == (
        FRONTEND_PAYMENTS, FRONTEND_PAYMENTS * RETRIES_EACH)
    assert edges[("checkout", "payments")]["retries"] == 0
    assert edges[("frontend", "checkout")]["successRate"] == pytest.approx(0.95)
    only = json_of(collector, "edges", "--to", "payments", "--from", "checkout")["edges"]
    assert [(row["source"], row["target"], row["requests"]) for row in only] == [("checkout", "payments", CHECKOUT_PAYMENTS)]


def test_edges_table(collector):
    code, stdout, stderr = tracemesh("edges", "--from", "frontend", "--collector-url", collector.api_url)
    assert (code, stderr) == (0, "")
    header, *rows = table_rows(stdout)
    assert header == ["FROM", "TO", "TYPE", "SUCCESS", "RPS", "P50", "P95", "P99", "REQUESTS", "RETRIES"]
    assert [(row[1], row[3], row[-2], row[-1]) for row in rows] == [
        ("checkout", "95.00%", "100", "0"), ("payments", "100.00%", "20", "40")]


def test_top_prints_busiest_routes_as_successive_tables_and_stops_after_count(collector):
    started = time.monotonic()
    result = as_a_user("top", "--window", "1m", "--interval", "0.5s", "--count", "2", "--collector-url", collector.api_url)
    assert (result.returncode, result.stderr) == (0, ""), result
    assert time.monotonic() - started < 20
    tables = result.stdout.split("\n\n")
    assert len(tables) == 2 and "\x1b[" not in result.stdout  # not a terminal: no screen control
    heading, header, *rows = tables[0].strip().splitlines()
    assert heading.startswith("busiest routes ") and header.split()[:3] == ["FROM", "TO", "ROUTE"]
    # busiest first: GET /cart (60), POST /pay (40), GET /charge from frontend (20), from checkout (10)
    assert [(row.split()[0], row.split()[1], " ".join(row.split()[2:4]), row.split()[-1]) for row in rows] == [
        ("frontend", "checkout", "GET /cart", "60"),
        ("frontend", "checkout", "POST /pay", "40"),
        ("frontend", "payments", "GET /charge", "20"),
        ("checkout", "payments", "GET /charge", "10"),
    ]


def test_top_json_lines_and_row_limit(collector):
    code, stdout, stderr = tracemesh(
        "top", "--json", "--rows", "1", "--count", "2", "--interval", "10ms", "--collector-url", collector.api_url)
    assert (code, stderr) == (0, "")
    refreshes = [orjson.loads(line) for line in stdout.splitlines()]
    assert len(refreshes) == 2
    assert [(route["route"], route["requests"], route["successRate"]) for route in refreshes[0]["routes"]] == [
        ("GET /cart", 60, pytest.approx(57 / 60))]


@pytest.mark.parametrize("command", ["stat", "edges", "top"])
def test_an_unreachable_collector_is_one_line_and_exit_1(command):
    result = as_a_user(command, "--collector-url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("tracemesh: cannot reach the collector at http://127.0.0.1:")
    assert result.stderr.count("\n") == 1, result.stderr


def test_a_bad_window_is_a_usage_error():
    result = as_a_user("stat", "--window", "ten seconds")
    assert result.returncode == 2 and "is not a duration like 10s" in result.stderr


def test_top_on_a_terminal_redraws_in_place_until_ctrl_c(collector):
    leader, follower = pty.openpty()
    top = subprocess.Popen(
        tracemesh_command("top", "--interval", "0.2s", "--collector-url", collector.api_url),
        stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )
    os.close(follower)
    screen = b""
    try:
        deadline = time.monotonic() + 20
        while screen.count(b"\x1b[H\x1b[2J") < 2 and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                screen += os.read(leader, 65536)
        top.send_signal(signal.SIGINT)
        assert top.wait(timeout=10) == 0
    finally:
        top.kill()
        os.close(leader)
    assert top.stderr.read() == b""
    assert screen.count(b"\x1b[H\x1b[2J") >= 2 and b"GET /cart" in screen
