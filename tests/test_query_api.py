"""The query API over a real socket, on both stores: every endpoint, every filter, every kind of bad input.

Every response any test here receives is also checked against collector/openapi.json.
"""

from __future__ import annotations

import urllib.parse
from datetime import datetime, timezone

import pytest

from collector.store import open_store
from tests.support.clickhouse_server import clickhouse_server_url, private_clickhouse_server  # noqa: F401  (fixtures)
from tests.support.openapi_responses import check_response
from tests.support.query_server import http_get, serving_query_api
from tests.support.query_store import api_over_corpus  # noqa: F401  (fixture)
from tests.support.trace_corpus import INJECTION, MS, S, SLASHED_SERVICE, UNICODE_NAME, UNICODE_SERVICE


@pytest.fixture
def get(api_over_corpus):
    base_url = api_over_corpus.base_url

    def get(path: str, params: list[tuple[str, str]] | None = None, expect: int = 200):
        url = base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        status, headers, body = http_get(url)
        check_response(url, status, headers, body)
        assert status == expect, (url, status, body)
        return body

    return get


@pytest.fixture
def corpus(api_over_corpus):
    return api_over_corpus.corpus


def found(get, *params: tuple[str, str]) -> list[str]:
    """Trace ids a search returns, in the order it returns them."""
    return [trace["traceId"] for trace in get("/api/v1/traces", list(params))["traces"]]


# ---- services and operations -------------------------------------------------------------------


def test_services_lists_every_service_once_sorted(get):
    assert get("/api/v1/services") == {
        "services": sorted(
            ["frontend", "checkout", "payments", UNICODE_SERVICE, "batch", "gateway", "notifier", "orders", SLASHED_SERVICE]
        )
    }


def test_operations_come_with_their_span_kind(get):
    operations = get("/api/v1/services/frontend/operations")["operations"]
    assert sorted(operations, key=lambda op: op["name"]) == [
        {"name": "GET /checkout", "spanKind": "SERVER"},
        {"name": "GET /health", "spanKind": "SERVER"},
    ]
    assert get("/api/v1/services/orders/operations") == {"operations": [{"name": "publish", "spanKind": "PRODUCER"}]}


def test_operations_of_non_ascii_and_slashed_services(get):
    path = "/api/v1/services/" + urllib.parse.quote(UNICODE_SERVICE, safe="") + "/operations"
    assert sorted(get(path)["operations"], key=lambda op: op["spanKind"]) == [
        {"name": "SELECT", "spanKind": "CLIENT"},
        {"name": UNICODE_NAME, "spanKind": "SERVER"},
    ]
    path = "/api/v1/services/" + urllib.parse.quote(SLASHED_SERVICE, safe="") + "/operations"
    assert get(path) == {"operations": [{"name": "consume", "spanKind": "CONSUMER"}]}


@pytest.mark.parametrize("service", ["nobody", INJECTION, "a/b", "%00", "\u0000"])
def test_operations_of_an_unknown_service_are_empty(get, service):
    assert get("/api/v1/services/" + urllib.parse.quote(service, safe="") + "/operations") == {"operations": []}


# ---- one trace ---------------------------------------------------------------------------------


def test_a_trace_keeps_every_field_of_every_span(get, corpus):
    trace = get(f"/api/v1/traces/{corpus.checkout}")
    base = corpus.base_ns
    assert {key: value for key, value in trace.items() if key != "spans"} == {
        "traceId": corpus.checkout,
        "rootService": "frontend",
        "rootName": "GET /checkout",
        "startTimeUnixNano": str(base),
        "durationNano": str(120 * MS),
        "spanCount": 3,
        "errorCount": 1,
        "services": ["checkout", "frontend", "payments"],
    }
    assert [span["name"] for span in trace["spans"]] == ["GET /checkout", "charge", "POST /charge"]
    assert trace["spans"][2] == {
        "traceId": corpus.checkout,
        "spanId": "00f067aa0ba902b9",
        "parentSpanId": "00f067aa0ba902b8",
        "traceState": "",
        "name": "POST /charge",
        "kind": "SERVER",
        "service": "payments",
        "startTimeUnixNano": str(base + 10 * MS),
        "durationNano": str(60 * MS),
        "status": {"code": "ERROR", "message": "card declined"},
        "attributes": {"http.status_code": 500, "amount": 72.5, "retry": True, "sizes": [1, 2]},
        "resource": {"attributes": {"service.name": "payments", "deployment.environment": "prod"}},
        "scope": {"name": "payments.lib", "version": "2.1", "attributes": {"lib.flag": "on"}},
        "events": [
            {"timeUnixNano": str(base + 11 * MS), "name": "exception", "attributes": {"exception.type": "CardError"}}
        ],
        "links": [
            {
                "traceId": corpus.database,
                "spanId": "eee19b7ec3c1b174",
                "traceState": "k=v",
                "attributes": {"link.reason": "follows"},
            }
        ],
    }


def test_trace_ids_are_accepted_in_any_case(get, corpus):
    assert get(f"/api/v1/traces/{corpus.database.upper()}")["traceId"] == corpus.database


def test_a_64_bit_trace_id_finds_the_zero_padded_trace(get, corpus):
    short = corpus.health_64bit[16:]
    assert get(f"/api/v1/traces/{short.upper()}")["traceId"] == corpus.health_64bit
    assert get(f"/api/v1/traces/{corpus.health_64bit}")["spanCount"] == 1


def test_a_trace_without_its_root_is_summarised_from_its_earliest_orphan(get, corpus):
    trace = get(f"/api/v1/traces/{corpus.orphan}")
    assert (trace["rootName"], trace["rootService"], trace["spanCount"]) == ("worker", "batch", 2)
    assert trace["durationNano"] == str(3 * S)


def test_non_ascii_and_sql_looking_values_come_back_unchanged(get, corpus):
    trace = get(f"/api/v1/traces/{corpus.database}")
    assert trace["rootService"] == UNICODE_SERVICE and trace["rootName"] == UNICODE_NAME
    assert trace["spans"][0]["attributes"] == {"db.statement": INJECTION, "ünïcode.key": "välue ✓"}
    assert trace["spans"][1]["durationNano"] == "800"


def test_an_unknown_trace_is_a_404_naming_it(get):
    body = get("/api/v1/traces/" + "f" * 32, expect=404)
    assert body == {"error": f"trace {'f' * 32} not found"}


@pytest.mark.parametrize(
    "trace_id",
    ["xyz", "f" * 31, "f" * 33, "f" * 17, "g" * 32, "' OR 1=1 --", "４" * 32, "%20" + "f" * 32],
)
def test_a_malformed_trace_id_is_a_400(get, trace_id):
    body = get("/api/v1/traces/" + urllib.parse.quote(trace_id, safe=""), expect=400)
    assert "is not 16 or 32 hexadecimal digits" in body["error"]


# ---- search ------------------------------------------------------------------------------------


def test_search_without_filters_returns_every_trace_newest_first(get, corpus):
    assert found(get) == corpus.trace_ids_newest_first()


def test_search_returns_whole_traces_with_summaries(get, corpus):
    traces = get("/api/v1/traces", [("service", "payments")])["traces"]
    assert [trace["traceId"] for trace in traces] == [corpus.checkout]
    assert traces[0] == get(f"/api/v1/traces/{corpus.checkout}")


def test_search_by_service_and_operation(get, corpus):
    assert found(get, ("service", "frontend")) == [corpus.health_64bit, corpus.checkout]
    assert found(get, ("service", "frontend"), ("operation", "GET /health")) == [corpus.health_64bit]
    assert found(get, ("operation", "charge")) == [corpus.checkout]
    assert found(get, ("service", "checkout"), ("operation", "GET /health")) == []
    assert found(get, ("service", UNICODE_SERVICE), ("operation", UNICODE_NAME)) == [corpus.database]


@pytest.mark.parametrize(
    ("tag", "trace"),
    [
        ("http.method=GET", ["health_64bit", "checkout"]),  # own attribute
        ("deployment.environment=prod", ["checkout"]),  # resource
        ("service.name=payments", ["checkout"]),  # resource, the service itself
        ("lib.flag=on", ["checkout"]),  # scope
        ("exception.type=CardError", ["checkout"]),  # event
        ("link.reason=follows", ["checkout"]),  # link
        ("http.status_code=500", ["checkout"]),  # an int, compared as text
        ("amount=72.5", ["checkout"]),  # a double
        ("retry=true", ["checkout"]),  # a bool
        ("sizes=[1,2]", ["checkout"]),  # an array, as JSON text
        (f"db.statement={INJECTION}", ["database"]),
        ("ünïcode.key=välue ✓", ["database"]),
        ("http.status_code=50", []),  # whole values only
        ("http.method=get", []),  # case matters
    ],
)
def test_a_tag_matches_any_attachment_point_as_text(get, corpus, tag, trace):
    assert found(get, ("tag", tag)) == [getattr(corpus, name) for name in trace]


def test_all_tags_must_match_within_one_span(get, corpus):
    both_on_payments = [("tag", "http.status_code=500"), ("tag", "deployment.environment=prod")]
    assert found(get, *both_on_payments) == [corpus.checkout]
    assert found(get, *both_on_payments, ("service", "frontend")) == []
    across_two_spans = [("tag", "queue=orders"), ("tag", "consumer.group=billing")]
    assert found(get, *across_two_spans) == []
    assert found(get, ("tag", "messaging.system=kafka"), ("tag", "consumer.group=billing")) == [corpus.messaging]


def test_search_by_duration_with_units(get, corpus):
    assert found(get, ("minDuration", "3s")) == [corpus.wide, corpus.orphan]
    assert found(get, ("minDuration", "2.5s"), ("maxDuration", "5m")) == [corpus.orphan]
    assert found(get, ("maxDuration", "800ns")) == [corpus.database]
    assert found(get, ("maxDuration", "799ns")) == []
    assert found(get, ("minDuration", "250us"), ("maxDuration", "250us")) == [corpus.health_64bit]
    assert found(get, ("service", "payments"), ("minDuration", "60ms"), ("maxDuration", "0.06s")) == [corpus.checkout]
    assert found(get, ("service", "payments"), ("minDuration", "60.000001ms")) == []


def test_search_by_time_window_returns_whole_traces(get, corpus):
    base_s = corpus.base_ns // S
    # Only the notifier span of the wide trace starts in this window; the search still returns its root.
    window = [("start", rfc3339(base_s + 300)), ("end", rfc3339(base_s + 400))]
    traces = get("/api/v1/traces", window)["traces"]
    assert [trace["traceId"] for trace in traces] == [corpus.wide]
    assert [span["name"] for span in traces[0]["spans"]] == ["long poll", "notify"]
    in_microseconds = [("start", str((corpus.base_ns + 10 * S) // 1000)), ("end", str((corpus.base_ns + 20 * S) // 1000))]
    assert found(get, *in_microseconds) == [corpus.health_64bit, corpus.database]
    assert found(get, ("start", rfc3339(base_s + 60))) == [corpus.wide]
    assert found(get, ("end", rfc3339(base_s - 1))) == []


def test_search_by_error(get, corpus):
    assert found(get, ("error", "true")) == [corpus.checkout]
    assert found(get, ("error", "false"), ("service", "payments")) == []
    assert found(get, ("error", "false"), ("service", "frontend")) == [corpus.health_64bit, corpus.checkout]


def test_limit_keeps_the_newest_traces(get, corpus):
    newest = corpus.trace_ids_newest_first()
    assert found(get, ("limit", "2")) == newest[:2]
    assert found(get, ("limit", "1000")) == newest


@pytest.mark.parametrize(
    ("service", "operation"),
    [(INJECTION, None), ("frontend", INJECTION), ("frontend' --", None), ("\\", "%"), ("_", "*")],
)
def test_sql_looking_values_match_nothing_and_break_nothing(get, service, operation):
    params = [("service", service)] + ([("operation", operation)] if operation else [])
    assert found(get, *params) == []


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ([("minDuration", "fast")], "minDuration"),
        ([("maxDuration", "1")], "maxDuration"),
        ([("minDuration", "2s"), ("maxDuration", "1s")], "minDuration"),
        ([("start", "yesterday")], "start"),
        ([("end", "2026-02-30T00:00:00Z")], "end"),
        ([("start", "9" * 5000)], "start"),  # more digits than int() converts
        ([("limit", "0")], "limit"),
        ([("limit", "100000000000000000000")], "limit"),
        ([("limit", "1e3")], "limit"),
        ([("error", "maybe")], "error"),
        ([("tag", "missing-equals")], "tag"),
        ([("tag", "=v")], "tag"),
        ([("service", "a"), ("service", "b")], "service"),
        ([("servce", "frontend")], "servce"),
        ([("q", INJECTION)], "q"),
    ],
)
def test_bad_search_parameters_are_a_400_naming_the_parameter(get, params, named):
    body = get("/api/v1/traces", params, expect=400)
    assert named in body["error"]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/services", "/api/v1/services/frontend/operations", "/api/v1/traces/" + "a" * 32, "/api/v1/openapi.json"],
)
def test_routes_without_parameters_refuse_unknown_ones(get, path):
    assert "unknown parameter 'limit'" in get(path, [("limit", "5")], expect=400)["error"]


def rfc3339(unix_seconds: int) -> str:
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_store_that_went_away_is_a_503_with_retry_after(private_clickhouse_server):
    store = open_store(private_clickhouse_server.url)
    try:
        with serving_query_api(store) as base_url:
            assert http_get(base_url + "/api/v1/services")[0] == 200
            private_clickhouse_server.process.kill9()
            for path in ("/api/v1/services", "/api/v1/services/a/operations", "/api/v1/traces/" + "a" * 32, "/api/v1/traces"):
                status, headers, body = http_get(base_url + path)
                check_response(base_url + path, status, headers, body)
                assert status == 503 and body["error"].startswith("span store unavailable: "), (path, status, body)
                assert headers["Retry-After"] == "5"
    finally:
        store.close()
