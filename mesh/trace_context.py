"""Trace context propagation: read W3C Trace Context or B3 from a request, write it back for the next hop.

Every hop through a proxy is one span. To keep the trace a tree, the proxy continues the caller's trace
(same trace id, the caller's span as parent) and rewrites the headers so the next hop's span becomes a
child of this hop's span. Apps instrumented with Zipkin tracers speak B3, OpenTelemetry speaks W3C, so
both are read, and the B3 flavour(s) the request arrived with are written back beside ``traceparent``.

Formats (https://www.w3.org/TR/trace-context/, https://github.com/openzipkin/b3-propagation):
  traceparent: {version:2}-{trace-id:32}-{parent-id:16}-{flags:2}   lowercase hex, ids not all zero
  b3:          {trace-id:16|32}-{span-id:16}[-{1|0|d}[-{parent-span-id:16}]]  or just {1|0|d}
  x-b3-traceid / x-b3-spanid / x-b3-sampled / x-b3-flags / x-b3-parentspanid

Malformed headers are ignored (a new trace starts), never an error: tracing must not break traffic.
This runs per request, so parsing is a single pass over the header list with dict lookups.
"""

from __future__ import annotations

import re
from functools import partial
from typing import NamedTuple, Sequence

from mesh import _trace_ids
from mesh._trace_ids import new_span_id, new_trace_id, traceparent_line

# Which propagation formats a request carried (bit flags), so inject() answers in the same dialects.
W3C = 1
B3_SINGLE = 2
B3_MULTI = 4


class TraceContext(NamedTuple):
    trace_id: str  # 32 lowercase hex
    parent_id: str  # 16 lowercase hex span id of the caller's span; '' when this hop starts the trace
    sampled: bool
    trace_state: str  # W3C tracestate, passed through unchanged ('' when absent)
    formats: int = 0  # W3C | B3_SINGLE | B3_MULTI the request arrived with


# new_trace_id() / new_span_id(): random, not-all-zero hex ids; traceparent_line(): the common case of
# trace_header_lines (mesh/_trace_ids.c: together ~7% of a proxied request when written in Python).


# new_root() -> (ctx, span_id): a sampled W3C context starting a new trace at this hop, and this hop's
# span id (mesh/_trace_ids.c builds both, a Python function around the id draw cost ~4,000 instructions).
new_root = partial(_trace_ids.new_root, TraceContext, W3C)

# from_traceparent(value) -> TraceContext | None: what extract() answers for a request whose only trace
# header is this traceparent value (the HTTP/1.1 relay learns that from its header pass and skips the
# header walk). The W3C rules are mesh/_trace_ids.c's traceparent_context, which extract() uses too
# (a regular expression, decode and slices in Python cost ~15,000 instructions per traced request).
_traceparent_context = _trace_ids.traceparent_context
from_traceparent = partial(_traceparent_context, TraceContext, W3C, "")


_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_B3 = b"b3"
_B3_TRACE_ID = b"x-b3-traceid"
_B3_SPAN_ID = b"x-b3-spanid"
_B3_PARENT_SPAN_ID = b"x-b3-parentspanid"
_B3_SAMPLED = b"x-b3-sampled"
_B3_FLAGS = b"x-b3-flags"

TRACE_HEADER_NAMES = frozenset(
    (_TRACEPARENT, _TRACESTATE, _B3, _B3_TRACE_ID, _B3_SPAN_ID, _B3_PARENT_SPAN_ID, _B3_SAMPLED, _B3_FLAGS)
)
# Header names usually arrive lower-cased; only names of a matching length are lower-cased to check.
_NAME_LENGTHS = frozenset(len(name) for name in TRACE_HEADER_NAMES)

_B3_SINGLE_RE = re.compile(rb"([0-9a-f]{16}|[0-9a-f]{32})-([0-9a-f]{16})(?:-([01d])(?:-([0-9a-f]{16}))?)?")
_HEX_ID_RE = re.compile(rb"[0-9a-f]{16}|[0-9a-f]{32}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_PAD_64_BIT = "0" * 16
_new_context = tuple.__new__  # builds the NamedTuple without its Python-level __new__ (per-request cost)


def extract(headers: Sequence[tuple[bytes, bytes]]) -> TraceContext | None:
    """The trace this request continues, or None when it carries no usable trace context.

    W3C wins over B3 single, which wins over B3 multi. A B3 header carrying only a sampling decision
    ("b3: 0") yields a fresh trace id with parent_id '' so the decision is kept.
    """
    traceparent = tracestate = single = None
    multi: dict[bytes, bytes] | None = None
    for name, value in headers:
        if name not in TRACE_HEADER_NAMES:
            if len(name) not in _NAME_LENGTHS:
                continue
            name = name.lower()
            if name not in TRACE_HEADER_NAMES:
                continue
        if name == _TRACEPARENT:
            traceparent = value if traceparent is None else traceparent
        elif name == _TRACESTATE:  # several tracestate headers form one list
            tracestate = value if tracestate is None else tracestate + b"," + value
        elif name == _B3:
            single = value if single is None else single
        else:
            if multi is None:
                multi = {}
            multi.setdefault(name, value)
    if traceparent is None and single is None and multi is None:
        return None
    formats = (0 if single is None else B3_SINGLE) | (B3_MULTI if multi is not None and _B3_TRACE_ID in multi else 0)
    if traceparent is not None:
        state = "" if tracestate is None else tracestate.strip().decode("latin-1")
        ctx = _traceparent_context(TraceContext, formats | W3C, state, traceparent)
        if ctx is not None:
            return ctx
    if single is not None:
        ctx = _parse_b3_single(single.strip(), formats)
        if ctx is not None:
            return ctx
    if formats & B3_MULTI:
        return _parse_b3_multi(multi, formats)
    return None


def _parse_b3_single(value: bytes, formats: int) -> TraceContext | None:
    if value in (b"0", b"1", b"d"):
        return _new_context(TraceContext, (new_trace_id(), "", value != b"0", "", formats))
    match = _B3_SINGLE_RE.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id, sampling, _parent = match.groups()
    return _b3_context(trace_id, span_id, sampling != b"0", formats)


def _parse_b3_multi(found: dict[bytes, bytes], formats: int) -> TraceContext | None:
    trace_id = found[_B3_TRACE_ID].strip()
    span_id = found.get(_B3_SPAN_ID, b"").strip()
    if _HEX_ID_RE.fullmatch(trace_id) is None or len(span_id) != 16 or _HEX_ID_RE.fullmatch(span_id) is None:
        return None
    # Debug (x-b3-flags: 1) implies sampled; an absent decision is deferred to us, and we sample.
    debug = found.get(_B3_FLAGS, b"").strip() == b"1"
    sampled = debug or found.get(_B3_SAMPLED, b"1").strip() not in (b"0", b"false")
    return _b3_context(trace_id, span_id, sampled, formats)


def _b3_context(trace_id: bytes, span_id: bytes, sampled: bool, formats: int) -> TraceContext | None:
    trace = trace_id.decode()
    if len(trace) == 16:
        trace = _PAD_64_BIT + trace
    span = span_id.decode()
    if trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return _new_context(TraceContext, (trace, span, sampled, "", formats))


def trace_headers(ctx: TraceContext, span_id: str) -> list[tuple[bytes, bytes]]:
    """The propagation headers that make ``span_id`` (this hop's span) the parent of the next hop."""
    flag = "1" if ctx.sampled else "0"
    trace_id = ctx.trace_id
    out = [(_TRACEPARENT, f"00-{trace_id}-{span_id}-0{flag}".encode())]
    if ctx.trace_state:
        out.append((_TRACESTATE, ctx.trace_state.encode("latin-1")))
    formats = ctx.formats
    if formats & B3_SINGLE:
        parent = "-" + ctx.parent_id if ctx.parent_id else ""
        out.append((_B3, f"{trace_id}-{span_id}-{flag}{parent}".encode()))
    if formats & B3_MULTI:
        out.append((_B3_TRACE_ID, trace_id.encode()))
        out.append((_B3_SPAN_ID, span_id.encode()))
        if ctx.parent_id:
            out.append((_B3_PARENT_SPAN_ID, ctx.parent_id.encode()))
        out.append((_B3_SAMPLED, flag.encode()))
    return out


def trace_header_lines(ctx: TraceContext, span_id: str) -> bytes:
    """``trace_headers`` as HTTP/1.1 header lines (``name: value\\r\\n`` each)."""
    if ctx.formats == W3C and not ctx.trace_state:  # the common case: one line, built in one step
        return traceparent_line(ctx.trace_id, span_id, ctx.sampled)
    return b"".join([name + b": " + value + b"\r\n" for name, value in trace_headers(ctx, span_id)])


def inject(headers: Sequence[tuple[bytes, bytes]], ctx: TraceContext, span_id: str) -> list[tuple[bytes, bytes]]:
    """``headers`` without their old trace headers, plus the ones naming ``span_id`` as parent."""
    kept = [
        header
        for header in headers
        if header[0] not in TRACE_HEADER_NAMES
        and (len(header[0]) not in _NAME_LENGTHS or header[0].lower() not in TRACE_HEADER_NAMES)
    ]
    kept.extend(trace_headers(ctx, span_id))
    return kept
