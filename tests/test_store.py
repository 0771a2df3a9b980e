"""The span store against both backends: embedded chDB and a real clickhouse-server (18.16)."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
import time

import pytest

from collector.store import StoreUnavailable, TraceQuery, open_store, schema
from spans.model import (
    COLUMN_NAMES,
    KIND_CLIENT,
    KIND_INTERNAL,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    empty_columns,
    extend_columns,
    row_count,
)
from tests.support.clickhouse_server import (  # noqa: F401  (pytest fixtures)
    clickhouse_server_url,
    private_clickhouse_server,
    store_url,
    with_database,
)
from tests.support.processes import REPO_ROOT, free_port

NOW_NS = time.time_ns()
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
DAY = 86_400 * SECOND


def span(trace: int, span_number: int, **fields) -> dict:
    """One span row with every column set; ids derive from the trace and span numbers."""
    row = {
        "trace_id": f"{trace:032x}",
        "span_id": f"{trace:08x}{span_number:08x}",
        "parent_span_id": "" if span_number == 0 else f"{trace:08x}{0:08x}",
        "trace_state": "",
        "name": "GET /",
        "kind": KIND_SERVER,
        "service": "frontend",
        "start_ns": NOW_NS - 10 * MINUTE + span_number * 1000,
        "duration_ns": 1_000_000,
        "status_code": STATUS_UNSET,
        "status_message": "",
        "attributes": "{}",
        "resource_attributes": '{"service.name":"frontend"}',
        "scope_name": "",
        "scope_version": "",
        "scope_attributes": "{}",
        "events": "[]",
        "links": "[]",
        "tags": [],
    }
    row.update(fields)
    return row


def columns(*rows: dict) -> dict[str, list]:
    block = empty_columns()
    for row in rows:
        for name in COLUMN_NAMES:
            block[name].append(row[name])
    return block


def rows_of(block: dict[str, list]) -> list[dict]:
    return [{name: block[name][i] for name in COLUMN_NAMES} for i in range(row_count(block))]


def trace_ids(traces: list[dict[str, list]]) -> list[str]:
    return [trace["trace_id"][0] for trace in traces]


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_every_column_round_trips_exactly(store):
    original = [
        span(
            1,
            0,
            trace_state="vendor=a,other=b",
            name="ПОЛУЧИТЬ /α/β 🚀",
            kind=KIND_SERVER,
            service="svc-ünïcode",
            start_ns=1_764_000_000_123_456_789,
            duration_ns=2**64 - 1,
            status_code=STATUS_ERROR,
            status_message="boom: 'quoted' \\ back\nslash\ttab\0nul",
            attributes='{"int":123,"double":72.5,"bool":true,"arr":["a",1]}',
            resource_attributes='{"service.name":"svc-ünïcode","host.name":"h1"}',
            scope_name="io.opentelemetry.test",
            scope_version="1.2.3",
            scope_attributes='{"scope.attr":"s"}',
            events='[{"time_ns":1764000000123456790,"name":"exception","attributes":{"x":"y"}}]',
            links='[{"trace_id":"ab","span_id":"cd","trace_state":"","attributes":{}}]',
            tags=["int=123", "double=72.5", "bool=true", "host.name=h1", "ключ=значение", ""],
        ),
        span(1, 1, name="", service="", start_ns=1_764_000_000_123_456_790, duration_ns=0, tags=[]),
    ]
    store.insert(columns(*original))
    # Tags are search input only and not stored (migration 4): they read back empty.
    assert rows_of(store.trace(f"{1:032x}")) == [{**row, "tags": []} for row in original]


def test_opening_twice_keeps_schema_and_data(store_url):
    first = open_store(store_url)
    first.insert(columns(span(7, 0)))
    first.close()
    second = open_store(store_url)
    try:
        assert schema.migrate(second._backend, second.features) == []
        assert second.trace(f"{7:032x}")["span_id"] == [f"{7:08x}{0:08x}"]
    finally:
        second.close()


def test_unknown_trace_is_empty_columns(store):
    store.insert(columns(span(1, 0)))
    assert store.trace(f"{2:032x}") == empty_columns()


def test_trace_lookup_returns_only_that_trace_in_start_order(store):
    store.insert(columns(span(1, 2), span(2, 0), span(1, 0), span(1, 1)))
    assert store.trace(f"{1:032x}")["span_id"] == [f"{1:08x}{n:08x}" for n in range(3)]


def test_trace_spread_over_inserts_and_days_comes_back_whole(store):
    midnight_ns = (NOW_NS // DAY) * DAY
    store.insert(columns(span(1, 1, start_ns=midnight_ns + SECOND)))
    store.insert(columns(span(2, 0)))
    store.insert(columns(span(1, 0, start_ns=midnight_ns - SECOND), span(1, 2, start_ns=midnight_ns + 2 * SECOND)))
    assert store.trace(f"{1:032x}")["start_ns"] == [midnight_ns - SECOND, midnight_ns + SECOND, midnight_ns + 2 * SECOND]
    assert trace_ids(store.search(TraceQuery(start_ns=midnight_ns + SECOND, end_ns=midnight_ns + SECOND))) == [f"{1:032x}"]
    assert row_count(store.search(TraceQuery(start_ns=midnight_ns + SECOND, end_ns=midnight_ns + SECOND))[0]) == 3


@pytest.fixture
def search_store(store):
    """Six traces, one distinguishing property each (trace 1 is the newest, trace 6 the oldest)."""
    base = NOW_NS - 30 * MINUTE
    at = {trace: base + (7 - trace) * MINUTE for trace in range(1, 7)}  # trace 1 newest
    traces = [
        # 1: frontend GET / calling checkout, 5 ms, newest.
        [
            span(1, 0, start_ns=at[1]),
            span(1, 1, service="checkout", name="charge", kind=KIND_CLIENT, start_ns=at[1] + 10),
        ],
        # 2: slow (2 s) checkout call, tagged via its resource (host) and an event attribute.
        [
            span(2, 0, service="checkout", name="charge", duration_ns=2 * SECOND, start_ns=at[2],
                 tags=["host.name=node-a", "exception.type=Timeout"]),
        ],
        # 3: an error status on the child span only.
        [
            span(3, 0, start_ns=at[3]),
            span(3, 1, name="db query", kind=KIND_INTERNAL, status_code=STATUS_ERROR, start_ns=at[3] + 5),
        ],
        # 4: two wanted tags, but on different spans; plus an error=true tag (no ERROR status) on the child.
        [
            span(4, 0, start_ns=at[4], tags=["http.status_code=200"]),
            span(4, 1, start_ns=at[4] + 7, tags=["user.id=42", "error=true"]),
        ],
        # 5: both wanted tags on one span (one from a link's attributes), status OK.
        [
            span(5, 0, start_ns=at[5], status_code=STATUS_OK,
                 tags=["http.status_code=200", "user.id=42", "link.kind=follows"]),
        ],
        # 6: oldest; its root lies long before the search window, its child inside it.
        [span(6, 0, start_ns=base - 60 * MINUTE, name="batch"), span(6, 1, name="step", start_ns=at[6])],
    ]
    for trace in traces:
        store.insert(columns(*trace))
    return store


def search(store, **filters) -> list[int]:
    return [int(trace_id, 16) for trace_id in trace_ids(store.search(TraceQuery(**filters)))]


def test_search_without_filters_returns_all_traces_newest_first(search_store):
    assert search(search_store) == [1, 2, 3, 4, 5, 6]


def test_search_limit_keeps_the_newest(search_store):
    assert search(search_store, limit=2) == [1, 2]


def test_search_by_service_and_operation(search_store):
    assert search(search_store, service="checkout") == [1, 2]
    assert search(search_store, service="frontend", operation="db query") == [3]
    assert search(search_store, operation="charge") == [1, 2]
    assert search(search_store, service="nobody") == []


def test_search_by_duration(search_store):
    assert search(search_store, min_duration_ns=SECOND) == [2]
    assert search(search_store, min_duration_ns=2 * SECOND, max_duration_ns=2 * SECOND) == [2]
    assert search(search_store, max_duration_ns=SECOND, service="checkout") == [1]


def test_search_by_error(search_store):
    assert search(search_store, error=True) == [3, 4]
    assert search(search_store, error=False, service="checkout") == [1, 2]


def test_search_tags_from_resource_event_and_link_attributes(search_store):
    assert search(search_store, tags=(("host.name", "node-a"),)) == [2]
    assert search(search_store, tags=(("exception.type", "Timeout"),)) == [2]
    assert search(search_store, tags=(("link.kind", "follows"),)) == [5]
    assert search(search_store, tags=(("host.name", "node-b"),)) == []


def test_all_tags_must_match_within_one_span(search_store):
    assert search(search_store, tags=(("http.status_code", "200"),)) == [4, 5]
    assert search(search_store, tags=(("http.status_code", "200"), ("user.id", "42"))) == [5]


def test_search_window_matches_by_span_start_and_returns_whole_traces(search_store):
    base = NOW_NS - 30 * MINUTE
    window = dict(start_ns=base + 1 * MINUTE, end_ns=base + 1 * MINUTE + 1000)
    found = search_store.search(TraceQuery(**window))
    assert trace_ids(found) == [f"{6:032x}"]
    assert found[0]["name"] == ["batch", "step"]  # the root outside the window comes along
    assert search(search_store, start_ns=base + 3 * MINUTE + 1, end_ns=base + 5 * MINUTE) == [2, 3, 4]
    assert search(search_store, end_ns=base + 2 * MINUTE) == [5, 6]


def test_search_filters_combine_on_one_span(search_store):
    assert search(search_store, service="frontend", operation="GET /", error=True) == [4]
    assert search(search_store, service="checkout", min_duration_ns=SECOND, tags=(("host.name", "node-a"),)) == [2]
    assert search(search_store, service="checkout", max_duration_ns=SECOND, tags=(("host.name", "node-a"),)) == []


def test_search_rejects_a_limit_below_one(store):
    with pytest.raises(ValueError):
        store.search(TraceQuery(limit=0))


def test_services_and_operations_with_kinds(search_store):
    assert search_store.services() == ["checkout", "frontend"]
    assert search_store.operations("frontend") == [
        ("GET /", KIND_SERVER),
        ("batch", KIND_SERVER),
        ("db query", KIND_INTERNAL),
        ("step", KIND_SERVER),
    ]
    assert search_store.operations("checkout") == [("charge", KIND_SERVER), ("charge", KIND_CLIENT)]
    assert search_store.operations("nobody") == []


def test_injection_looking_input_is_plain_data(store):
    evil = "x' OR 1=1 -- %(service)s %s"
    backslash = "a\\' OR '1'='1"
    store.insert(columns(span(1, 0, service=evil, name=backslash, tags=[f"q={evil}", f"b={backslash}"]), span(2, 0)))
    assert search(store, service=evil) == [1]
    assert search(store, operation=backslash, tags=(("q", evil), ("b", backslash))) == [1]
    assert search(store, service="x") == []
    assert search(store, tags=(("q", "x') OR 1=1 OR hasAll(tags, ['"),)) == []
    assert store.trace("' OR 1=1 --") == empty_columns()
    assert store.operations(evil) == [(backslash, KIND_SERVER)]
    assert store.services() == ["frontend", evil]


def test_retention_drops_whole_old_days(store):
    today = datetime.datetime.now(datetime.timezone.utc).date()
    midnight_ns = int(datetime.datetime.combine(today, datetime.time(), datetime.timezone.utc).timestamp()) * SECOND
    ages = {1: 10, 2: 6, 3: 5, 4: 0}  # trace -> age in days
    for trace, age in ages.items():
        store.insert(columns(span(trace, 0, start_ns=midnight_ns - age * DAY + 1)))
    expected = sorted(f"{today - datetime.timedelta(days=age):%Y%m%d}" for age in (10, 6))
    assert store.drop_expired(5) == expected
    assert store.drop_expired(5) == []
    assert [trace for trace in ages if row_count(store.trace(f"{trace:032x}"))] == [3, 4]
    assert search(store) == [4, 3]
    assert store.set_retention(5) is store.features.has("ttl")


def test_open_with_retention_drops_old_days(store_url):
    store = open_store(store_url)
    store.insert(columns(span(1, 0, start_ns=NOW_NS - 40 * DAY), span(2, 0)))
    store.close()
    store = open_store(store_url, retention_days=30)
    try:
        assert search(store) == [2]
    finally:
        store.close()


def test_concurrent_inserts_and_queries(store):
    errors = []

    def insert_traces(first_trace: int) -> None:
        try:
            for trace in range(first_trace, first_trace + 10):
                store.insert(columns(*(span(trace, n) for n in range(5))))
                assert row_count(store.trace(f"{trace:032x}")) == 5
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=insert_traces, args=(start,)) for start in (1, 101, 201)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(store.search(TraceQuery(limit=100))) == 30


def test_big_batch_round_trips(store):
    block = empty_columns()
    for trace in range(2000):
        extend_columns(block, columns(*(span(trace, n, tags=[f"n={n}"]) for n in range(25))))
    store.insert(block)
    assert row_count(store.trace(f"{1234:032x}")) == 25
    assert len(store.search(TraceQuery(tags=(("n", "24"),), limit=1000))) == 1000


def test_relative_chdb_url_is_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("chdb://data/spans")
    try:
        store.insert(columns(span(1, 0)))
    finally:
        store.close()
    assert (tmp_path / "data" / "spans").is_dir()


@pytest.mark.parametrize(
    "url",
    ["postgres://localhost/db", "chdb://", "clickhouse:///db", "clickhouse://host/bad-name", "clickhouse://host:port/db", "nothing"],
)
def test_bad_store_url_is_a_clear_value_error(url):
    with pytest.raises(ValueError, match="store URL"):
        open_store(url)


def test_chdb_directory_held_by_another_process_raises_store_unavailable(tmp_path):
    holder_code = (
        "import sys; from collector.store import open_store; "
        f"store = open_store('chdb://{tmp_path}/chdb'); print('open', flush=True); sys.stdin.read(); store.close()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO_ROOT, text=True
    )
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(StoreUnavailable, match="another process"):
            open_store(f"chdb://{tmp_path}/chdb")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_unreachable_server_raises_store_unavailable():
    with pytest.raises(StoreUnavailable):
        open_store(f"clickhouse://default:@127.0.0.1:{free_port()}/tracemesh")


def test_killed_server_raises_store_unavailable_and_recovers(private_clickhouse_server):
    store = open_store(with_database(private_clickhouse_server.url, "tracemesh"))
    try:
        store.insert(columns(span(1, 0)))
        private_clickhouse_server.kill()
        with pytest.raises(StoreUnavailable):
            store.ping()
        with pytest.raises(StoreUnavailable):
            store.insert(columns(span(2, 0)))
        with pytest.raises(StoreUnavailable):
            store.search(TraceQuery())
        private_clickhouse_server.start()
        store.insert(columns(span(2, 0, start_ns=NOW_NS)))
        assert search(store) == [2, 1]
    finally:
        store.close()
