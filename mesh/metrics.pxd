# Types for Cython (see setup.py): the observation every request makes.
cimport cython

cdef class _Target:
    cdef public object latency
    cdef public dict grpc_outcomes

cdef class ProxyMetrics:
    cdef public object registry
    cdef public dict _targets, _target_index, _proxy_errors, _retries, _shed, _ejections
    @cython.locals(by_destination=dict, by_endpoint=dict, target=_Target)
    cpdef observe_request(self, str direction, str destination, str endpoint, int status, str error_kind, double seconds, long retries=*, grpc_status=*)
    cpdef _Target _new_target(self, str direction, str destination, str endpoint)
