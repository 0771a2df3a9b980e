"""mesh/_http1_heads.c: what of a request's fields and a response head the proxy forwards, and the framing facts."""

import random

import pytest

from mesh._http1_heads import HAS_CONTENT_LENGTH, HAS_TRANSFER_ENCODING, request_fields, response_head


def test_request_fields_forwards_end_to_end_fields_in_order_with_their_case():
    headers = [
        (b"Host", b"payments:8080"),
        (b"User-Agent", b"curl"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"x-hop", b"dropped: named by Connection"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Proxy-Connection", b"close"),
        (b"Upgrade", b"websocket"),
        (b"Trailer", b"x-sum"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        (b"X-B3-TraceId", b"0af7651916cd43dd"),
        (b"B3", b"0"),
        (b"Content-Length", b"12"),
        (b"Accept", b"*/*"),
    ]
    lines, host, length, chunked, traced = request_fields(headers, False)
    assert lines == b"Host: payments:8080\r\nUser-Agent: curl\r\nContent-Length: 12\r\nAccept: */*\r\n"
    assert (host, length, chunked, traced) == (b"payments:8080", 12, False, True)


def test_request_fields_without_host_framing_or_trace():
    assert request_fields([], False) == (b"", b"", -1, False, False)
    headers = [(b"host", b"a"), (b"transfer-encoding", b"chunked"), (b"x", b"")]
    assert request_fields(headers, True) == (b"x: \r\n", b"a", -1, True, False)


def test_request_fields_equal_repeated_lengths_are_one_length():
    assert request_fields([(b"content-length", b"5"), (b"Content-Length", b" 5 ")], False)[2] == 5


@pytest.mark.parametrize(
    "headers, message",
    [
        ([(b"content-length", b"5"), (b"content-length", b"6")], "conflicting"),
        ([(b"content-length", b"-1")], "bad content-length"),
        ([(b"content-length", b"1e3")], "bad content-length"),
        ([(b"content-length", b"99999999999999999999999")], "bad content-length"),
        ([(b"content-length", b"  ")], "empty content-length"),
        ([(b"connection", b",".join(b"x%d" % i for i in range(40)))], "too many fields named in connection"),
    ],
)
def test_request_fields_refuses_what_cannot_be_framed(headers, message):
    with pytest.raises(ValueError, match="(?i)" + message):
        request_fields(headers, False)


@pytest.mark.parametrize("headers", [[(b"a",)], [("a", b"b")], [(b"a", "b")], [b"ab"]])
def test_request_fields_rejects_anything_but_byte_pairs(headers):
    with pytest.raises(TypeError):
        request_fields(headers, False)


def test_response_head_without_hop_by_hop_fields_is_the_same_object():
    head = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\n"
    kept, framing = response_head(head)
    assert kept is head and framing == HAS_CONTENT_LENGTH


def test_response_head_drops_hop_by_hop_lines_and_what_connection_names():
    head = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nTransfer-Encoding: chunked\r\n"
        b"x-private: secret\r\nKeep-Alive: timeout=5\r\nX-Folded: a\r\n b\r\nUpgrade: h2c\r\n\tfolded too\r\n"
        b"Date: today\r\n\r\n"
    )
    assert response_head(head) == (
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nDate: today\r\n\r\n",
        HAS_TRANSFER_ENCODING,
    )


def test_response_head_close_delimited_has_no_framing_flags():
    assert response_head(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n") == (b"HTTP/1.0 200 OK\r\n\r\n", 0)


def test_response_head_survives_arbitrary_bytes():
    rng = random.Random(7)
    alphabet = b"\r\n:, \tabcCkeep-alivconnectiontransfer-encodingX"
    for _ in range(3000):
        head = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        kept, framing = response_head(head)
        assert len(kept) <= len(head) and framing in (0, 1, 2, 3)
    with pytest.raises(TypeError):
        response_head("HTTP/1.1 200 OK\r\n\r\n")
