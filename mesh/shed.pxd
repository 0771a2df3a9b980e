# Types for Cython (see setup.py): admission, taken and released by every request.
cdef class AdmissionQueue:
    cdef public long max_in_flight, max_queue, in_flight, shed_total
    cdef public double max_wait_s
    cdef public object _waiters
    cpdef bint try_acquire(self)
    cpdef release(self)
