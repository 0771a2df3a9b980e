"""mesh/_http1_heads.c: what of a request's fields and a response head the proxy forwards, and the framing facts."""

import random

import httptools
import pytest

from mesh._http1_heads import (
    HAS_CONTENT_LENGTH,
    HAS_TRANSFER_ENCODING,
    field_pairs,
    request_fields,
    request_head,
    response_head,
    whole_request,
    whole_response,
)


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


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "trace_fields, traced",
    [
        ([(b"TraceParent", TRACEPARENT)], TRACEPARENT),  # the only trace header: its value, for the relay to read
        ([(b"traceparent", TRACEPARENT), (b"tracestate", b"k=v")], True),
        ([(b"traceparent", TRACEPARENT), (b"traceparent", TRACEPARENT)], True),
        ([(b"b3", b"1")], True),
        ([(b"x-b3-sampled", b"1")], True),
    ],
)
def test_request_fields_say_which_trace_headers_came(trace_fields, traced):
    lines, _, _, _, found = request_fields([(b"host", b"a"), *trace_fields, (b"accept", b"*/*")], False)
    assert lines == b"host: a\r\naccept: */*\r\n"
    assert found == traced and type(found) is type(traced)


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


def test_request_fields_read_field_lines_as_they_read_pairs():
    pairs = [(b"Host", b"a:1"), (b"Connection", b"x-hop"), (b"X-Hop", b"1"), (b"traceparent", b"00-x"), (b"V", b"")]
    lines = b"Host:a:1\r\nConnection:  x-hop\r\nX-Hop: 1\r\ntraceparent: 00-x\r\nV:\r\n"
    assert field_pairs(lines) == pairs and field_pairs(pairs) is pairs
    for drop_host in (False, True):
        assert request_fields(lines, drop_host) == request_fields(pairs, drop_host)
    assert request_fields(b"Host: a\nX: b", False)[:2] == (b"Host: a\r\nX: b\r\n", b"a")  # bare LF, no last CRLF
    with pytest.raises(ValueError, match="colon"):
        request_fields(b"Host a\r\n", False)
    with pytest.raises(ValueError, match="colon"):
        field_pairs(b"X: 1\r\nno colon\r\n")


@pytest.mark.parametrize("headers", [[(b"a",)], [("a", b"b")], [(b"a", "b")], [b"ab"]])
def test_request_fields_rejects_anything_but_byte_pairs(headers):
    with pytest.raises(TypeError):
        request_fields(headers, False)


@pytest.mark.parametrize("headers", [(), "Host: a\r\n", None])
def test_request_fields_rejects_anything_but_a_list_or_lines(headers):
    with pytest.raises(TypeError):
        request_fields(headers, False)


def test_request_head_is_the_forwarded_head_parsed_back_as_sent():
    lines, trace = b"host: app\r\nx-a: 1\r\n", b"traceparent: 00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01\r\n"
    plain = request_head(b"GET", b"/a?b=c", lines, trace, False)
    assert plain == b"GET /a?b=c HTTP/1.1\r\n" + lines + trace + b"\r\n"
    chunked = request_head(b"POST", b"/", lines, b"", True)
    assert chunked == b"POST / HTTP/1.1\r\n" + lines + b"transfer-encoding: chunked\r\n\r\n"
    seen = []

    class Heads:
        def on_header(self, name, value):
            seen.append((name.lower(), value))

    httptools.HttpRequestParser(Heads()).feed_data(chunked + b"0\r\n\r\n")
    assert seen == [(b"host", b"app"), (b"x-a", b"1"), (b"transfer-encoding", b"chunked")]


@pytest.mark.parametrize("args", [(b"GET", "/", b"", b"", False), (b"GET", b"/", b"", None, False), (b"GET", b"/", b"", b"")])
def test_request_head_rejects_anything_but_bytes_parts(args):
    with pytest.raises(TypeError):
        request_head(*args)


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
    # the proxy answers in HTTP/1.1 whatever the upstream spoke
    assert response_head(b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n") == (b"HTTP/1.1 200 OK\r\n\r\n", 0)
    assert response_head(b"HTTP/1.0 204 No Content\r\n\r\n") == (b"HTTP/1.1 204 No Content\r\n\r\n", 0)


def test_response_head_survives_arbitrary_bytes():
    rng = random.Random(7)
    alphabet = b"\r\n:, \tabcCkeep-alivconnectiontransfer-encodingX"
    for _ in range(3000):
        head = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        kept, framing = response_head(head)
        assert len(kept) <= len(head) and framing in (0, 1, 2, 3)
    with pytest.raises(TypeError):
        response_head("HTTP/1.1 200 OK\r\n\r\n")


class _ParsedByLlhttp:
    """What llhttp makes of one read of a response: the pieces the relay would get from its callbacks."""

    def __init__(self, data: bytes, head_only: bool):
        self.heads, self.body, self.complete, self.error = [], b"", 0, None
        self.keep_alive = self.status = None
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc

    def on_headers_complete(self):
        self.heads.append(1)
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if self._head_only:
            self.complete += 1
            raise RuntimeError("a response to HEAD ends with its head")  # stops the parser, as the relay does

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.complete += 1


def _assert_as_llhttp(data: bytes, head_only: bool) -> bool:
    """whole_response agrees with llhttp whenever it takes a read; True when it took it."""
    whole = whole_response(data, head_only)
    if whole is None:
        return False
    status, message, framing, keep_alive, head_len = whole
    head, body = message[:head_len], message[head_len:]
    parsed = _ParsedByLlhttp(data, head_only)
    assert parsed.complete == 1 and len(parsed.heads) == 1, data
    assert (status, keep_alive, body) == (parsed.status, parsed.keep_alive, parsed.body), data
    assert parsed.error is None or head_only, data
    raw_head = data[: len(data) - len(body)]
    assert raw_head.endswith(b"\r\n\r\n")
    assert (head, framing) == response_head(raw_head), data
    return True


_WHOLE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
    b"Connection: keep-alive\r\n\r\nhello world\n"
)


def test_whole_response_takes_a_complete_response_with_its_body():
    status, message, framing, keep_alive, head_len = whole_response(_WHOLE, False)
    assert (status, framing, keep_alive) == (200, HAS_CONTENT_LENGTH, True)
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
    assert (message, head_len) == (head + b"hello world\n", len(head))  # without its Connection line
    assert _assert_as_llhttp(_WHOLE, False)
    as_is = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    assert whole_response(as_is, False)[1] is as_is  # nothing to drop: the read itself is forwarded
    empty = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert whole_response(empty, False) == (404, b"HTTP/1.1" + empty[8:], HAS_CONTENT_LENGTH, False, len(empty))
    assert empty == b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"  # the read itself is left alone
    many = b"HTTP/1.1 200 OK\r\n" + b"".join(b"Keep-Alive: %d\r\n" % n for n in range(12)) + b"Content-Length: 2\r\n\r\nhi"
    assert whole_response(many, False)[1:] == (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", HAS_CONTENT_LENGTH, True, 38)
    assert _assert_as_llhttp(many, False)
    assert _assert_as_llhttp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", True)


@pytest.mark.parametrize(
    "data",
    [
        _WHOLE[:-1],  # body not all here
        _WHOLE + b"H",  # the next message began
        b"HTTP/1.1 100 Continue\r\n\r\n" + _WHOLE,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nBad Name: a\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
def test_whole_response_leaves_anything_unusual_to_llhttp(data):
    assert whole_response(data, False) is None


def test_whole_response_agrees_with_llhttp_on_mutated_responses():
    rng = random.Random(11)
    alphabet = b"\r\n:, \t0123456789HTTP/1.0 \x00\x7f\xffabcConnection:close keep-alive Content-Length"
    taken = 0
    for _ in range(4000):
        data = bytearray(_WHOLE if rng.random() < 0.5 else b"HTTP/1.0 503 Unavailable\r\nContent-Length: 3\r\n\r\nabc")
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[at] = rng.choice(alphabet)
            elif action == 1:
                data.insert(at, rng.choice(alphabet))
            else:
                del data[at]
        head_only = rng.random() < 0.2
        taken += _assert_as_llhttp(bytes(data), head_only)
    assert taken > 100  # the mutations left many responses the fast path takes
    with pytest.raises(TypeError):
        whole_response("HTTP/1.1 200 OK\r\n\r\n", False)


class _RequestByLlhttp:
    """What llhttp's callbacks give the downstream connection for one read."""

    def __init__(self, data: bytes):
        self.url, self.headers, self.body, self.complete, self.error = b"", [], b"", 0, None
        self._parser = httptools.HttpRequestParser(self)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = exc

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        parser = self._parser
        self.head = (parser.get_method(), parser.get_http_version(), parser.should_keep_alive(), parser.should_upgrade())

    def on_body(self, body):
        self.body += body

    def on_message_complete(self):
        self.complete += 1


def _request_as_llhttp(data: bytes) -> bool:
    """whole_request agrees with llhttp whenever it takes a read; True when it took it."""
    whole = whole_request(data)
    if whole is None:
        return False
    method, target, version, lines, body = whole
    parsed = _RequestByLlhttp(data)
    assert parsed.error is None and parsed.complete == 1, data
    assert parsed.head == (method, version, True, False), data
    assert (parsed.url, parsed.headers, parsed.body) == (target, field_pairs(lines), body), data
    assert request_fields(lines, False) == request_fields(parsed.headers, False), data
    return True


_REQUEST = b"POST /orders?id=7 HTTP/1.1\r\nHost: shop:8080\r\nUser-Agent:  curl \r\nContent-Length: 5\r\n\r\nhello"


def test_whole_request_takes_a_complete_keep_alive_request():
    lines = b"Host: shop:8080\r\nUser-Agent:  curl \r\nContent-Length: 5\r\n"
    assert whole_request(_REQUEST) == (b"POST", b"/orders?id=7", "1.1", lines, b"hello")
    assert field_pairs(lines) == [(b"Host", b"shop:8080"), (b"User-Agent", b"curl "), (b"Content-Length", b"5")]
    assert _request_as_llhttp(_REQUEST)
    assert _request_as_llhttp(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [
        _REQUEST[:-1],
        _REQUEST + b"G",  # pipelined: the next request began
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",  # llhttp must see the last request
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET http://shop/ HTTP/1.1\r\nHost: shop\r\n\r\n",  # absolute-form
        b"CONNECT shop:443 HTTP/1.1\r\nHost: shop:443\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : shop\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 129 + b"\r\n",
    ],
)
def test_whole_request_leaves_anything_unusual_to_llhttp(data):
    assert whole_request(data) is None


def test_whole_request_agrees_with_llhttp_on_mutated_requests():
    rng = random.Random(13)
    alphabet = b"\r\n:, \t0123456789/?#HTTP/1.0 \x00\x7f\xffabcGETPOSConnection:close keep-alive Content-Length"
    seeds = (_REQUEST, b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n")
    taken = 0
    for _ in range(4000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[at] = rng.choice(alphabet)
            elif action == 1:
                data.insert(at, rng.choice(alphabet))
            else:
                del data[at]
        taken += _request_as_llhttp(bytes(data))
    assert taken > 100
    with pytest.raises(TypeError):
        whole_request("GET / HTTP/1.1\r\n\r\n")
