# Types for Cython (see setup.py): what the relay reads of a destination on every request.
from mesh.balance cimport _EndpointSet
from mesh.retry cimport RetryBudget
from mesh.shed cimport AdmissionQueue

cdef class Destination:
    cdef public str name
    cdef public object policy
    cdef public _EndpointSet balancer
    cdef public RetryBudget retry_budget
    cdef public AdmissionQueue admission
