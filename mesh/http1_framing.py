"""What the HTTP/1.1 connections (``mesh.http1``) and the exchanges they carry (``mesh.relay``) both
write or signal: the proxy's own error responses, chunked re-framing, and why a downstream connection
stopped reading.

A module of its own because the two compiled modules type each other's classes (their ``.pxd`` files
cimport each other): neither may need a Python name of the other while both are being imported.
"""

from __future__ import annotations

from spans.conventions import PROXY_ERROR_HEADER

# Reasons a downstream connection stops reading; reading resumes when none is left.
PAUSE_PIPELINE = 1  # a previous request on this connection is still being answered
PAUSE_UPSTREAM_FULL = 2  # the upstream connection's write buffer is full
PAUSE_UNSENT_BODY = 4  # the request body is buffered until an upstream connection exists

REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def error_response(status: int, proxy_error: str, close: bool) -> bytes:
    """A response the proxy writes on its own, naming why in the ``tracemesh-proxy-error`` header."""
    body = f"{status} {REASONS[status].decode()}: {proxy_error}\n".encode()
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status]),
            PROXY_ERROR_HEADER.encode(),
            b": ",
            proxy_error.encode(),
            b"\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
