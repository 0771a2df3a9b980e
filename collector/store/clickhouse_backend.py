"""A ClickHouse server through clickhouse-driver (native protocol): columnar inserts, pooled connections.

A clickhouse-driver ``Client`` is one connection and not thread-safe, so each call borrows a client
from a small pool; a client whose connection broke reconnects on its next use. The driver takes
whole columns, so an insert's parts are joined here.
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Sequence

from clickhouse_driver import Client, errors

CONNECT_TIMEOUT_S = 5
SEND_RECEIVE_TIMEOUT_S = 120


class ClickHouseBackend:
    unavailable_errors = (errors.Error, OSError, EOFError)

    def __init__(self, host: str, port: int, user: str, password: str, database: str):
        self._connect_args = dict(
            host=host,
            port=port,
            user=user,
            password=password,
            connect_timeout=CONNECT_TIMEOUT_S,
            send_receive_timeout=SEND_RECEIVE_TIMEOUT_S,
            client_name="tracemesh",
        )
        self._idle: queue.LifoQueue[Client] = queue.LifoQueue()
        bootstrap = Client(database="default", **self._connect_args)
        try:
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        finally:
            bootstrap.disconnect()
        self._connect_args["database"] = database

    def execute(self, statements: list[str]) -> None:
        """Run the statements in order on one connection (so a SET applies to the ones after it)."""
        client = self._borrow()
        try:
            for statement in statements:
                client.execute(statement)
        finally:
            self._idle.put(client)

    def query(self, sql: str) -> dict[str, list]:
        client = self._borrow()
        try:
            columns, column_types = client.execute(sql, columnar=True, with_column_types=True)
        finally:
            self._idle.put(client)
        if not columns:
            columns = [() for _ in column_types]
        return {name: list(values) for (name, _), values in zip(column_types, columns)}

    def insert(self, table: str, parts: Sequence[dict[str, list]], column_types: dict[str, str]) -> None:
        columns = [
            parts[0][name] if len(parts) == 1 else list(itertools.chain.from_iterable(part[name] for part in parts))
            for name in column_types
        ]
        client = self._borrow()
        try:
            client.execute(f"INSERT INTO {table} ({', '.join(column_types)}) VALUES", columns, columnar=True)
        finally:
            self._idle.put(client)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().disconnect()
            except queue.Empty:
                return

    def _borrow(self) -> Client:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return Client(**self._connect_args)
