"""The admin port over real HTTP: liveness, readiness that follows the proxy's flag, and a Prometheus
scrape that shows request metrics and what span export lost while the collector was down."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mesh.admin import AdminServer
from mesh.export import OtlpExporter, SpanRecorder, proxy_resource
from mesh.metrics import ProxyMetrics
from tests.support.processes import free_port
from tests.support.trace_sink import loop_in_thread, wait_until


async def get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str, str]:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, response.headers["Content-Type"], await response.text()


def test_live_always_ready_only_when_the_proxy_says_so():
    async def scenario():
        admin = AdminServer(ProxyMetrics().registry)
        await admin.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                assert (await get(session, admin.port, "/live"))[0] == 200
                assert (await get(session, admin.port, "/ready"))[0] == 503
                admin.ready = True
                assert (await get(session, admin.port, "/ready"))[0] == 200
                admin.ready = False  # draining
                assert (await get(session, admin.port, "/ready"))[0] == 503
                assert (await get(session, admin.port, "/nope"))[0] == 404
        finally:
            await admin.stop()

    asyncio.run(scenario())


def test_other_methods_paths_and_malformed_requests_get_clear_errors():
    async def exchange(port: int, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return answer

    async def scenario():
        admin = AdminServer(ProxyMetrics().registry)
        await admin.start("127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://127.0.0.1:{admin.port}/metrics", data=b"x") as response:
                    assert response.status == 405
                async with session.head(f"http://127.0.0.1:{admin.port}/live") as response:
                    assert response.status == 200
                status, _, body = await get(session, admin.port, "/ready?verbose=1")
                assert (status, body) == (503, "not ready\n")
            assert (await exchange(admin.port, b"hello\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
            assert await exchange(admin.port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n") == b""
            assert (await exchange(admin.port, b"GET /live HTTP/1.0\r\n\r\n")).endswith(b"\r\n\r\nlive\n")
        finally:
            await admin.stop()

    asyncio.run(scenario())


def test_metrics_scrape_shows_requests_and_spans_lost_to_a_dead_collector():
    metrics = ProxyMetrics()
    recorder = SpanRecorder(capacity=20)
    exporter = OtlpExporter(
        recorder, f"127.0.0.1:{free_port()}", proxy_resource("checkout"), batch_size=5, interval_s=0.05,
        retry_backoff_s=0.01, max_pause_s=0.2,
    )  # fmt: skip
    metrics.track_span_export(recorder, exporter)
    with loop_in_thread() as loop:
        exporter.start(loop)
        try:
            for n in range(100):
                metrics.observe_request("outbound", "payments", "127.0.0.1:9001", 200, "", 0.0007)
                recorder.record(("%032x" % 1, "%016x" % (n + 1), "", "GET", 3, 0, 0, 0, "", ()))
            assert wait_until(lambda: exporter.failed > 0)

            async def scrape() -> tuple[str, str]:
                admin = AdminServer(metrics.registry)
                await admin.start("127.0.0.1", 0)
                try:
                    async with aiohttp.ClientSession() as session:
                        status, content_type, body = await get(session, admin.port, "/metrics")
                finally:
                    await admin.stop()
                assert status == 200
                return content_type, body

            content_type, body = asyncio.run(scrape())
        finally:
            exporter.stop(flush_timeout=0.5)

    assert content_type.startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    target = (("destination", "payments"), ("direction", "outbound"), ("endpoint", "127.0.0.1:9001"))
    assert samples["tracemesh_requests_total", (*target, ("grpc_status", ""), ("status_class", "2xx"))] == 100
    assert samples["tracemesh_request_duration_seconds_bucket", (*target, ("le", "0.001"))] == 100
    assert samples["tracemesh_spans_dropped_total", ()] > 0
    assert samples["tracemesh_spans_failed_total", ()] > 0
    assert samples["tracemesh_spans_exported_total", ()] == 0
