"""Failing the right way, with real processes: a dead collector, endpoints that answer 503 or hang, and
more load than a destination admits. Endpoints are apps on loopback ports named in the endpoints file."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spans.conventions import PROXY_ERROR_HEADER
from tests.support.collector import collector_for
from tests.support.mesh import Mesh, RawClient, wait_until
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    mesh = Mesh(tmp_path_factory.mktemp("faults"))
    yield mesh
    mesh.close()


@pytest.fixture(scope="module")
def apps(mesh):
    return {"good": mesh.app("good"), "bad": mesh.app("bad", mode="fail:503"), "hang": mesh.app("hang", mode="hang")}


@pytest.fixture(scope="module")
def client(mesh, apps):
    endpoints = mesh.endpoints(
        {
            "flaky": [apps["bad"].address, apps["good"].address],
            "broken": [apps["bad"].address],
            "slow": [apps["hang"].address, apps["good"].address],
            "stuck": [apps["hang"].address],
            "half-dead": [f"127.0.0.1:{free_port()}", apps["good"].address],  # nothing listens on the first
        }
    )
    return mesh.sidecar(
        "client", endpoints=endpoints,
        extra=("--timeout", "slow=300ms", "--timeout", "stuck=5s", "--max-in-flight", "4", "--max-queue", "4",
               "--max-queue-wait", "200ms"),
    )  # fmt: skip


def get(port: int, host: str, path: str = "/hop", method: str = "GET"):
    conn = RawClient(port)
    try:
        return conn.request(method, path, {"Host": host}, b"" if method == "POST" else None)
    finally:
        conn.close()


def test_collector_down_does_not_touch_traffic_and_drops_are_counted(mesh, apps, tmp_path):
    collector = collector_for(tmp_path).start()
    sidecar = mesh.sidecar("web", app=apps["good"], outbound=False, collector=collector.grpc_address,
                           extra=("--span-buffer", "64"))  # fmt: skip
    conn = RawClient(sidecar.inbound)
    try:
        for _ in range(10):
            assert conn.request("GET", "/stats", {"Host": "web"}).status == 200
        assert wait_until(lambda: sidecar.metric("tracemesh_spans_exported_total") >= 10, timeout=20)
        collector.kill9()
        started = time.monotonic()
        statuses = [conn.request("GET", "/stats", {"Host": "web"}).status for _ in range(300)]
        elapsed = time.monotonic() - started
    finally:
        conn.close()
    assert statuses == [200] * 300
    assert elapsed < 20  # no request waited on the exporter
    assert sidecar.metric("tracemesh_spans_dropped_total") > 0  # the 64-span buffer overflowed
    assert wait_until(lambda: sidecar.metric("tracemesh_spans_failed_total") > 0, timeout=20)
    assert sidecar.metric("tracemesh_span_buffer_spans") <= 64


def test_503s_are_retried_on_another_endpoint_and_the_failing_one_is_ejected(client, apps):
    bad_before = apps["bad"].calls()
    statuses = []
    # Rounds of concurrent requests spread over both endpoints (p2c by load) until the bad one has
    # failed five times in a row; how many requests that takes depends on the load estimates, and
    # on a busy machine one round may not pick it five times. At most five rounds.
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            statuses += pool.map(lambda _: get(client.outbound, "flaky").status, range(40))
            if client.metric("tracemesh_endpoint_ejections_total", destination="flaky") >= 1:
                break
    assert statuses == [200] * len(statuses)
    retries = client.metric("tracemesh_retries_total", destination="flaky")
    bad_calls = apps["bad"].calls() - bad_before
    assert 1 <= retries <= 0.2 * len(statuses) + 100  # within the budget (20% + 10/s reserve)
    assert client.metric("tracemesh_endpoint_ejections_total", destination="flaky") >= 1
    assert bad_calls <= 5 + 2  # five consecutive failures eject it; at most a probe or two after that


def test_a_lone_failing_endpoint_gets_bounded_retries_then_fast_503s(client, apps):
    bad_before = apps["bad"].calls()
    post = get(client.outbound, "broken", method="POST")
    assert post.status == 503  # the app's own 503: not retried (POST is not idempotent)
    assert apps["bad"].calls() - bad_before == 1
    responses = [get(client.outbound, "broken") for _ in range(30)]
    assert {r.status for r in responses} == {503}
    assert any(r.header(PROXY_ERROR_HEADER) == "no_endpoints" for r in responses)  # ejected
    assert apps["bad"].calls() - bad_before <= 1 + 4 * 3  # at most max_retries+1 attempts before ejection


def test_a_refused_connect_is_retried_on_another_endpoint_even_for_post(client):
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: get(client.outbound, "half-dead", method="POST" if i % 2 else "GET").status,
                                 range(24)))  # fmt: skip
    assert statuses == [200] * 24  # nothing was sent to the dead endpoint, so even POSTs are safe to resend
    assert client.metric("tracemesh_retries_total", destination="half-dead") >= 1


def test_a_hanging_endpoint_times_out_and_the_balancer_moves_away(client, apps):
    with ThreadPoolExecutor(8) as pool:  # concurrent requests spread over both endpoints
        burst = list(pool.map(lambda _: get(client.outbound, "slow"), range(8)))
    timed_out = [r for r in burst if r.status == 504]
    assert timed_out and all(r.header(PROXY_ERROR_HEADER) == "timeout" for r in timed_out)
    assert {r.status for r in burst} <= {200, 504}
    hang_calls = apps["hang"].calls()
    after = [get(client.outbound, "slow") for _ in range(20)]
    assert [r.status for r in after] == [200] * 20  # its 300 ms observation keeps p2c away
    assert apps["hang"].calls() == hang_calls


def test_overload_is_shed_at_once_with_bounded_memory(client):
    rss_before = client.rss_mb()

    def timed_get(_):
        started = time.monotonic()
        response = get(client.outbound, "stuck")
        return response, time.monotonic() - started

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(timed_get, range(60)))
        shed = [(r, t) for r, t in results if r.status == 503]
    # 4 in flight (hanging until the 5 s timeout) and 4 queued: the other 52 are refused
    assert len(shed) >= 52
    assert {r.header(PROXY_ERROR_HEADER) for r, _ in shed} <= {"shed_queue_full", "shed_queue_timeout"}
    queue_full = [t for r, t in shed if r.header(PROXY_ERROR_HEADER) == "shed_queue_full"]
    assert queue_full and max(queue_full) < 1.0
    assert client.metric("tracemesh_requests_shed_total", destination="stuck") >= len(shed)
    assert client.rss_mb() - rss_before < 20
