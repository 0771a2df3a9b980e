"""The spool on its own: order, replay after a restart, checkpoints, torn tails, the byte limit."""

from __future__ import annotations

import pytest

from collector.spool import Spool, SpoolFull
from spans.model import empty_columns


def batch(number: int, spans: int = 3):
    columns = empty_columns()
    for index in range(spans):
        columns["trace_id"].append(f"{number:032x}")
        columns["span_id"].append(f"{index:016x}")
        columns["tags"].append([f"batch={number}"])
    return columns


def drain(spool: Spool) -> list:
    records = []
    while (record := spool.next_record(timeout=0)) is not None:
        records.append(record)
    return records


def test_records_come_back_in_order_from_memory_and_from_disk(tmp_path):
    spool = Spool(tmp_path, segment_bytes=300, memory_bytes=600)  # small: several segments, some records disk-only
    for number in range(10):
        spool.append(batch(number))
    assert spool.pending_segments() > 2
    assert [r.columns for r in drain(spool)] == [batch(n) for n in range(10)]
    spool.close()


def test_uncommitted_records_are_replayed_after_a_restart_and_committed_ones_are_not(tmp_path):
    spool = Spool(tmp_path, segment_bytes=300)
    for number in range(6):
        spool.append(batch(number))
    records = drain(spool)
    spool.commit(records[2].position)  # the store took batches 0..2
    spool.close()  # like a crash: nothing else is flushed or committed

    reopened = Spool(tmp_path, segment_bytes=300)
    assert [r.columns for r in drain(reopened)] == [batch(n) for n in range(3, 6)]
    reopened.close()


def test_committing_everything_frees_the_disk(tmp_path):
    spool = Spool(tmp_path)
    for number in range(4):
        spool.append(batch(number))
    spool.commit(drain(spool)[-1].position)
    assert spool.record_bytes == 0 and spool.pending_segments() == 1  # the fresh, empty active segment
    spool.close()
    assert drain(Spool(tmp_path)) == []


def test_a_torn_record_at_the_end_of_a_segment_is_skipped(tmp_path):
    spool = Spool(tmp_path)
    spool.append(batch(1))
    spool.close()
    [segment] = tmp_path.glob("*.seg")
    with open(segment, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x00\x00\x00\x00half a record")  # a write cut short
    reopened = Spool(tmp_path)
    assert [r.columns for r in drain(reopened)] == [batch(1)]
    reopened.append(batch(2))
    assert [r.columns for r in drain(reopened)] == [batch(2)]


def test_a_full_spool_refuses_appends_until_records_are_committed(tmp_path):
    spool = Spool(tmp_path, max_bytes=600)
    with pytest.raises(SpoolFull):
        while True:
            spool.append(batch(0))
    assert spool.is_full()
    spool.commit(drain(spool)[-1].position)
    assert not spool.is_full()
    spool.append(batch(1))
