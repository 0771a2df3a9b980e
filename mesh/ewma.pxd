# Types for Cython (see setup.py): the load estimate every attempt reads and updates.
cimport cython

cdef class PeakEwma:
    cdef public double decay_s, rtt_s, _updated_at
    cdef public long pending
    cpdef double start(self, now=*)
    cpdef double load_and_start(self, double now)
    @cython.locals(at=double, rtt=double, decay=double)
    cpdef finish(self, double t0, now=*)
    @cython.locals(at=double)
    cpdef double load(self, now=*)
