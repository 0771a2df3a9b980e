"""The control gRPC service: ``Register`` (heartbeat) and ``Watch`` (the mesh-state stream).

It runs on its own grpc server and thread pool, apart from OTLP ingest, so thousands of spans per
second never delay a proxy's registration. A ``Watch`` holds one worker thread while it waits for
the next version, so the pool is sized by ``max_watchers``; beyond it calls are refused with
RESOURCE_EXHAUSTED and the proxy retries (keeping its last state meanwhile).
"""

from __future__ import annotations

import time
from concurrent import futures

import grpc

from collector.control.plane import ControlPlane
from collector.control.registry import Instance, RegistrationError, Registry
from spans.control import control_pb2 as pb
from spans.control.rpc import server_handler

# A watch wakes this often without a change to notice a cancelled call or a stopping server.
WATCH_POLL_S = 5.0


class ControlService:
    def __init__(self, plane: ControlPlane, registry: Registry, heartbeat_s: float):
        self.plane = plane
        self.registry = registry
        self.heartbeat_s = heartbeat_s

    def register(self, request: pb.Registration, context: grpc.ServicerContext) -> pb.Lease:
        instance = Instance(request.service, request.instance_id, request.inbound, request.zone)
        try:
            accepted = self.registry.register(instance, time.monotonic())
        except RegistrationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"registration: {exc}")
        if not accepted:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "registry full: too many proxy instances")
        return pb.Lease(lease_seconds=self.registry.lease_s, heartbeat_seconds=self.heartbeat_s)

    def watch(self, request: pb.WatchRequest, context: grpc.ServicerContext):
        if not request.instance_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "watch: instance_id must not be empty")
        epoch, version = request.epoch, request.version
        while context.is_active() and not self.plane.stopping:
            state = self.plane.wait_for_change(epoch, version, WATCH_POLL_S)
            if state is not None:
                epoch, version = state.epoch, state.version
                yield state


def start_control_server(
    plane: ControlPlane, registry: Registry, address: str, heartbeat_s: float, max_watchers: int = 256
) -> grpc.Server:
    service = ControlService(plane, registry, heartbeat_s)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_watchers + 8, thread_name_prefix="control"),
        handlers=(server_handler(service.register, service.watch),),
        maximum_concurrent_rpcs=max_watchers + 8,
    )
    if server.add_insecure_port(address) == 0:
        raise OSError(f"control: cannot listen on {address}")
    server.start()
    return server
