# Types for Cython (see setup.py): the idle connections every attempt takes one from.
cdef class EndpointPool:
    cdef public str address, host
    cdef public object port
    cdef public double connect_timeout_s
    cdef public Py_ssize_t max_idle
    cdef public list idle
    cpdef take_idle(self)
    cpdef discard(self, conn)

cdef class Pools:
    cdef public double connect_timeout_s, idle_timeout_s
    cdef public dict by_address
    cpdef EndpointPool get(self, address, connect_timeout_s=*)
