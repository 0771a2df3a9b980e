"""The proxy's Prometheus metrics as a scraper sees them: request outcomes per destination and
endpoint, latency histograms, proxy errors, retries, shedding, ejections, span export counts, and a
bound on how many label sets unknown destinations can create."""

from __future__ import annotations

import asyncio
import bisect
import random
import time

import pytest

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mesh import metrics as metrics_module
from mesh._histogram import Histogram
from mesh.destination import Destination, DestinationPolicy
from mesh.export import SpanRecorder
from mesh.metrics import LATENCY_BUCKETS, ProxyMetrics, grpc_status_name, http_status_class


def scrape(metrics: ProxyMetrics) -> dict[tuple[str, frozenset], float]:
    """Every sample of a real text exposition, keyed by name and label set."""
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


def test_requests_are_counted_by_status_class_and_grpc_status():
    metrics = ProxyMetrics()
    for status in (200, 204, 503):
        metrics.observe_request("outbound", "payments", "10.0.0.1:80", status, "", 0.002)
    metrics.observe_request("outbound", "payments", "10.0.0.1:80", 200, "", 0.002, grpc_status=14)
    metrics.observe_request("inbound", "checkout", "127.0.0.1:8080", 0, "connect_error", 0.001)

    samples = scrape(metrics)
    target = dict(direction="outbound", destination="payments", endpoint="10.0.0.1:80")
    assert samples["tracemesh_requests_total", labels(**target, status_class="2xx", grpc_status="")] == 2
    assert samples["tracemesh_requests_total", labels(**target, status_class="5xx", grpc_status="")] == 1
    assert samples["tracemesh_requests_total", labels(**target, status_class="2xx", grpc_status="UNAVAILABLE")] == 1
    inbound = dict(direction="inbound", destination="checkout", endpoint="127.0.0.1:8080")
    assert samples["tracemesh_requests_total", labels(**inbound, status_class="none", grpc_status="")] == 1
    errors = labels(direction="inbound", destination="checkout", error_kind="connect_error")
    assert samples["tracemesh_proxy_errors_total", errors] == 1


def test_latency_histogram_buckets_are_cumulative_with_sum_and_count():
    metrics = ProxyMetrics()
    for seconds in (0.0004, 0.0005, 0.003, 0.2, 100.0):
        metrics.observe_request("outbound", "payments", "e1", 200, "", seconds)

    samples = scrape(metrics)
    target = dict(direction="outbound", destination="payments", endpoint="e1")
    bucket = lambda le: samples["tracemesh_request_duration_seconds_bucket", labels(**target, le=le)]  # noqa: E731
    assert bucket("0.0005") == 2  # a value on a bound falls in that bucket
    assert bucket("0.001") == 2
    assert bucket("0.005") == 3
    assert bucket("0.25") == 4
    assert bucket("30.0") == 4
    assert bucket("+Inf") == 5
    assert samples["tracemesh_request_duration_seconds_count", labels(**target)] == 5
    assert abs(samples["tracemesh_request_duration_seconds_sum", labels(**target)] - 100.2039) < 1e-9
    assert len([key for key in samples if key[0] == "tracemesh_request_duration_seconds_bucket"]) == len(
        LATENCY_BUCKETS
    ) + 1


def test_native_histogram_buckets_values_as_bisect_does_and_refuses_bad_bounds():
    rng = random.Random(5)
    values = [rng.choice(LATENCY_BUCKETS) for _ in range(200)] + [rng.random() * 40 for _ in range(800)] + [-1.0, 0, 7]
    histogram = Histogram(LATENCY_BUCKETS)
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    for value in values:
        histogram.observe(value)
        expected[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
    assert histogram.counts() == expected
    assert histogram.sum == pytest.approx(sum(values))
    for bounds in ((), (1.0, 1.0), (2.0, 1.0), (float("nan"),) * 2, ("1",)):
        with pytest.raises((ValueError, TypeError)):
            Histogram(bounds)
    with pytest.raises(TypeError):
        histogram.observe("0.1")


def test_native_histogram_counts_http_status_classes_with_the_latency():
    histogram = Histogram(LATENCY_BUCKETS)
    statuses = [0, 99, 100, 200, 204, 299, 302, 404, 500, 599, 600, 999, -1, -100, 2**70, -(2**70), True]
    for status in statuses:
        histogram.observe_http(0.002, status)
    expected = [0] * 6
    for status in statuses:
        expected[status // 100 if 0 <= status < 600 else 0] += 1
    assert histogram.status_classes() == expected
    assert histogram.counts()[bisect.bisect_left(LATENCY_BUCKETS, 0.002)] == len(statuses)
    assert histogram.sum == pytest.approx(0.002 * len(statuses))
    for bad in (("0.1", 200), (0.1, "200"), (0.1, 200.0)):
        with pytest.raises(TypeError):
            histogram.observe_http(*bad)
    with pytest.raises(TypeError):
        histogram.observe_http(0.1)
    assert histogram.status_classes() == expected  # a refused call counts nothing
    assert Histogram(LATENCY_BUCKETS).status_classes() == [0] * 6


def test_statuses_out_of_range_count_as_no_response():
    metrics = ProxyMetrics()
    for status in (-1, 600, 999, 0):
        metrics.observe_request("outbound", "payments", "e1", status, "", 0.001)
    target = dict(direction="outbound", destination="payments", endpoint="e1")
    assert scrape(metrics)["tracemesh_requests_total", labels(**target, status_class="none", grpc_status="")] == 4


def test_retries_shed_and_ejections():
    metrics = ProxyMetrics()
    metrics.observe_request("outbound", "payments", "e1", 200, "", 0.01, retries=2)
    metrics.observe_request("outbound", "payments", "e2", 504, "timeout", 2.0, retries=1)
    metrics.observe_shed("outbound", "payments", "queue_full")
    metrics.observe_shed("outbound", "payments", "queue_full")
    metrics.observe_ejection("payments", "e2")

    samples = scrape(metrics)
    assert samples["tracemesh_retries_total", labels(direction="outbound", destination="payments")] == 3
    shed = labels(direction="outbound", destination="payments", reason="queue_full")
    assert samples["tracemesh_requests_shed_total", shed] == 2
    assert samples["tracemesh_endpoint_ejections_total", labels(destination="payments", endpoint="e2")] == 1
    timeouts = labels(direction="outbound", destination="payments", error_kind="timeout")
    assert samples["tracemesh_proxy_errors_total", timeouts] == 1


def test_span_export_counters_are_read_at_scrape_time():
    metrics = ProxyMetrics()
    recorder = SpanRecorder(capacity=2)
    metrics.track_span_export(recorder, exporter=None)
    for n in range(5):
        recorder.record(("%032x" % 1, "%016x" % n, "", "GET", 3, 0, 0, 0, "", ()))

    samples = scrape(metrics)
    assert samples["tracemesh_spans_dropped_total", labels()] == 3
    assert samples["tracemesh_span_buffer_spans", labels()] == 2
    assert samples["tracemesh_spans_exported_total", labels()] == 0
    assert samples["process_resident_memory_bytes", labels()] > 0


def test_unknown_destinations_beyond_the_bound_share_one_label_set(monkeypatch):
    monkeypatch.setattr(metrics_module, "MAX_SERIES", 5)
    metrics = ProxyMetrics()
    for n in range(50):
        metrics.observe_request("outbound", f"host-{n}", "", 0, "unknown_service", 0.0001)
        metrics.observe_shed("outbound", f"host-{n}", "queue_full")

    samples = scrape(metrics)
    request_series = [key for key in samples if key[0] == "tracemesh_requests_total"]
    assert len(request_series) == 6  # five real destinations, then "other"
    other = dict(direction="outbound", destination="other", endpoint="other")
    assert samples["tracemesh_requests_total", labels(**other, status_class="none", grpc_status="")] == 45
    assert len([key for key in samples if key[0] == "tracemesh_proxy_errors_total"]) == 6
    assert len([key for key in samples if key[0] == "tracemesh_requests_shed_total"]) == 6
    errors = labels(direction="outbound", destination="other", error_kind="unknown_service")
    assert samples["tracemesh_proxy_errors_total", errors] == 45


def test_status_label_helpers():
    assert [http_status_class(s) for s in (0, 101, 200, 302, 404, 599, 700)] == [
        "none", "1xx", "2xx", "3xx", "4xx", "5xx", "none",
    ]  # fmt: skip
    assert [grpc_status_name(c) for c in (None, 0, 4, 16, 17)] == ["", "OK", "DEADLINE_EXCEEDED", "UNAUTHENTICATED", "UNKNOWN"]


def test_destination_admission_and_endpoint_state_are_read_at_scrape_time():
    metrics = ProxyMetrics()
    destinations = []
    metrics.track_destinations(destinations)
    payments = Destination("payments", DestinationPolicy(max_in_flight=1, max_queue=5), ["10.0.0.1:80", "10.0.0.2:80"])
    destinations.append(payments)  # created after tracking started, as the proxy does on first use

    async def hold_one_and_queue_one():
        await payments.admission.acquire()
        waiter = asyncio.ensure_future(payments.admission.acquire())
        await asyncio.sleep(0)
        samples = scrape(metrics)
        waiter.cancel()
        return samples

    broken = payments.balancer.endpoints[0]
    for _ in range(broken.breaker.threshold):
        broken.breaker.failure(time.monotonic())
    samples = asyncio.run(hold_one_and_queue_one())

    assert samples["tracemesh_destination_in_flight", labels(destination="payments")] == 1
    assert samples["tracemesh_destination_queued", labels(destination="payments")] == 1
    assert samples["tracemesh_endpoint_ejected", labels(destination="payments", endpoint="10.0.0.1:80")] == 1
    assert samples["tracemesh_endpoint_ejected", labels(destination="payments", endpoint="10.0.0.2:80")] == 0
    load = samples["tracemesh_endpoint_load_seconds", labels(destination="payments", endpoint="10.0.0.2:80")]
    assert 0 < load < 1  # the initial RTT estimate with nothing pending
