# Types for Cython (see setup.py): the balancers the relay asks for an endpoint on every attempt.
cimport cython

from mesh.breaker cimport FailureAccrual
from mesh.ewma cimport PeakEwma

cdef class Endpoint:
    cdef public str address
    cdef public PeakEwma ewma
    cdef public FailureAccrual breaker
    cdef public double weight
    cpdef double cost(self, double now)

cdef class _EndpointSet:
    cdef public object _new_endpoint
    cdef public list endpoints
    cdef public double probe_share
    cpdef Endpoint pick(self, now=*, exclude=*)

cdef class P2CBalancer(_EndpointSet):
    cdef public object _random
    @cython.locals(endpoint=Endpoint, breaker=FailureAccrual, a=Endpoint, b=Endpoint, count=Py_ssize_t)
    cpdef Endpoint pick(self, now=*, exclude=*)
    cpdef Endpoint _pick_among_usable(self, double now, exclude)
    @cython.locals(first=Py_ssize_t, second=Py_ssize_t)
    cpdef tuple _draw_two(self, list candidates, Py_ssize_t count)

cdef class RoundRobinBalancer(_EndpointSet):
    cdef public Py_ssize_t _next
    cpdef Endpoint pick(self, now=*, exclude=*)
