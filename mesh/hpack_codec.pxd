# Types for Cython (see setup.py): the header blocks of every relayed gRPC call, three decoded and
# three encoded per unary call.
cimport cython

cdef Py_ssize_t _STATIC_COUNT, _HUFFMAN_CACHE_LIMIT, _BLOCK_CACHE_LIMIT, _SEEN_LIMIT, ENTRY_OVERHEAD
cdef tuple STATIC_TABLE, _SINGLE_BYTES
cdef dict _STATIC_INDEX, _STATIC_NAME_INDEX, _UNINDEXED_HEADS
cdef frozenset _NEVER_INDEXED_VALUES, _SENSITIVE

@cython.locals(limit=Py_ssize_t)
cdef bytes _encode_int(Py_ssize_t value, int prefix_bits, int first_byte_flags)
cdef bytes _encode_string(bytes value)
@cython.locals(name_index=Py_ssize_t)
cdef bytes _literal_head(bytes name, int prefix_bits, int flags)

cdef class HeaderDecoder:
    cdef public Py_ssize_t allowed_table_size, max_table_size, max_header_list_size, table_size, _pos
    cdef public list entries
    cdef public long long generation
    cdef public dict _huffman, _blocks
    @cython.locals(cached=tuple, generation=cython.longlong)
    cpdef list decode(self, bytes block)
    @cython.locals(end=Py_ssize_t, list_size=Py_ssize_t, byte=int, index=Py_ssize_t, size=Py_ssize_t, header=tuple)
    cdef list _decode(self, bytes block)
    @cython.locals(shift=int, byte=int)
    cdef Py_ssize_t _int_tail(self, bytes block, Py_ssize_t value) except -1
    @cython.locals(dynamic=Py_ssize_t)
    cdef tuple _entry(self, Py_ssize_t index)
    cdef tuple _literal(self, bytes block, Py_ssize_t name_index)
    @cython.locals(byte=int, length=Py_ssize_t, start=Py_ssize_t, end=Py_ssize_t, raw=bytes)
    cdef bytes _string(self, bytes block)
    @cython.locals(size=Py_ssize_t)
    cdef _add(self, tuple header)
    cdef _evict(self, Py_ssize_t room)

cdef class HeaderEncoder:
    cdef public Py_ssize_t capacity, table_size
    cdef public dict inserted, _indexed, _blocks, _by_list
    cdef public set _seen_once
    cdef public object _size_update
    cdef public bint _cacheable
    cpdef set_peer_table_size(self, Py_ssize_t size)
    @cython.locals(key=tuple, block=bytes, same=tuple)
    cpdef bytes encode(self, list headers)
    cdef _forget_blocks(self)
    @cython.locals(out=list, indexed=dict, encoded=bytes, header=tuple, name=bytes, value=bytes, head=bytes)
    cdef bytes _encode(self, headers)
    @cython.locals(static=object, inserted=object, name=bytes, value=bytes, flags=int, prefix=int)
    cdef bytes _encode_new(self, tuple header)
    cdef bint _room_for(self, tuple header)
