"""W3C Trace Context and B3 propagation: what a proxy hop reads from a request and writes for the next hop."""

import os

import pytest

from mesh.trace_context import (
    B3_MULTI,
    B3_SINGLE,
    W3C,
    TraceContext,
    extract,
    from_traceparent,
    inject,
    new_root,
    new_span_id,
    new_trace_id,
    trace_header_lines,
    trace_headers,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
HOP = "b7ad6b7169203331"


def header_dict(headers):
    return {name: value for name, value in headers}


def test_traceparent_and_tracestate_are_continued():
    ctx = extract(
        [
            (b"host", b"payments"),
            (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
            (b"tracestate", b"congo=t61rcWkgMzE"),
            (b"tracestate", b"rojo=00f067aa0ba902b7"),
        ]
    )
    assert ctx == TraceContext(TRACE, PARENT, True, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", W3C)


def test_unsampled_flag_is_kept_through_a_hop():
    ctx = extract([(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode())])
    assert ctx.sampled is False
    out = header_dict(inject([], ctx, HOP))
    assert out[b"traceparent"] == f"00-{TRACE}-{HOP}-00".encode()


def test_inject_makes_this_hops_span_the_next_parent_and_drops_old_headers():
    incoming = [
        (b"host", b"payments"),
        (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
        (b"tracestate", b"congo=t61rcWkgMzE"),
        (b"accept", b"*/*"),
    ]
    ctx = extract(incoming)
    out = inject(incoming, ctx, HOP)
    assert out == [
        (b"host", b"payments"),
        (b"accept", b"*/*"),
        (b"traceparent", f"00-{TRACE}-{HOP}-01".encode()),
        (b"tracestate", b"congo=t61rcWkgMzE"),
    ]
    # The next hop continues the same trace with our span as its parent.
    assert extract(out) == TraceContext(TRACE, HOP, True, "congo=t61rcWkgMzE", W3C)


def test_header_names_in_any_case_are_recognised_and_replaced():
    incoming = [(b"TraceParent", f"00-{TRACE}-{PARENT}-01".encode()), (b"X-B3-TraceId", TRACE.encode())]
    ctx = extract(incoming)
    assert ctx.trace_id == TRACE and ctx.parent_id == PARENT
    names = [name for name, _ in inject(incoming, ctx, HOP)]
    assert b"TraceParent" not in names and b"X-B3-TraceId" not in names


def test_b3_single_round_trip_with_parent():
    ctx = extract([(b"b3", f"{TRACE}-{PARENT}-1-05e3ac9a4f6e3b90".encode())])
    assert ctx == TraceContext(TRACE, PARENT, True, "", B3_SINGLE)
    out = header_dict(inject([], ctx, HOP))
    assert out[b"b3"] == f"{TRACE}-{HOP}-1-{PARENT}".encode()
    assert out[b"traceparent"] == f"00-{TRACE}-{HOP}-01".encode()
    assert extract([(b"b3", out[b"b3"])]) == TraceContext(TRACE, HOP, True, "", B3_SINGLE)


def test_b3_single_64_bit_trace_id_is_padded_and_debug_means_sampled():
    ctx = extract([(b"b3", f"a3ce929d0e0e4736-{PARENT}-d".encode())])
    assert ctx.trace_id == "0000000000000000a3ce929d0e0e4736"
    assert ctx.sampled is True


def test_b3_sampling_only_header_starts_a_trace_keeping_the_decision():
    ctx = extract([(b"b3", b"0")])
    assert ctx.parent_id == "" and ctx.sampled is False and len(ctx.trace_id) == 32
    assert header_dict(inject([], ctx, HOP))[b"b3"] == f"{ctx.trace_id}-{HOP}-0".encode()


def test_b3_multi_round_trip():
    incoming = [
        (b"x-b3-traceid", TRACE.encode()),
        (b"x-b3-spanid", PARENT.encode()),
        (b"x-b3-parentspanid", b"05e3ac9a4f6e3b90"),
        (b"x-b3-sampled", b"0"),
    ]
    ctx = extract(incoming)
    assert ctx == TraceContext(TRACE, PARENT, False, "", B3_MULTI)
    out = inject(incoming, ctx, HOP)
    assert header_dict(out) == {
        b"traceparent": f"00-{TRACE}-{HOP}-00".encode(),
        b"x-b3-traceid": TRACE.encode(),
        b"x-b3-spanid": HOP.encode(),
        b"x-b3-parentspanid": PARENT.encode(),
        b"x-b3-sampled": b"0",
    }
    assert extract(out).parent_id == HOP


def test_b3_multi_debug_flag_and_deferred_decision_sample():
    base = [(b"x-b3-traceid", TRACE.encode()), (b"x-b3-spanid", PARENT.encode())]
    assert extract(base).sampled is True
    assert extract(base + [(b"x-b3-sampled", b"0"), (b"x-b3-flags", b"1")]).sampled is True


def test_w3c_wins_over_b3_and_both_dialects_are_written_back():
    other_trace = "a" * 32
    incoming = [
        (b"b3", f"{other_trace}-{PARENT}-1".encode()),
        (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode()),
    ]
    ctx = extract(incoming)
    assert ctx.trace_id == TRACE and ctx.formats == W3C | B3_SINGLE
    out = header_dict(inject(incoming, ctx, HOP))
    assert out[b"b3"] == f"{TRACE}-{HOP}-1-{PARENT}".encode()


def test_malformed_traceparent_falls_back_to_b3():
    ctx = extract([(b"traceparent", b"00-nothex-00f067aa0ba902b7-01"), (b"b3", f"{TRACE}-{PARENT}".encode())])
    assert ctx == TraceContext(TRACE, PARENT, True, "", B3_SINGLE)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"content-type", b"text/plain")],
        [(b"traceparent", b"")],
        [(b"traceparent", b"garbage")],
        [(b"traceparent", f"00-{TRACE.upper()}-{PARENT}-01".encode())],  # uppercase hex is invalid
        [(b"traceparent", f"00-{'0' * 32}-{PARENT}-01".encode())],  # all-zero trace id
        [(b"traceparent", f"00-{TRACE}-{'0' * 16}-01".encode())],  # all-zero parent id
        [(b"traceparent", f"ff-{TRACE}-{PARENT}-01".encode())],  # forbidden version
        [(b"traceparent", f"00-{TRACE}-{PARENT}-01-extra".encode())],  # version 00 has no extra fields
        [(b"traceparent", f"00-{TRACE}-{PARENT}".encode())],
        [(b"traceparent", b"\xff\xfe\x00")],
        [(b"b3", b"x")],
        [(b"b3", f"{TRACE}-{PARENT[:8]}-1".encode())],
        [(b"b3", f"{TRACE}-{PARENT}-2".encode())],
        [(b"x-b3-traceid", TRACE.encode())],  # span id missing
        [(b"x-b3-traceid", b"123"), (b"x-b3-spanid", PARENT.encode())],
        [(b"x-b3-traceid", TRACE.encode()), (b"x-b3-spanid", b"-1")],
    ],
)
def test_malformed_or_missing_context_means_a_new_trace(headers):
    assert extract(headers) is None


TRACEPARENTS = [
    f"00-{TRACE}-{PARENT}-01",
    f" 00-{TRACE}-{PARENT}-00\t",  # surrounding whitespace is not part of the value
    f"00-{TRACE}-{PARENT}-0b",  # flags other than sampled: only the low bit counts
    f"cc-{TRACE}-{PARENT}-01-future",
    f"cc-{TRACE}-{PARENT}-01-\xff",  # a later version's fields are not read
    f"cc-{TRACE}-{PARENT}-01x",
    f"00-{TRACE}-{PARENT}-01-",
    f"ff-{TRACE}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-0",
    f"00-{TRACE}-{PARENT}-0g",
    f"0-{TRACE}-{PARENT}-01",
    f"00-{TRACE[:-1]}A-{PARENT}-01",
    f"00-{TRACE}_{PARENT}-01",
    f"00-{TRACE}-{'0' * 16}-01",
    "",
]


@pytest.mark.parametrize("value", [text.encode("latin-1") for text in TRACEPARENTS])
def test_a_lone_traceparent_reads_as_extract_reads_it(value):
    # from_traceparent is the relay's shortcut for a request whose only trace header is a traceparent
    assert from_traceparent(value) == extract([(b"traceparent", value)])
    assert from_traceparent(value) == extract([(b"TraceParent", value), (b"tracestate", b"")])


def test_a_lone_traceparent_continues_the_trace_it_names():
    ctx = from_traceparent(f"00-{TRACE}-{PARENT}-03".encode())
    assert type(ctx) is TraceContext
    assert ctx == TraceContext(TRACE, PARENT, True, "", W3C)
    assert from_traceparent(f"00-{TRACE}-{PARENT}-02".encode()).sampled is False
    with pytest.raises(TypeError):
        from_traceparent(f"00-{TRACE}-{PARENT}-01")


def test_future_traceparent_version_with_extra_fields_is_accepted():
    ctx = extract([(b"traceparent", f"cc-{TRACE}-{PARENT}-01-what-the-future-holds".encode())])
    assert ctx.trace_id == TRACE and ctx.parent_id == PARENT


def test_new_trace_without_incoming_context_writes_only_traceparent():
    ctx = TraceContext(new_trace_id(), "", True, "")
    out = inject([(b"host", b"x")], ctx, HOP)
    assert out == [(b"host", b"x"), (b"traceparent", f"00-{ctx.trace_id}-{HOP}-01".encode())]


def test_generated_ids_are_lowercase_hex_of_the_right_length_and_distinct():
    trace_ids = {new_trace_id() for _ in range(1000)}
    span_ids = {new_span_id() for _ in range(1000)}
    assert len(trace_ids) == 1000 and len(span_ids) == 1000
    assert all(len(t) == 32 and int(t, 16) and t == t.lower() for t in trace_ids)
    assert all(len(s) == 16 and int(s, 16) and s == s.lower() for s in span_ids)


def test_a_forked_child_does_not_repeat_its_parents_ids():
    new_span_id()  # the parent has ids buffered
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, "".join(new_span_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 4096).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent = "".join(new_span_id() for _ in range(8))
    assert len(child) == len(parent) == 128 and child != parent


def test_new_root_is_a_sampled_w3c_trace_with_its_own_span_id():
    roots = [new_root() for _ in range(1000)]
    assert len({ctx.trace_id for ctx, _ in roots}) == 1000 and len({span for _, span in roots}) == 1000
    for ctx, span_id in roots:
        assert (ctx.parent_id, ctx.sampled, ctx.trace_state, ctx.formats) == ("", True, "", W3C)
        assert len(ctx.trace_id) == 32 and int(ctx.trace_id, 16) and ctx.trace_id == ctx.trace_id.lower()
        assert len(span_id) == 16 and int(span_id, 16) and span_id == span_id.lower()


@pytest.mark.parametrize(
    "ctx",
    [
        TraceContext(TRACE, PARENT, True, "", W3C),
        TraceContext(TRACE, PARENT, False, "", W3C),
        TraceContext(TRACE, PARENT, True, "vendor=1", W3C),
        TraceContext(TRACE, PARENT, True, "", W3C | B3_SINGLE | B3_MULTI),
        TraceContext(TRACE, "", False, "", B3_MULTI),
    ],
)
def test_trace_header_lines_are_the_trace_headers_as_http1_lines(ctx):
    expected = b"".join(name + b": " + value + b"\r\n" for name, value in trace_headers(ctx, HOP))
    assert trace_header_lines(ctx, HOP) == expected


@pytest.mark.parametrize("trace_id, span_id", [("a" * 31, "b" * 16), ("a" * 32, "b" * 17), ("é" * 32, "b" * 16)])
def test_traceparent_line_refuses_ids_of_the_wrong_shape(trace_id, span_id):
    from mesh._trace_ids import traceparent_line

    with pytest.raises(ValueError):
        traceparent_line(trace_id, span_id, True)
