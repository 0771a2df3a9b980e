# Types for Cython (see setup.py): the retry budget every request deposits into.
cdef class RetryBudget:
    cdef public double ratio, reserve, _slot_s
    cdef public list _deposits, _withdrawals
    cdef public long long _deposited, _withdrawn, _slot
    cpdef deposit(self, now=*)
    cpdef bint withdraw(self, now=*)
    cpdef _advance(self, long long slot)
