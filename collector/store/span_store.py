"""The one store interface the collector codes against, on top of either backend.

Spans are inserted into ``span_input`` (Null engine); its materialized views fill ``spans``,
``span_search_hashed``, ``trace_times`` and ``operations`` (migration 4). Tags are search input only:
``spans`` no longer stores them, so spans read back carry empty tags (the query API never shows tags).

Trace search works like Jaeger's: a trace matches when one of its spans matches every filter; the
matching trace ids come from ``span_search_hashed`` (ordered by service, operation, time), newest match
first, and the traces are then read whole from ``spans`` (ordered by trace id), including spans that
lie outside the search window.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from collector.store import schema, sql
from spans.model import COLUMN_NAMES, COLUMNS, SpanColumns, empty_columns, row_count

# The columns of the service graph's history rows (table edge_windows; window_start in Unix seconds).
EDGE_WINDOW_COLUMNS: dict[str, str] = {
    "window_start": "DateTime",
    "client": "String",
    "server": "String",
    "connection_type": "String",
    "view": "String",
    "detail": "String",
    "requests": "UInt64",
    "errors": "UInt64",
    "retries": "UInt64",
    "request_bytes": "UInt64",
    "response_bytes": "UInt64",
    "latency_zeros": "UInt64",
    "latency_sum_ns": "UInt64",
    "latency_min_ns": "UInt64",
    "latency_max_ns": "UInt64",
    "latency_buckets": "Array(Int16)",
    "latency_counts": "Array(UInt64)",
}

class StoreUnavailable(Exception):
    """ClickHouse cannot be reached or refused the work; the caller may retry later (or spool)."""


@dataclass(frozen=True)
class TraceQuery:
    service: str | None = None
    operation: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    start_ns: int | None = None  # window on span start; None = open
    end_ns: int | None = None
    error: bool | None = None  # True: span status ERROR (or tag error=true); False: neither
    limit: int = 20


class Backend(Protocol):
    """How one kind of ClickHouse receives a statement and a block of span columns."""

    unavailable_errors: tuple[type[BaseException], ...]

    def execute(self, statements: list[str]) -> None: ...

    def query(self, sql: str) -> dict[str, list]: ...

    def insert(self, table: str, parts: Sequence[dict[str, list]], column_types: dict[str, str]) -> None:
        """One insert of the rows of every part (column lists by name), in order."""

    def close(self) -> None: ...


class SpanStore:
    """Thread-safe; every call blocks (async callers run them in an executor)."""

    def __init__(self, backend: Backend):
        self._backend = backend
        with self._guard():
            self.features = schema.server_features(backend)
            schema.migrate(backend, self.features)

    def insert(self, columns: SpanColumns) -> None:
        self.insert_parts([columns])

    def insert_parts(self, parts: Sequence[SpanColumns]) -> None:
        """Insert the spans of several batches as one block, in order, without joining their columns first."""
        parts = [part for part in parts if row_count(part)]
        if not parts:
            return
        with self._guard():
            self._backend.insert("span_input", parts, COLUMNS)

    def insert_edge_windows(self, columns: dict[str, list]) -> None:
        """Add service-graph window rows (``EDGE_WINDOW_COLUMNS``); rows of the same window add up."""
        if not columns["window_start"]:
            return
        with self._guard():
            self._backend.insert("edge_windows", [columns], EDGE_WINDOW_COLUMNS)

    def edge_windows(
        self,
        start_s: int,
        end_s: int,
        step_s: int,
        client: str | None = None,
        server: str | None = None,
        view: str | None = None,
    ) -> dict[str, list]:
        """Window rows in [start_s, end_s) summed per step (``step``: 0 from ``start_s``), edge, view and
        detail, with the latency buckets merged (``merged_buckets`` / ``merged_counts``); optionally
        only one client's, one server's, or one view's ('edge', 'endpoint', 'route') rows."""
        if step_s < 1 or end_s <= start_s:
            raise ValueError("edge_windows needs start_s < end_s and a step of at least 1 s")
        return self._query(
            "queries/edge_windows.sql",
            start_s=start_s,
            end_s=end_s,
            step_s=step_s,
            client=client,
            server=server,
            view=view,
        )

    def services(self) -> list[str]:
        return self._query("queries/services.sql")["service"]

    def operations(self, service: str) -> list[tuple[str, int]]:
        result = self._query("queries/operations.sql", service=service)
        return list(zip(result["name"], result["kind"]))

    def trace(self, trace_id: str) -> SpanColumns:
        return self._traces((trace_id,)).get(trace_id, empty_columns())

    def search(self, query: TraceQuery) -> list[SpanColumns]:
        if query.limit < 1:
            raise ValueError("limit must be at least 1")
        matches = self._query(
            "queries/search_trace_ids.sql",
            service=query.service,
            operation=query.operation,
            start_ns=query.start_ns,
            end_ns=query.end_ns,
            min_duration_ns=query.min_duration_ns,
            max_duration_ns=query.max_duration_ns,
            tags=[f"{key}={value}" for key, value in query.tags],
            only_errors=query.error is True or None,
            only_non_errors=query.error is False or None,
            limit=query.limit,
        )
        trace_ids = matches["trace_id"]
        if not trace_ids:
            return []
        traces = self._traces(tuple(trace_ids))
        return [traces[trace_id] for trace_id in trace_ids if trace_id in traces]

    def set_retention(self, retention_days: int) -> bool:
        """Make the server expire old data itself (TTL) where it can; True when it does."""
        with self._guard():
            return schema.apply_retention_ttl(self._backend, self.features, retention_days)

    def drop_expired(self, retention_days: int) -> list[str]:
        """Drop whole UTC days older than ``retention_days`` before today; returns their partition ids."""
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        cutoff = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=retention_days)
        partitions = self._query("queries/expired_partitions.sql", cutoff_day=int(cutoff.strftime("%Y%m%d")))
        dropped = [str(partition) for partition in partitions["partition"]]
        drop_template = sql.load("queries/drop_partition.sql")
        with self._guard():
            for partition in dropped:
                self._backend.execute(sql.script(drop_template, self.features.has, {"partition": int(partition)}))
        return dropped

    def ping(self) -> None:
        self._query("server_version.sql")

    def close(self) -> None:
        self._backend.close()

    def _traces(self, trace_ids: tuple[str, ...]) -> dict[str, SpanColumns]:
        """Whole traces by id, each as its own columns, spans in start order."""
        rows = self._query("queries/trace_spans.sql", trace_ids=trace_ids)
        positions: dict[str, list[int]] = {}
        for index, trace_id in enumerate(rows["trace_id"]):
            positions.setdefault(trace_id, []).append(index)
        return {
            trace_id: {name: [rows[name][i] for i in indexes] for name in COLUMN_NAMES}
            for trace_id, indexes in positions.items()
        }

    def _query(self, sql_file: str, **params) -> dict[str, list]:
        with self._guard():
            return self._backend.query(sql.render(sql.load(sql_file), params))

    @contextlib.contextmanager
    def _guard(self):
        try:
            yield
        except self._backend.unavailable_errors as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
