"""What every receiver does between reading a request and answering it: decode, spool, fan out.

Keeping it in one place makes the acknowledgement rule the same for every protocol: spans are
acknowledged only after ``Spool.append`` returned, and a full spool is refused *before* any
decoding work, so back-pressure is cheap for the collector and clear for the client. An
OTLP/protobuf body is spooled as it came (its decoded spans depend on it alone), any other format
as its decoded columns; see ``collector.spool``. Once spooled,
a batch is handed to every consumer (the service graph), which sees each span before any sampling
of what is stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from collector.spool import Spool, SpoolFull
from spans.model import SpanColumns
from spans.otlp_decode import DecodedBatch, decode_otlp_protobuf

RETRY_AFTER_S = 1  # what a client refused by back-pressure is told to wait


@dataclass
class IntakeStats:
    accepted_spans: int = 0
    rejected_spans: int = 0
    refused_requests: int = 0  # back-pressure


class Intake:
    def __init__(self, spool: Spool, consumers: Sequence[Callable[[SpanColumns], None]] = ()):
        self.spool = spool
        self.consumers = tuple(consumers)
        self.stats = IntakeStats()
        self._lock = threading.Lock()

    def accept(self, decode: Callable[[bytes], DecodedBatch], body: bytes) -> DecodedBatch:
        """Decode ``body`` and spool its good spans. Raises ``SpoolFull`` or ``PayloadError``."""
        if self.spool.is_full():
            self._refused()
            raise SpoolFull(f"spool is full ({self.spool.size_bytes} bytes); retry in {RETRY_AFTER_S}s")
        batch = decode(body)
        if batch.accepted:
            try:
                self.spool.append(batch.columns, body if decode is decode_otlp_protobuf else None)
            except SpoolFull:
                self._refused()
                raise
            for consume in self.consumers:
                consume(batch.columns)
        with self._lock:
            self.stats.accepted_spans += batch.accepted
            self.stats.rejected_spans += len(batch.rejected)
        return batch

    def _refused(self) -> None:
        with self._lock:
            self.stats.refused_requests += 1
