"""A stand-in for ``mesh.export.SpanRecorder`` in tests that read back the span tuples a proxy's data
path recorded: the real recorder keeps only their OTLP encoding, made as each span is recorded."""

from __future__ import annotations

import collections

from spans.otlp_encode import SpanRecord


class SpanCapture:
    """Keeps every recorded span tuple until ``take()``; a data path may run in another thread
    (``deque.append`` / ``popleft`` are atomic)."""

    def __init__(self) -> None:
        self.dropped = 0
        self.taps: tuple = ()
        self._spans: collections.deque[SpanRecord] = collections.deque()

    def record(self, span: SpanRecord) -> None:
        self._spans.append(span)

    def __len__(self) -> int:
        return len(self._spans)

    def take(self, limit: int) -> list[SpanRecord]:
        """Removes and returns up to ``limit`` of the oldest spans."""
        popleft = self._spans.popleft
        return [popleft() for _ in range(min(limit, len(self._spans)))]
