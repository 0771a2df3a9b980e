"""The on-disk spool: where a span batch lives between its acknowledgement and its insert.

A receiver acknowledges a request only after ``Spool.append`` returned, i.e. after the batch's
record was handed to the kernel with ``write()``. Page-cache data survives the death of the
process (``kill -9``), so nothing acknowledged is lost when the collector crashes; with
``fsync=True`` every append is also fsynced and survives an OS crash or power loss, at a cost.

Layout: append-only segment files ``<seq>.seg`` (a magic + format-version header, then records
framed as ``<u32 length><u32 crc32 of kind and payload><u8 payload kind><payload>``) and a
``checkpoint`` file naming the first record not yet in the store. A payload is the marshal of the
column dict or, for OTLP/protobuf, the request body as it came: the spans the decoder accepts
depend on the body alone, so decoding it again on reading gives the same spans, and writing it
costs no encoding at all (the body is also the smaller of the two, ~360 vs ~600 bytes a span).

A single reader (the writer thread) takes records in order; after the store accepted them,
``commit`` moves the checkpoint and deletes consumed segments. A crash between an insert and its
commit replays those records: delivery is at-least-once. Records appended by this process are also
kept in memory (bounded by their spans: a decoded span takes ~1.15 KB, about 3 times its OTLP
body) so the reader rarely has to read back and decode what was just written.
"""

from __future__ import annotations

import logging
import marshal
import os
import struct
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from spans.model import SpanColumns, row_count
from spans.otlp_decode import decode_otlp_protobuf

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
SEGMENT_MAGIC = b"TMSPOOL"
SEGMENT_HEADER = SEGMENT_MAGIC + bytes([FORMAT_VERSION])
RECORD_HEADER = struct.Struct("<IIB")  # payload length, crc32 of kind and payload, payload kind
CHECKPOINT_FILE = "checkpoint"
DEFAULT_MEMORY_SPANS = 100_000
# Version 1 segments (written before payload kinds existed) hold marshal payloads only, with the
# crc of the payload alone; they are still read, so an upgrade replays what the last release spooled.
RECORD_HEADER_V1 = struct.Struct("<II")
_RECORD_HEADERS = {SEGMENT_MAGIC + b"\x01": RECORD_HEADER_V1, SEGMENT_HEADER: RECORD_HEADER}

# Payload kinds.
COLUMNS = 0  # marshal of the column dict
OTLP_PROTOBUF = 1  # an OTLP/protobuf ExportTraceServiceRequest body


def _otlp_columns(body: bytes) -> SpanColumns:
    return decode_otlp_protobuf(body).columns


_PAYLOAD_DECODERS = {COLUMNS: marshal.loads, OTLP_PROTOBUF: _otlp_columns}
_KIND_CRC = {kind: zlib.crc32(bytes([kind])) for kind in _PAYLOAD_DECODERS}  # the crc's seed per kind


class SpoolFull(Exception):
    """The spool holds ``max_bytes`` already: the client must retry later."""


@dataclass(frozen=True)
class Record:
    seq: int  # segment
    end: int  # offset just past this record in its segment
    columns: SpanColumns
    # time.monotonic() of its append; 0.0 for a record read back from disk (the reader is behind:
    # it is older than every record still in memory)
    appended_at: float = 0.0

    @property
    def position(self) -> tuple[int, int]:
        return self.seq, self.end


def _segment_name(seq: int) -> str:
    return f"{seq:012d}.seg"


class Spool:
    def __init__(
        self,
        directory: Path | str,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        memory_spans: int = DEFAULT_MEMORY_SPANS,
        fsync: bool = False,
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.memory_spans = memory_spans
        self.fsync = fsync
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._sizes: dict[int, int] = {}
        for path in sorted(self.directory.glob("*.seg")):
            self._sizes[int(path.stem)] = path.stat().st_size
        self._read_seq, self._read_offset = self._load_checkpoint()
        for seq in [s for s in self._sizes if s < self._read_seq]:
            self._delete_segment(seq)
        self._memory: deque[tuple[int, int, Record, int]] = deque()  # (seq, start, record, spans)
        self._memory_spans = 0
        self.read_back_spans = 0  # spans of records read back from disk (decoded a second time)
        self._active_seq = max(self._sizes, default=self._read_seq) + 1
        self._active_fd = self._open_segment(self._active_seq)
        if self._read_seq not in self._sizes:
            self._read_seq, self._read_offset = min(self._sizes), len(SEGMENT_HEADER)
        self._read_file = None
        self._read_file_seq = None
        self._read_header: struct.Struct | None = None  # the record framing of the segment read

    # --- state ---------------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def record_bytes(self) -> int:
        """Bytes of records not yet deleted (consumed ones go when their segment does)."""
        return sum(size - len(SEGMENT_HEADER) for size in self._sizes.values())

    def is_full(self) -> bool:
        return self.size_bytes >= self.max_bytes

    def pending_segments(self) -> int:
        return len(self._sizes)

    # --- writing (any thread) ------------------------------------------------------------------

    def append(self, columns: SpanColumns, otlp_request: bytes | None = None) -> None:
        """Frame, write and remember one batch; ``otlp_request`` is the OTLP/protobuf body
        ``columns`` were decoded from, if they were: then the body is what is written. Raises
        ``SpoolFull``; returns once it is durable."""
        if otlp_request is None:
            kind, payload = COLUMNS, marshal.dumps(columns)
        else:
            kind, payload = OTLP_PROTOBUF, otlp_request
        header = RECORD_HEADER.pack(len(payload), zlib.crc32(payload, _KIND_CRC[kind]), kind)
        frame_size = len(header) + len(payload)
        with self._lock:
            if self.size_bytes >= self.max_bytes:
                raise SpoolFull(f"spool holds {self.size_bytes} bytes (limit {self.max_bytes})")
            active_size = self._sizes[self._active_seq]
            if active_size > len(SEGMENT_HEADER) and active_size + frame_size > self.segment_bytes:
                self._rotate()
            seq, start = self._active_seq, self._sizes[self._active_seq]
            self._write_frame(header, payload)
            if self.fsync:
                os.fsync(self._active_fd)
            self._sizes[seq] = start + frame_size
            spans = row_count(columns)
            if self._memory_spans + spans <= self.memory_spans:
                self._memory.append((seq, start, Record(seq, start + frame_size, columns, time.monotonic()), spans))
                self._memory_spans += spans
            self._appended.notify_all()

    def _write_frame(self, header: bytes, payload: bytes) -> None:
        """Header and payload in one gathering write: no copy of a ~200 KB request body into a frame."""
        written = os.writev(self._active_fd, (header, payload))
        if written < len(header) + len(payload):  # a short write (rare): the rest piece by piece
            rest = memoryview(header + payload)[written:]
            while rest:
                rest = rest[os.write(self._active_fd, rest):]

    def _open_segment(self, seq: int) -> int:
        fd = os.open(self.directory / _segment_name(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, SEGMENT_HEADER)
        self._sizes[seq] = len(SEGMENT_HEADER)
        return fd

    def _rotate(self) -> None:
        if self.fsync:
            os.fsync(self._active_fd)
        os.close(self._active_fd)
        self._active_seq += 1
        self._active_fd = self._open_segment(self._active_seq)

    def close(self) -> None:
        with self._lock:
            if self.fsync:
                os.fsync(self._active_fd)
            os.close(self._active_fd)
            if self._read_file:
                self._read_file.close()

    # --- reading and committing (the one writer thread) ----------------------------------------

    def next_record(self, timeout: float) -> Record | None:
        """The oldest record not yet handed out, waiting up to ``timeout`` for one to arrive."""
        with self._lock:
            while True:
                record = self._take_locked()
                if record is not None or timeout <= 0:
                    return record
                if not self._appended.wait(timeout):
                    return self._take_locked()
                timeout = 0

    def wake(self) -> None:
        with self._lock:
            self._appended.notify_all()

    def _take_locked(self) -> Record | None:
        while True:
            seq, offset = self._read_seq, self._read_offset
            while self._memory and (self._memory[0][0], self._memory[0][1]) < (seq, offset):
                self._memory_spans -= self._memory.popleft()[3]
            if self._memory and (self._memory[0][0], self._memory[0][1]) == (seq, offset):
                _, _, record, spans = self._memory.popleft()
                self._memory_spans -= spans
                self._read_offset = record.end
                return record
            read = self._read_from_disk(seq, offset, self._sizes.get(seq, 0))
            if read is not None:
                self._read_offset, columns = read
                if columns is not None:
                    self.read_back_spans += row_count(columns)
                    return Record(seq, self._read_offset, columns)
                continue
            if seq >= self._active_seq:
                return None
            self._read_seq, self._read_offset = self._next_seq(seq), len(SEGMENT_HEADER)

    def _next_seq(self, seq: int) -> int:
        return min(s for s in self._sizes if s > seq)

    def _read_from_disk(self, seq: int, offset: int, limit: int) -> tuple[int, SpanColumns | None] | None:
        """(end, columns) of the record at ``offset``; columns None for a record that cannot be
        decoded (skipped); None when there is no whole record there."""
        if offset >= limit:  # nothing there yet, or a segment already deleted
            return None
        if self._read_file_seq != seq:
            if self._read_file:
                self._read_file.close()
            self._read_file = open(self.directory / _segment_name(seq), "rb")
            self._read_file_seq = seq
            self._read_header = _RECORD_HEADERS.get(self._read_file.read(len(SEGMENT_HEADER)))
            if self._read_header is None:
                log.error("spool segment %s has an unknown header; skipping it", seq)
        framing = self._read_header
        if framing is None or offset + framing.size > limit:
            return None
        self._read_file.seek(offset)
        fields = framing.unpack(self._read_file.read(framing.size))
        if framing is RECORD_HEADER:
            length, crc, kind = fields
            seed = _KIND_CRC.get(kind)
        else:
            (length, crc), kind, seed = fields, COLUMNS, 0
        end = offset + framing.size + length
        payload = self._read_file.read(length) if end <= limit else b""
        if seed is None or len(payload) != length or zlib.crc32(payload, seed) != crc:
            log.error("spool segment %s: torn or corrupt record at offset %s; skipping the rest", seq, offset)
            return None
        try:
            return end, _PAYLOAD_DECODERS[kind](payload)
        except Exception:  # noqa: BLE001 - it was decoded once: a failure now is a bug, logged, never fatal
            log.exception("spool segment %s: the record at offset %s no longer decodes; skipping it", seq, offset)
            return end, None

    def commit(self, position: tuple[int, int]) -> None:
        """Everything up to ``position`` is in the store: checkpoint it and free its segments."""
        seq, offset = position
        with self._lock:
            if (seq, offset) == (self._active_seq, self._sizes[self._active_seq]):
                self._rotate()  # the active segment is fully consumed: seal it so it can go
            checkpoint = self.directory / CHECKPOINT_FILE
            tmp = checkpoint.with_suffix(".tmp")
            tmp.write_text(f"{seq} {offset}\n")
            os.replace(tmp, checkpoint)
            for old in [s for s in self._sizes if s < self._active_seq and (s < seq or (s == seq and offset >= self._sizes[s]))]:
                self._delete_segment(old)

    def _delete_segment(self, seq: int) -> None:
        if self._read_file_seq == seq and self._read_file:
            self._read_file.close()
            self._read_file, self._read_file_seq = None, None
        (self.directory / _segment_name(seq)).unlink(missing_ok=True)
        self._sizes.pop(seq, None)

    def _load_checkpoint(self) -> tuple[int, int]:
        try:
            seq, offset = (self.directory / CHECKPOINT_FILE).read_text().split()
            return int(seq), int(offset)
        except (FileNotFoundError, ValueError):
            return 0, len(SEGMENT_HEADER)

