"""The control API shared by the collector (server) and the proxies (client).

``control_pb2`` is generated from proto/tracemesh/control/v1/control.proto (``python proto/generate.py``);
``rpc`` binds its two methods to grpc without generated service stubs.
"""
