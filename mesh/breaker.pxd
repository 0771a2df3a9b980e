# Types for Cython (see setup.py): failure accrual, read by the balancer on every pick.
cdef class FailureAccrual:
    cdef public long threshold, consecutive_failures, ejections
    cdef public double min_backoff_s, max_backoff_s, _backoff_s, _until, _probe_sent_at
    cdef public bint ejected
    cpdef success(self)
    cpdef failure(self, double now, sent_at=*)
    cpdef bint available(self, double now)
    cpdef _eject(self, double now)
