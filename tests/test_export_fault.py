"""Collector killed under traffic (real collector, proxy and app processes; export over OTLP/gRPC and
over OTLP/HTTP): requests through the proxy are unaffected, the spans that could not be sent are counted on /metrics, the export buffer
stays bounded, and once the collector is back the proxy's spans reach it again."""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.collector import collector_for
from tests.support.processes import ManagedProcess, free_port, tracemesh_command, wait_for_port
from tests.support.trace_sink import wait_until

SPAN_BUFFER = 300


def admin_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def span_metrics(admin_port: int) -> dict[str, float]:
    _, text = admin_get(admin_port, "/metrics")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("tracemesh_span")
    }


def send_requests(port: int, count: int) -> list[int]:
    """``count`` GETs over one keep-alive connection; each answer's status."""
    statuses = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for n in range(count):
            connection.request("GET", f"/hop?n={n}")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    return statuses


@pytest.fixture(params=["otlp-grpc", "otlp-http"])
def stack(request, tmp_path):
    """collector + app + inbound proxy exporting to the collector; all stopped at the end."""
    collector = collector_for(tmp_path).start()
    if request.param == "otlp-grpc":
        export_to = collector.grpc_address
    else:
        export_to = f"http://127.0.0.1:{collector.otlp_http_port}"
    app_port, inbound_port, admin_port = free_port(), free_port(), free_port()
    app = ManagedProcess(
        [sys.executable, "-m", "tests.apps.upstream", "--port", str(app_port), "--name", "checkout"],
        tmp_path / "app.log",
    )
    proxy = ManagedProcess(
        tracemesh_command(
            "proxy", "--service", "checkout",
            "--inbound", f"127.0.0.1:{inbound_port}", "--app", f"127.0.0.1:{app_port}",
            "--collector", export_to, "--admin", f"127.0.0.1:{admin_port}",
            "--span-buffer", str(SPAN_BUFFER),
        ),
        tmp_path / "proxy.log",
    )  # fmt: skip
    try:
        wait_for_port(app_port, process=app.popen)
        wait_for_port(admin_port, process=proxy.popen)
        assert wait_until(lambda: admin_get(admin_port, "/ready")[0] == 200, timeout=15), proxy.log()
        yield collector, inbound_port, admin_port, proxy
    finally:
        proxy.stop()
        app.stop()
        if collector.process is not None:
            collector.stop()


def test_collector_killed_traffic_unaffected_and_drops_counted(stack):
    collector, inbound_port, admin_port, proxy = stack

    assert send_requests(inbound_port, 50) == [200] * 50
    assert wait_until(lambda: span_metrics(admin_port).get("tracemesh_spans_exported_total") == 50, timeout=15)
    collector.wait_inserted(50)

    collector.kill9()
    statuses = send_requests(inbound_port, 1000)
    assert statuses == [200] * 1000, proxy.log()[-2000:]

    def all_accounted_for() -> bool:  # no batch in flight: every span is exported, lost or waiting
        counts = span_metrics(admin_port)
        return counts.get("tracemesh_spans_failed_total", 0) > 0 and 1050 == sum(
            counts[name]
            for name in (
                "tracemesh_spans_exported_total",
                "tracemesh_spans_dropped_total",
                "tracemesh_spans_failed_total",
                "tracemesh_span_buffer_spans",
            )
        )

    assert wait_until(all_accounted_for, timeout=15), span_metrics(admin_port)
    after_kill = span_metrics(admin_port)
    assert after_kill["tracemesh_spans_dropped_total"] > 0  # 1000 spans cannot fit a 300-span buffer
    assert after_kill["tracemesh_span_buffer_spans"] <= SPAN_BUFFER
    assert after_kill["tracemesh_spans_exported_total"] == 50

    collector.start()  # back on the same ports

    def exported_again() -> bool:
        # Traffic goes on: spans sent while the proxy still finds the collector down (gRPC's reconnect
        # backoff, the exporter's pause) are lost and counted; later ones must get through.
        assert send_requests(inbound_port, 5) == [200] * 5
        return span_metrics(admin_port).get("tracemesh_spans_exported_total", 0) >= 70

    assert wait_until(exported_again, timeout=30, interval=0.2), span_metrics(admin_port)
