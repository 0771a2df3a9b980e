"""A stand-in for ``mesh.export.SpanRecorder`` in tests that read back the span tuples a proxy's data
path recorded: the real recorder keeps only their OTLP encoding, made as each span is recorded."""

from __future__ import annotations

import collections

from mesh.export import SpanRecorder
from spans.otlp_encode import SpanRecord


class SpanCapture(SpanRecorder):
    """Keeps every recorded span tuple until ``take()``; a data path may run in another thread
    (``deque.append`` / ``popleft`` are atomic). A subclass, because the stacks take only recorders."""

    def __init__(self) -> None:
        super().__init__(capacity=0)
        self._captured: collections.deque[SpanRecord] = collections.deque()

    def record(self, span: SpanRecord) -> None:
        self._captured.append(span)

    def __len__(self) -> int:
        return len(self._captured)

    def take(self, limit: int) -> list[SpanRecord]:
        """Removes and returns up to ``limit`` of the oldest spans."""
        popleft = self._captured.popleft
        return [popleft() for _ in range(min(limit, len(self._captured)))]
