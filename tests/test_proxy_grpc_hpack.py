"""The proxy's HPACK codec (mesh/hpack_codec.py) against the `hpack` package, the reference both ways:
whatever our encoder writes, hpack's decoder must read back as the same fields (over many blocks on one
connection, so the dynamic table states must agree), and whatever hpack's encoder writes (Huffman
strings, table insertions, size updates) our decoder must read. Malformed blocks are a HeaderError."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack.struct import NeverIndexedHeaderTuple

from mesh.hpack_codec import HeaderDecoder, HeaderEncoder, HeaderError

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Call"), (b":authority", b"echo:50051"),
           (b"content-type", b"application/grpc"), (b"te", b"trailers"), (b"user-agent", b"grpc-python/1.0")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]


def relayed_blocks(count: int, seed: int = 7) -> list[list[tuple[bytes, bytes]]]:
    """What one connection of a relay sends: requests with per-call values, repeated responses, some
    secrets, some metadata that changes now and then, and the same list objects sent again."""
    rng = random.Random(seed)
    blocks = []
    for n in range(count):
        request = REQUEST + [(b"grpc-timeout", f"{rng.randint(1, 99999)}m".encode()),
                             (b"x-tenant", f"tenant-{rng.randint(0, 5)}".encode()),
                             (b"traceparent", f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01".encode())]
        if n % 7 == 0:
            request.append((b"authorization", b"Bearer secret"))
        if n % 11 == 0:
            request.append((f"x-big-{n}".encode(), b"v" * 900))  # fills the table: insertions stop, nothing evicted
        blocks += [request, RESPONSE, TRAILERS]
    return blocks


def test_what_we_encode_hpack_decodes_to_the_same_fields():
    encoder, reference = HeaderEncoder(), hpack.Decoder()
    for headers in relayed_blocks(300):
        assert reference.decode(encoder.encode(headers), raw=True) == headers


def test_secrets_are_never_indexed_literals():
    encoder, reference = HeaderEncoder(), hpack.Decoder()
    secret = [(b"authorization", b"Bearer secret")]
    for _ in range(3):
        block = encoder.encode(list(secret))
        decoded = reference.decode(block, raw=True)
        assert decoded == secret and isinstance(decoded[0], NeverIndexedHeaderTuple)


def test_a_smaller_peer_table_starts_over():
    encoder, reference = HeaderEncoder(), hpack.Decoder()
    blocks = relayed_blocks(40)
    for headers in blocks[:60]:
        assert reference.decode(encoder.encode(headers), raw=True) == headers
    encoder.set_peer_table_size(256)
    reference.max_allowed_table_size = 256
    for headers in blocks[60:]:
        assert reference.decode(encoder.encode(headers), raw=True) == headers
    assert encoder.table_size <= 256


@pytest.mark.parametrize("huffman", [True, False])
def test_what_hpack_encodes_we_decode(huffman):
    reference, decoder = hpack.Encoder(), HeaderDecoder()
    for n, headers in enumerate(relayed_blocks(200)):
        if n == 150:
            reference.header_table_size = 1024  # a size update in the next block, entries evicted
        assert decoder.decode(reference.encode(headers, huffman=huffman)) == headers


@pytest.mark.parametrize("block, problem", [
    (b"\xff\xff\xff\xff\x0f", "index"),  # an index far beyond any table
    (b"\xbf", "index"),  # dynamic table entry that does not exist
    (b"\x40\x05ab", "past"),  # literal name longer than the block
    (b"\x3f\xff\xff\xff\xff\xff\x01", "integer"),  # table size update with an integer over 28 bits
    (b"\x00\x81\xff", "Huffman"),  # a Huffman string with an EOS-like padding
    (b"\x82\x00", "truncated"),  # literal whose name length is missing
])  # fmt: skip
def test_malformed_blocks_are_header_errors(block, problem):
    with pytest.raises(HeaderError):
        HeaderDecoder().decode(block)
