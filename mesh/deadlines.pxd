# Types for Cython (see setup.py): the set every request's deadline joins and leaves.
cdef class Deadlines:
    cdef public double tick_s
    cdef public set pending
