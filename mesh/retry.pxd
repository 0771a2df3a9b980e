# Types for Cython (see setup.py): the retry budget every request deposits into.
cimport cython

cdef long long _SLOTS

cdef class RetryBudget:
    cdef public double ratio, reserve, _slot_s
    cdef long long _deposits[10]  # _SLOTS of them
    cdef long long _withdrawals[10]
    cdef public long long _deposited, _withdrawn, _slot
    @cython.locals(slot=cython.longlong, index=cython.longlong)
    cpdef deposit(self, double now)
    @cython.locals(slot=cython.longlong)
    cpdef bint withdraw(self, now=*)
    cdef long long _slot_at(self, double now)
    @cython.locals(expired=cython.longlong, index=cython.longlong)
    cpdef _advance(self, long long slot)
