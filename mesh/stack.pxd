# Types for Cython (see setup.py): what the relay reads of its stack on every request.
from mesh.deadlines cimport Deadlines
from mesh.destination cimport Destination
from mesh.export cimport SpanRecorder
from mesh.metrics cimport ProxyMetrics
from mesh.pool cimport Pools

cdef class Stack:
    cdef public str service, direction
    cdef public int span_kind
    cdef public bint retry_on_status, peer_service
    cdef public SpanRecorder recorder
    cdef public ProxyMetrics metrics
    cdef public Pools pools
    cdef public Deadlines deadlines
    cdef public object loop
    cdef public long long max_body_bytes
    cdef public dict span_attributes_cache, destination_by_authority
    cdef public Destination only_destination
