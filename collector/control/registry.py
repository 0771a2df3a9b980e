"""Which proxy instances are in the mesh: registration is discovery, a lapsed lease removes one.

Every proxy re-registers each heartbeat interval with its full registration (an idempotent
upsert), so a restarted collector rebuilds the registry within one interval, and nothing but the
lease decides whether an instance is still there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Instance:
    service: str
    instance_id: str
    inbound: str  # host:port, '' for a proxy that only calls out
    zone: str


class RegistrationError(ValueError):
    """A registration that cannot be used; the message names the field."""


def check_registration(service: str, instance_id: str, inbound: str) -> None:
    if not service:
        raise RegistrationError("service must not be empty")
    if not instance_id:
        raise RegistrationError("instance_id must not be empty")
    if inbound:
        host, sep, port = inbound.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RegistrationError(f"inbound {inbound!r} is not host:port")


class Registry:
    """Instances with leases; thread-safe (gRPC handler threads write, the plane's tick reads)."""

    def __init__(self, lease_s: float = 10.0, max_instances: int = 10_000):
        self.lease_s = lease_s
        self.max_instances = max_instances
        self._lock = threading.Lock()
        self._instances: dict[str, tuple[float, Instance]] = {}  # instance id -> (expiry, instance)

    def register(self, instance: Instance, now: float) -> bool:
        """Add or renew ``instance``; False when the registry is full of other instances."""
        check_registration(instance.service, instance.instance_id, instance.inbound)
        with self._lock:
            if instance.instance_id not in self._instances and len(self._instances) >= self.max_instances:
                return False
            self._instances[instance.instance_id] = (now + self.lease_s, instance)
            return True

    def live(self, now: float) -> list[Instance]:
        """Instances whose lease has not run out (expired ones are dropped)."""
        with self._lock:
            for instance_id in [i for i, (expiry, _) in self._instances.items() if expiry <= now]:
                del self._instances[instance_id]
            return [instance for _, instance in self._instances.values()]
