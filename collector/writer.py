"""The writer thread: drains the spool into the store in large batches, never losing a record.

Batches close at ``max_rows`` rows or ``max_delay`` seconds after their first record arrived,
whichever comes first (ClickHouse likes about one big insert per second). The delay counts from the
record's arrival, not from when the writer took it: a backlog the writer is working through goes in
as soon as it is read, rather than each batch waiting once more for records that are not coming. The
spool is committed only after the store accepted the batch; while ClickHouse is unreachable
(``StoreUnavailable``) the same batch is retried with exponential backoff and receivers keep
spooling until the spool's byte limit turns into back-pressure. A batch the store keeps rejecting
for another reason (a poison batch) is moved to ``<spool>/rejected/`` after a few attempts so it
cannot block the pipeline.
Retention (``drop_expired``) runs here too, so every store call stays off the event loop.
"""

from __future__ import annotations

import logging
import marshal
import threading
import time
from dataclasses import dataclass

from collector.spool import Record, Spool
from collector.store import SpanStore, StoreUnavailable
from spans.model import empty_columns, extend_columns, row_count

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0
POISON_ATTEMPTS = 5
RETENTION_INTERVAL_S = 3600.0


@dataclass
class WriterStats:
    inserted_rows: int = 0
    inserted_batches: int = 0
    store_available: bool = True
    last_error: str = ""


class SpoolWriter:
    def __init__(
        self,
        spool: Spool,
        store: SpanStore,
        max_rows: int = 100_000,
        max_delay: float = 1.0,
        retention_days: int | None = None,
    ):
        self.spool = spool
        self.store = store
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.retention_days = retention_days
        self.stats = WriterStats()
        self._stopping = threading.Event()
        self._drain_deadline = float("inf")
        self._next_retention = time.monotonic() + RETENTION_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Insert what is spooled for up to ``drain_timeout`` seconds; the spool keeps the rest."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stopping.set()
        self.spool.wake()
        self._thread.join(drain_timeout + 5.0)

    def _run(self) -> None:
        while True:
            records = self._collect()
            if records:
                if not self._insert(records):
                    return
            elif self._stopping.is_set():
                return
            self._maybe_drop_expired()

    def _collect(self) -> list[Record]:
        """Up to ``max_rows`` rows of records, waiting at most ``max_delay`` after the first."""
        records: list[Record] = []
        rows = 0
        deadline = None
        while rows < self.max_rows:
            if self._stopping.is_set():
                wait = 0.0  # draining: take what is there, do not wait for more
            elif deadline is None:
                wait = self.max_delay
            else:
                wait = deadline - time.monotonic()
            record = self.spool.next_record(timeout=max(wait, 0.0))
            if record is None:
                break
            if deadline is None:
                deadline = record.appended_at + self.max_delay
            records.append(record)
            rows += row_count(record.columns)
        return records

    def _insert(self, records: list[Record]) -> bool:
        """Insert then commit; False when stopping before the store took the batch. The records'
        columns go to the store as they are (one block, no joined copy of them)."""
        parts = [record.columns for record in records]
        rows = sum(row_count(part) for part in parts)
        delay = RETRY_INITIAL_S
        failures = 0
        while True:
            try:
                self.store.insert_parts(parts)
                break
            except StoreUnavailable as exc:
                self._note_failure(f"store unavailable: {exc}", available=False)
            except Exception as exc:  # a batch the store refuses: retry a little, then set it aside
                failures += 1
                log.exception("insert of %d rows failed (attempt %d)", rows, failures)
                self._note_failure(f"insert failed: {exc}", available=True)
                if failures >= POISON_ATTEMPTS:
                    self._quarantine(records)
                    break
            if self._stopping.is_set() and time.monotonic() >= self._drain_deadline:
                return False
            time.sleep(min(delay, max(self._drain_deadline - time.monotonic(), 0.05)))
            delay = min(delay * 2, RETRY_MAX_S)
        self.spool.commit(records[-1].position)
        if not self.stats.store_available:
            log.warning("store is back; inserted the spooled batch of %d rows", rows)
        self.stats.store_available = True
        self.stats.inserted_rows += rows
        self.stats.inserted_batches += 1
        return True

    def _note_failure(self, message: str, available: bool) -> None:
        if self.stats.store_available and not available:
            log.warning("%s; keeping spans in the spool and retrying", message)
        self.stats.store_available = available
        self.stats.last_error = message

    def _quarantine(self, records: list[Record]) -> None:
        batch = empty_columns()
        for record in records:
            extend_columns(batch, record.columns)
        directory = self.spool.directory / "rejected"
        directory.mkdir(exist_ok=True)
        seq, end = records[0].position
        path = directory / f"{seq:012d}-{end}.marshal"
        path.write_bytes(marshal.dumps(batch))
        log.error("store keeps refusing %d rows; moved them to %s", row_count(batch), path)

    def _maybe_drop_expired(self) -> None:
        if self.retention_days is None or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_INTERVAL_S
        try:
            dropped = self.store.drop_expired(self.retention_days)
            if dropped:
                log.info("retention: dropped partitions %s", ", ".join(dropped))
        except Exception:
            log.exception("retention: drop_expired failed; will try again in an hour")
