"""Upgrading a store written by an older release: its spans stay readable and searchable, on both backends."""

from __future__ import annotations

import time

from collector.store import SpanStore, TraceQuery, open_backend, schema, sql
from spans.model import COLUMN_NAMES, COLUMNS, STATUS_UNSET, empty_columns
from tests.support.clickhouse_server import (  # noqa: F401  (pytest fixtures)
    clickhouse_server_url,
    private_clickhouse_server,
    store_url,
)

NOW_NS = time.time_ns()


def spans(*rows: tuple[int, str, list[str]]) -> dict[str, list]:
    """Root spans (trace number, service, tags) with every other column set to something plain."""
    block = empty_columns()
    for trace, service, tags in rows:
        row = {
            "trace_id": f"{trace:032x}",
            "span_id": f"{trace:016x}",
            "parent_span_id": "",
            "trace_state": "",
            "name": "GET /",
            "kind": 2,
            "service": service,
            "start_ns": NOW_NS - 60_000_000_000 + trace,
            "duration_ns": 1000,
            "status_code": STATUS_UNSET,
            "status_message": "",
            "attributes": "{}",
            "resource_attributes": "{}",
            "scope_name": "",
            "scope_version": "",
            "scope_attributes": "{}",
            "events": "[]",
            "links": "[]",
            "tags": tags,
        }
        for name in COLUMN_NAMES:
            block[name].append(row[name])
    return block


def migrate_to(backend, last_version: int) -> None:
    """Apply the migrations up to ``last_version`` only, as an older release did."""
    features = schema.server_features(backend)
    backend.execute([sql.load("schema_migrations.sql")])
    for version, file_name in schema.migrations():
        if version <= last_version:
            backend.execute(sql.script(sql.load(f"migrations/{file_name}"), features.has))
            backend.execute([sql.render(sql.load("record_migration.sql"), {"version": version, "name": file_name})])


def searched(store: SpanStore, **filters) -> list[int]:
    return sorted(int(trace["trace_id"][0], 16) for trace in store.search(TraceQuery(**filters)))


def test_spans_written_before_tag_hashes_are_found_after_the_upgrade(store_url):
    backend = open_backend(store_url)
    migrate_to(backend, 2)
    backend.insert("spans", [spans((1, "cart", ["user.id=42", "error=true"]), (2, "cart", ["user.id=7"]))], COLUMNS)
    store = SpanStore(backend)  # applies migration 3 and the rest
    try:
        store.insert(spans((3, "cart", ["user.id=42"]), (4, "shop", ["user.id=42", "region=eu"])))
        assert searched(store, tags=(("user.id", "42"),)) == [1, 3, 4]
        assert searched(store, service="cart", tags=(("user.id", "42"),)) == [1, 3]
        assert searched(store, tags=(("user.id", "42"), ("region", "eu"))) == [4]
        assert searched(store, tags=(("user.id", "4"),)) == []
        assert searched(store, error=True) == [1]
        assert searched(store, service="cart") == [1, 2, 3]
        assert store.trace(f"{1:032x}")["span_id"] == [f"{1:016x}"]
    finally:
        store.close()


def test_an_upgrade_interrupted_after_dropping_the_old_search_table_completes_on_the_next_start(store_url):
    backend = open_backend(store_url)
    migrate_to(backend, 2)
    backend.insert("spans", [spans((1, "cart", ["user.id=42"]), (2, "cart", ["error=true"]))], COLUMNS)
    backend.execute(["DROP TABLE IF EXISTS span_search_mv", "DROP TABLE IF EXISTS span_search"])  # then a crash
    store = SpanStore(backend)
    try:
        assert searched(store, tags=(("user.id", "42"),)) == [1]
        assert searched(store, error=True) == [2]
    finally:
        store.close()


def assert_old_and_new_spans_answer(store: SpanStore) -> None:
    """Traces 1-2 were written before migration 4 (tags stored in spans), 3-4 after it (through span_input)."""
    store.insert(spans((3, "cart", ["user.id=42"]), (4, "shop", ["user.id=42", "region=eu"])))
    assert searched(store, tags=(("user.id", "42"),)) == [1, 3, 4]
    assert searched(store, tags=(("user.id", "42"), ("region", "eu"))) == [4]
    assert searched(store, error=True) == [1]
    assert searched(store, service="cart") == [1, 2, 3]
    assert store.services() == ["cart", "shop"]
    assert store.operations("shop") == [("GET /", 2)]
    for trace in (1, 2, 3, 4):
        read = store.trace(f"{trace:032x}")
        assert (read["span_id"], read["tags"]) == ([f"{trace:016x}"], [[]])


def test_spans_stored_with_tags_answer_the_same_after_the_input_table_upgrade(store_url):
    backend = open_backend(store_url)
    migrate_to(backend, 3)
    backend.insert("spans", [spans((1, "cart", ["user.id=42", "error=true"]), (2, "cart", ["user.id=7"]))], COLUMNS)
    store = SpanStore(backend)  # applies migration 4 and the rest
    try:
        assert_old_and_new_spans_answer(store)
    finally:
        store.close()


def test_an_upgrade_interrupted_after_dropping_the_old_views_completes_on_the_next_start(store_url):
    backend = open_backend(store_url)
    migrate_to(backend, 3)
    backend.insert("spans", [spans((1, "cart", ["user.id=42", "error=true"]), (2, "cart", ["user.id=7"]))], COLUMNS)
    features = schema.server_features(backend)
    statements = sql.script(sql.load("migrations/0004_span_input.sql"), features.has)
    first_view = next(i for i, statement in enumerate(statements) if "MATERIALIZED VIEW" in statement)
    backend.execute(statements[:first_view])  # then a crash, before any view fills the tables again
    store = SpanStore(backend)
    try:
        assert_old_and_new_spans_answer(store)
    finally:
        store.close()


def test_the_span_tables_merge_wider_where_the_server_has_the_setting(store_url):
    store = SpanStore(open_backend(store_url))
    try:
        tables = store._backend.query(
            "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase()"
            " AND name IN ('spans', 'span_search_hashed', 'trace_times') ORDER BY name"
        )
        widened = ["merge_selector_base = 20" in engine for engine in tables["engine_full"]]
        assert tables["name"] == ["span_search_hashed", "spans", "trace_times"]
        assert widened == [store.features.has("merge_selector_base")] * 3
    finally:
        store.close()
