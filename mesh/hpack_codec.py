"""HPACK (RFC 7541) for the HTTP/2 relay: the header codec is most of a proxied gRPC call's CPU.

The `hpack` package spends about 60 µs per header block here (generic table search, a debug log call
per header), and a relayed call decodes three blocks and encodes three. A proxy sees the same few header
lists over and over, so this codec is built for that:

- decoding is a single pass with plain list indexing; Huffman-coded strings (what gRPC peers send)
  are decoded once and then looked up in a bounded cache, and so are whole blocks that did not change
  the dynamic table (a server's usual response headers and trailers are such blocks);
- encoding never Huffman-codes, and adds a header to the dynamic table only the second time it is seen
  and only while the table has room. Nothing is ever evicted, so an entry's index is plain arithmetic
  and a repeated header costs one dict lookup. Values that change on every call (trace ids, deadlines)
  are never indexed, so they cannot crowd out the ones that repeat; their names' encodings are made
  once. Whole blocks without such values are cached too, while the table is unchanged (a block with
  one, such as every relayed request with its new traceparent, would only push the others out).

Decoded header lists may be shared between calls (the block cache): treat them as read-only.

The static table and the Huffman decoder come from the `hpack` package. The module is compiled by
Cython (``hpack_codec.pxd``: extension types, typed fields, the decoder's byte loop on C integers):
three decodes and three encodes per relayed call were a large part of the interpreted relay.
"""

from __future__ import annotations

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
DEFAULT_TABLE_SIZE = 4096
ENTRY_OVERHEAD = 32

_STATIC_INDEX = {entry: index for index, entry in reversed(list(enumerate(STATIC_TABLE, 1)))}
_STATIC_NAME_INDEX = {name: index for index, (name, _value) in reversed(list(enumerate(STATIC_TABLE, 1)))}
_STATIC_COUNT = len(STATIC_TABLE)

# Values that differ on (nearly) every request: indexing them would only fill the table.
_NEVER_INDEXED_VALUES = frozenset((
    b"traceparent", b"tracestate", b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid",
    b"grpc-timeout", b"grpc-message", b"content-length", b"date",
))
# Secrets: sent as never-indexed literals so no intermediary stores them in a compression table.
_SENSITIVE = frozenset((b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"))

_HUFFMAN_CACHE_LIMIT = 4096
_BLOCK_CACHE_LIMIT = 256
_SEEN_LIMIT = 1024


class HeaderError(Exception):
    """A header block that cannot be decoded: a connection error (COMPRESSION_ERROR) in HTTP/2."""


_SINGLE_BYTES = tuple(bytes((byte,)) for byte in range(256))


def _encode_int(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return _SINGLE_BYTES[first_byte_flags | value]
    out = bytearray((first_byte_flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(value: bytes) -> bytes:
    return _encode_int(len(value), 7, 0) + value


def _literal_head(name: bytes, prefix_bits: int, flags: int) -> bytes:
    """The start of a literal field: its name as a static table index, or as a string."""
    name_index = _STATIC_NAME_INDEX.get(name, 0)
    if name_index:
        return _encode_int(name_index, prefix_bits, flags)
    return _encode_int(0, prefix_bits, flags) + _encode_string(name)


# The names whose fields are never indexed -> their literal heads (not indexed, or never indexed for
# secrets). The static entries of these names all have empty values: a field with a value is never
# one of them, so its encoding is always this head and the value.
_UNINDEXED_HEADS = {name: _literal_head(name, 4, 0x10 if name in _SENSITIVE else 0x00)
                    for name in _NEVER_INDEXED_VALUES | _SENSITIVE}


class HeaderDecoder:
    """Decodes the header blocks one peer sends (one per connection: the dynamic table is shared state)."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 256 * 1024):
        self.allowed_table_size = max_table_size  # what our SETTINGS allow the peer to use
        self.max_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        self.entries: list[tuple[bytes, bytes]] = []  # newest last
        self.table_size = 0
        self.generation = 0  # bumped on every dynamic table change
        self._huffman: dict[bytes, bytes] = {}
        self._blocks: dict[bytes, tuple[int, list]] = {}
        self._pos = 0  # read position in the block being decoded

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        cached = self._blocks.get(block)
        if cached is not None and cached[0] == self.generation:
            return cached[1]
        generation = self.generation
        try:
            headers = self._decode(block)
        except IndexError:
            raise HeaderError("header block truncated or index out of range") from None
        if generation == self.generation:
            if len(self._blocks) >= _BLOCK_CACHE_LIMIT:
                self._blocks.clear()
            self._blocks[block] = (generation, headers)
        return headers

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers = []
        end = len(block)
        list_size = 0
        self._pos = 0
        while self._pos < end:
            byte = block[self._pos]
            self._pos += 1
            if byte & 0x80:  # indexed field
                index = byte & 0x7F
                if index == 0x7F:
                    index = self._int_tail(block, index)
                header = self._entry(index)
            elif byte & 0x40:  # literal, added to the table
                index = byte & 0x3F
                if index == 0x3F:
                    index = self._int_tail(block, index)
                header = self._literal(block, index)
                self._add(header)
            elif byte & 0x20:  # dynamic table size update
                size = byte & 0x1F
                if size == 0x1F:
                    size = self._int_tail(block, size)
                if size > self.allowed_table_size:
                    raise HeaderError(f"table size update to {size} exceeds the allowed {self.allowed_table_size}")
                self.max_table_size = size
                self.generation += 1
                self._evict(0)
                continue
            else:  # literal not indexed / never indexed
                index = byte & 0x0F
                if index == 0x0F:
                    index = self._int_tail(block, index)
                header = self._literal(block, index)
            list_size += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
            if list_size > self.max_header_list_size:
                raise HeaderError(f"header list larger than {self.max_header_list_size} bytes")
            headers.append(header)
        return headers

    def _int_tail(self, block: bytes, value: int) -> int:
        """The rest of an integer whose prefix was all ones (RFC 7541 5.1), read at the cursor."""
        shift = 0
        while True:
            byte = block[self._pos]
            self._pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 28:
                raise HeaderError("integer too large")

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_COUNT:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_COUNT
        if index == 0 or dynamic > len(self.entries):
            raise HeaderError(f"header table index {index} out of range")
        return self.entries[len(self.entries) - dynamic]

    def _literal(self, block: bytes, name_index: int) -> tuple[bytes, bytes]:
        if name_index:
            name = self._entry(name_index)[0]
        else:
            name = self._string(block)
        return (name, self._string(block))

    def _string(self, block: bytes) -> bytes:
        byte = block[self._pos]
        self._pos += 1
        length = byte & 0x7F
        if length == 0x7F:
            length = self._int_tail(block, length)
        start = self._pos
        end = start + length
        if end > len(block):
            raise HeaderError("string runs past the header block")
        self._pos = end
        raw = block[start:end]
        if not byte & 0x80:
            return raw
        value = self._huffman.get(raw)
        if value is None:
            try:
                value = decode_huffman(raw)
            except Exception as exc:  # the library raises its own decoding error type
                raise HeaderError(f"bad Huffman string: {exc}") from None
            if len(self._huffman) >= _HUFFMAN_CACHE_LIMIT:
                self._huffman.clear()
            self._huffman[raw] = value
        return value

    def _add(self, header: tuple[bytes, bytes]) -> None:
        self.generation += 1
        size = len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
        if size > self.max_table_size:
            self.entries.clear()
            self.table_size = 0
            return
        self._evict(size)
        self.entries.append(header)
        self.table_size += size

    def _evict(self, room: int) -> None:
        entries = self.entries
        while entries and self.table_size + room > self.max_table_size:
            name, value = entries.pop(0)
            self.table_size -= len(name) + len(value) + ENTRY_OVERHEAD


class HeaderEncoder:
    """Encodes header blocks toward one peer; indexes repeating headers, never evicts (see module doc)."""

    def __init__(self) -> None:
        self.capacity = DEFAULT_TABLE_SIZE  # what we use of the peer's table
        self.table_size = 0
        self.inserted: dict[tuple[bytes, bytes], int] = {}  # header -> insertion number
        self._indexed: dict[tuple[bytes, bytes], bytes] = {}  # header -> its encoding, while the table is unchanged
        self._seen_once: set[tuple[bytes, bytes]] = set()
        self._size_update: int | None = None
        self._blocks: dict[tuple, bytes] = {}  # header list -> block, while the table is unchanged
        self._by_list: dict[int, tuple[list, bytes]] = {}  # id of a list given before -> (it, its block), as _blocks
        self._cacheable = True  # the block being encoded changed no state and has no per-request value

    def set_peer_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE. Smaller than what we use: start over with an empty table."""
        if size < self.capacity or size < self.table_size:
            self.capacity = size
            self.table_size = 0
            self.inserted.clear()
            self._indexed.clear()
            self._forget_blocks()
            self._size_update = size

    def encode(self, headers: list) -> bytes:
        """The block for ``headers``. A list must not change once it has been encoded: blocks are also
        kept by the list itself, found by identity (the decoder hands out the same list for a block it
        has seen before, and the relay never changes a list it has sent)."""
        same = self._by_list.get(id(headers))
        if same is not None and same[0] is headers:
            return same[1]
        if headers and headers[-1][1] and headers[-1][0] in _NEVER_INDEXED_VALUES:
            return self._encode(headers)  # ends in a per-request value (a relayed request's traceparent): never kept
        key = tuple(headers)
        block = self._blocks.get(key)
        if block is None:
            self._cacheable = self._size_update is None
            block = self._encode(headers)
            if not self._cacheable:
                return block
            if len(self._blocks) >= _BLOCK_CACHE_LIMIT:
                self._forget_blocks()
            self._blocks[key] = block
        if len(self._by_list) >= _BLOCK_CACHE_LIMIT:
            self._by_list.clear()
        self._by_list[id(headers)] = (headers, block)
        return block

    def _forget_blocks(self) -> None:
        self._blocks.clear()
        self._by_list.clear()

    def _encode(self, headers) -> bytes:
        out = []
        if self._size_update is not None:
            out.append(_encode_int(self._size_update, 5, 0x20))
            self._size_update = None
        indexed = self._indexed
        for header in headers:
            encoded = indexed.get(header)
            if encoded is not None:
                out.append(encoded)
                continue
            name, value = header
            head = _UNINDEXED_HEADS.get(name)
            if head is not None and value:  # a field never indexed: its name's head, then the value
                if name not in _SENSITIVE:
                    self._cacheable = False
                out.append(head)
                out.append(_encode_int(len(value), 7, 0))
                out.append(value)
            else:
                out.append(self._encode_new(header))
        return b"".join(out)

    def _encode_new(self, header: tuple[bytes, bytes]) -> bytes:
        name, value = header
        static = _STATIC_INDEX.get(header)
        if static is not None:
            encoded = _encode_int(static, 7, 0x80)
            self._indexed[header] = encoded
            return encoded
        inserted = self.inserted.get(header)
        if inserted is not None:  # indexed earlier; the cache was cleared by a later insertion
            encoded = _encode_int(_STATIC_COUNT + len(self.inserted) - inserted, 7, 0x80)
            self._indexed[header] = encoded
            return encoded
        if name in _SENSITIVE:
            flags, prefix = 0x10, 4
        elif name not in _NEVER_INDEXED_VALUES and header in self._seen_once and self._room_for(header):
            flags, prefix = 0x40, 6
            self.inserted[header] = len(self.inserted)
            self.table_size += len(name) + len(value) + ENTRY_OVERHEAD
            self._indexed.clear()  # every older entry's index just moved by one
            self._forget_blocks()
            self._cacheable = False
        else:
            flags, prefix = 0x00, 4
            if name not in _NEVER_INDEXED_VALUES and header not in self._seen_once:
                if len(self._seen_once) >= _SEEN_LIMIT:
                    self._seen_once.clear()
                self._seen_once.add(header)
                self._cacheable = False
        return _literal_head(name, prefix, flags) + _encode_string(value)

    def _room_for(self, header: tuple[bytes, bytes]) -> bool:
        return self.table_size + len(header[0]) + len(header[1]) + ENTRY_OVERHEAD <= self.capacity
