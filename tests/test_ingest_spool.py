"""The spool on its own: order, replay after a restart, checkpoints, torn tails, the byte limit,
OTLP request bodies decoded again on reading, segments of the previous format."""

from __future__ import annotations

import marshal
import struct
import time
import zlib

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from collector.spool import Spool, SpoolFull
from collector.store import open_store
from collector.writer import SpoolWriter
from spans.model import empty_columns, row_count
from spans.otlp_decode import decode_otlp_protobuf


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
    spool = Spool(tmp_path, segment_bytes=300, memory_spans=9)  # small: several segments, some records disk-only
    for number in range(10):
        spool.append(batch(number))
    assert spool.pending_segments() > 2
    assert [r.columns for r in drain(spool)] == [batch(n) for n in range(10)]
    assert spool.read_back_spans == sum(row_count(batch(n)) for n in range(10)) - 9  # all but what memory held
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
    assert spool.next_record(timeout=0) is None  # the reader moves past the deleted segments
    spool.append(batch(4))
    assert [r.columns for r in drain(spool)] == [batch(4)]
    spool.close()
    assert [r.columns for r in drain(Spool(tmp_path))] == [batch(4)]


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


def otlp_request(spans: int) -> bytes:
    """An OTLP/protobuf request from the OTel SDK's encoder, its second span with a bad trace id."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "spooler"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.spool")
    for index in range(spans):
        with tracer.start_as_current_span(f"op {index}", kind=SpanKind.SERVER, attributes={"index": index}):
            pass
    provider.shutdown()
    request = encode_spans(exporter.get_finished_spans())
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x01" * 8
    return request.SerializeToString()


def test_otlp_request_bodies_are_spooled_as_they_came_and_read_back_as_their_accepted_spans(tmp_path):
    bodies = [otlp_request(5) for _ in range(3)]
    batches = [decode_otlp_protobuf(body) for body in bodies]
    assert all(row_count(b.columns) == 4 and len(b.rejected) == 1 for b in batches)
    spool = Spool(tmp_path, memory_spans=0)  # every record is read back from disk
    spool.append(batches[0].columns, bodies[0])
    spool.append(batch(7))  # another format's batch, as columns, in between
    spool.append(batches[1].columns, bodies[1])
    assert spool.record_bytes == sum(9 + len(body) for body in bodies[:2]) + 9 + len(marshal.dumps(batch(7)))
    assert [r.columns for r in drain(spool)] == [batches[0].columns, batch(7), batches[1].columns]
    spool.append(batches[2].columns, bodies[2])
    spool.close()
    replayed = [r.columns for r in drain(Spool(tmp_path))]  # nothing was committed: all of it, after a restart
    assert replayed == [batches[0].columns, batch(7), batches[1].columns, batches[2].columns]


def test_segments_of_the_previous_format_are_replayed(tmp_path):
    payloads = [marshal.dumps(batch(number)) for number in range(2)]
    with open(tmp_path / f"{1:012d}.seg", "wb") as segment:  # format 1: no payload kind, crc of the payload
        segment.write(b"TMSPOOL\x01")
        for payload in payloads:
            segment.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload)
    spool = Spool(tmp_path)
    spool.append(batch(2))
    records = drain(spool)
    assert [r.columns for r in records] == [batch(0), batch(1), batch(2)]
    spool.commit(records[-1].position)
    assert spool.record_bytes == 0
    spool.close()


def test_the_writer_inserts_a_backlog_without_waiting_out_its_batch_delay(tmp_path):
    """The batch delay counts from a record's arrival: records spooled before a restart (read back from
    disk) go into the store at once, while fresh records still wait for company up to the delay."""
    bodies = [otlp_request(5) for _ in range(3)]
    spool = Spool(tmp_path / "spool")
    for body in bodies[:2]:
        spool.append(decode_otlp_protobuf(body).columns, body)
    spool.close()  # the collector stopped with two batches not yet in the store

    store = open_store(f"chdb://{tmp_path}/chdb")
    spool = Spool(tmp_path / "spool")
    writer = SpoolWriter(spool, store, max_rows=1000, max_delay=60.0)
    try:
        started = time.monotonic()
        writer.start()
        while writer.stats.inserted_rows < 8 and time.monotonic() - started < 20:
            time.sleep(0.05)
        assert (writer.stats.inserted_rows, writer.stats.inserted_batches) == (8, 1)  # not after 60 s
        assert time.monotonic() - started < 20

        spool.append(decode_otlp_protobuf(bodies[2]).columns, bodies[2])  # fresh: waits for company
        time.sleep(0.5)
        assert writer.stats.inserted_rows == 8
        assert store.operations("spooler") == [(f"op {index}", SpanKind.SERVER.value + 1) for index in (0, 2, 3, 4)]
    finally:
        writer.stop(drain_timeout=5.0)
        store.close()
    assert writer.stats.inserted_rows == 12  # stopping drains it
