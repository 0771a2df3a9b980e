"""Span storage in ClickHouse: one interface (``SpanStore``), two backends, the same SQL files.

``chdb:///abs/path`` (or ``chdb://relative/path``) keeps an embedded chDB database in that directory;
``clickhouse://user:password@host:9000/database`` uses a ClickHouse server (18.16 and newer).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from collector.store.span_store import SpanStore, StoreUnavailable, TraceQuery

__all__ = ["SpanStore", "StoreUnavailable", "TraceQuery", "open_store", "open_backend", "DEFAULT_DATABASE"]

DEFAULT_DATABASE = "tracemesh"
DEFAULT_NATIVE_PORT = 9000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def open_store(url: str, *, retention_days: int | None = None) -> SpanStore:
    """Open (creating or migrating the schema) the store at ``url``.

    With ``retention_days`` the server expires old days itself where it supports TTL, and days
    already older are dropped now; callers still run ``drop_expired`` periodically.
    Raises ValueError for a bad URL and StoreUnavailable when the server cannot be reached.
    """
    if retention_days is not None and retention_days < 1:
        raise ValueError("retention days must be at least 1")
    store = SpanStore(open_backend(url))
    try:
        if retention_days is not None:
            store.set_retention(retention_days)
            store.drop_expired(retention_days)
    except BaseException:
        store.close()
        raise
    return store


def open_backend(url: str):
    """The raw backend for ``url`` (statements and blocks, no schema); ``SpanStore(backend)`` wraps it."""
    scheme, _, rest = url.partition("://")
    if scheme == "chdb":
        if not rest:
            raise ValueError(f"store URL {url!r} names no directory (chdb:///abs/path or chdb://relative/path)")
        from collector.store.chdb_backend import ChdbBackend

        path = Path(rest).resolve()
        try:
            return ChdbBackend(str(path), DEFAULT_DATABASE)
        except RuntimeError as exc:  # chDB's errors, including a directory another process holds
            raise StoreUnavailable(f"cannot open chDB in {path} (is another process using it?): {exc}") from exc
    if scheme == "clickhouse":
        parts = urlsplit(url)
        database = parts.path.strip("/") or DEFAULT_DATABASE
        if not parts.hostname:
            raise ValueError(f"store URL {url!r} names no host (clickhouse://user:password@host:9000/database)")
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(f"store URL {url!r}: database name {database!r} must be letters, digits and _")
        if parts.query or parts.fragment:
            raise ValueError(f"store URL {url!r}: options after '?' or '#' are not supported")
        try:
            port = parts.port or DEFAULT_NATIVE_PORT
        except ValueError as exc:
            raise ValueError(f"store URL {url!r}: {exc}") from None
        from collector.store.clickhouse_backend import ClickHouseBackend

        try:
            return ClickHouseBackend(
                parts.hostname, port, unquote(parts.username or "default"), unquote(parts.password or ""), database
            )
        except ClickHouseBackend.unavailable_errors as exc:
            raise StoreUnavailable(f"cannot reach ClickHouse at {parts.hostname}:{port}: {exc}") from exc
    raise ValueError(f"store URL {url!r} must start with chdb:// or clickhouse://")
