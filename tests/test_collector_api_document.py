"""Every kind of answer the collector's HTTP API port gives, from a real ``tracemesh collector``, checked
against collector/openapi.json: Zipkin ingest (py-zipkin's reports against the request schema, then
202, 400, 413, 415), the graph and edge series, scaling hints, ``/ready``, ``/metrics`` and the
document itself.

(The query routes' answers are checked in test_query_api; that the document lists exactly the routes
served, in test_query_openapi.)
"""

from __future__ import annotations

import time

import orjson
import pytest
from py_zipkin import Encoding, Kind
from py_zipkin.transport import BaseTransportHandler
from py_zipkin.zipkin import zipkin_span

from collector.query_api import OPENAPI_PATH
from tests.support.collector import collector_for
from tests.support.openapi_responses import check_request_body, checked_call

MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    running = collector_for(tmp_path_factory.mktemp("collector"), None, "--max-request-bytes", "64k").start()
    yield running
    running.stop()


class CheckedTransport(BaseTransportHandler):
    """py-zipkin's reports, checked against the document's request body schema, then posted."""

    def __init__(self, url: str):
        self.url = url
        self.statuses: list[int] = []

    def get_max_payload_bytes(self) -> None:
        return None

    def send(self, payload: bytes | str) -> None:
        body = payload.encode() if isinstance(payload, str) else payload
        check_request_body(self.url, orjson.loads(body))
        self.statuses.append(checked_call(self.url, "POST", body)[0])


def wait_for_hint(collector, service: str, timeout: float = 10.0) -> dict:
    """The service's scaling hint once the control plane's tick (every second) has computed it."""
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = checked_call(f"{collector.api_url}/api/v1/hints/{service}")
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return body
        time.sleep(0.2)


def test_zipkin_spans_then_the_graph_edges_hints_ready_and_metrics_answers(collector):
    accepted_before = checked_call(collector.api_url + "/ready")[2]["accepted_spans"]
    transport = CheckedTransport(collector.api_url + "/api/v2/spans")
    with zipkin_span(service_name="zk-web", span_name="GET /", transport_handler=transport, sample_rate=100.0,
                     kind=Kind.SERVER, encoding=Encoding.V2_JSON, binary_annotations={"http.path": "/"}) as root:
        root.add_annotation("cache miss")
        with zipkin_span(service_name="zk-web", span_name="query", kind=Kind.CLIENT,
                         binary_annotations={"db.system": "redis"}):
            pass
    assert transport.statuses == [202]

    assert checked_call(collector.api_url + "/ready")[2]["accepted_spans"] == accepted_before + 2
    graph = checked_call(collector.api_url + "/api/v1/graph")[2]
    assert {(edge["source"], edge["target"]) for edge in graph["edges"]} == {("user", "zk-web"), ("zk-web", "redis")}
    series = checked_call(collector.api_url + "/api/v1/edges?from=user&step=30s")[2]
    assert [(s["source"], s["target"]) for s in series["series"]] == [("user", "zk-web")]
    assert wait_for_hint(collector, "zk-web")["desiredReplicas"] >= 1
    hints = checked_call(collector.api_url + "/api/v1/hints")[2]
    assert "zk-web" in [hint["service"] for hint in hints["services"]]
    metrics = checked_call(collector.api_url + "/metrics")[2]
    assert 'tracemesh_edge_requests_total{client="user",connection_type="request",server="zk-web"} 1.0' in metrics
    assert 'tracemesh_hint_desired_replicas{service="zk-web"}' in metrics


def test_bad_zipkin_requests_get_the_documented_answers(collector):
    url = collector.api_url + "/api/v2/spans"
    good = {"traceId": "ab" * 8, "id": "cd" * 8, "name": "kept", "timestamp": 1_700_000_000_000_000}
    bad = {"traceId": "zz" * 8, "id": "ef" * 8}
    answers = [
        (orjson.dumps([good, bad]), "application/json", 400, "rejected 1: span 1 (id efefefefefefefef)"),
        (b'{"spans": []}', "application/json", 400, "JSON array of spans"),
        (b"[]", "application/x-thrift", 415, "only Zipkin v2 JSON"),
        (b"[" + b" " * MAX_REQUEST_BYTES + b"]", "application/json", 413, "Maximum request body size"),
    ]
    for body, content_type, expected_status, expected_text in answers:
        status, _, text = checked_call(url, "POST", body, content_type)
        assert status == expected_status and expected_text in text, (status, text)


@pytest.mark.parametrize(
    "path, expected_status, problem",
    [
        ("/api/v1/graph?start=yesterday", 400, "start"),
        ("/api/v1/edges?step=15s", 400, "multiple of the 10s window"),
        ("/api/v1/edges?since=1", 400, "unknown parameter 'since'"),
        ("/api/v1/hints?service=a", 400, "unknown parameter 'service'"),
        ("/api/v1/hints/no-such-service", 404, "no hint for service 'no-such-service'"),
    ],
)
def test_bad_graph_and_hint_requests_get_the_documented_errors(collector, path, expected_status, problem):
    status, _, body = checked_call(collector.api_url + path)
    assert status == expected_status and problem in body["error"], (status, body)


def test_the_document_is_served(collector):
    status, _, document = checked_call(collector.api_url + "/api/v1/openapi.json")
    assert status == 200 and document == orjson.loads(OPENAPI_PATH.read_bytes())
