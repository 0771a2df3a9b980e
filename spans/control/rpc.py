"""The ``tracemesh.control.v1.Control`` service bound with grpc's generic API (no I/O here).

Both sides import grpc only when they use the control stream, so a proxy without ``--control``
never loads it.
"""

from __future__ import annotations

from spans.control import control_pb2 as pb

SERVICE = "tracemesh.control.v1.Control"
REGISTER = f"/{SERVICE}/Register"
WATCH = f"/{SERVICE}/Watch"


def server_handler(register, watch):
    """A grpc generic handler: ``register(Registration, context) -> Lease`` and
    ``watch(WatchRequest, context) -> iterator of MeshState``."""
    import grpc

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Register": grpc.unary_unary_rpc_method_handler(
                register, request_deserializer=pb.Registration.FromString, response_serializer=pb.Lease.SerializeToString
            ),
            "Watch": grpc.unary_stream_rpc_method_handler(
                watch, request_deserializer=pb.WatchRequest.FromString, response_serializer=pb.MeshState.SerializeToString
            ),
        },
    )


class ControlStub:
    """Client side of the two methods on a grpc channel."""

    def __init__(self, channel):
        self.register = channel.unary_unary(
            REGISTER, request_serializer=pb.Registration.SerializeToString, response_deserializer=pb.Lease.FromString
        )
        self.watch = channel.unary_stream(
            WATCH, request_serializer=pb.WatchRequest.SerializeToString, response_deserializer=pb.MeshState.FromString
        )
