from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Registration(_message.Message):
    __slots__ = ("service", "instance_id", "inbound", "zone")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INBOUND_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    service: str
    instance_id: str
    inbound: str
    zone: str
    def __init__(self, service: _Optional[str] = ..., instance_id: _Optional[str] = ..., inbound: _Optional[str] = ..., zone: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_seconds", "heartbeat_seconds")
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: float
    heartbeat_seconds: float
    def __init__(self, lease_seconds: _Optional[float] = ..., heartbeat_seconds: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("instance_id", "epoch", "version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    epoch: str
    version: int
    def __init__(self, instance_id: _Optional[str] = ..., epoch: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class MeshState(_message.Message):
    __slots__ = ("epoch", "version", "destinations")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    version: int
    destinations: _containers.RepeatedCompositeFieldContainer[DestinationState]
    def __init__(self, epoch: _Optional[str] = ..., version: _Optional[int] = ..., destinations: _Optional[_Iterable[_Union[DestinationState, _Mapping]]] = ...) -> None: ...

class DestinationState(_message.Message):
    __slots__ = ("service", "endpoints", "probe_share", "hint")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    PROBE_SHARE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointState]
    probe_share: float
    hint: ScalingHint
    def __init__(self, service: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[EndpointState, _Mapping]]] = ..., probe_share: _Optional[float] = ..., hint: _Optional[_Union[ScalingHint, _Mapping]] = ...) -> None: ...

class EndpointState(_message.Message):
    __slots__ = ("address", "instance_id", "zone", "weight", "ejected", "mean_latency_ms", "error_rate")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    address: str
    instance_id: str
    zone: str
    weight: float
    ejected: bool
    mean_latency_ms: float
    error_rate: float
    def __init__(self, address: _Optional[str] = ..., instance_id: _Optional[str] = ..., zone: _Optional[str] = ..., weight: _Optional[float] = ..., ejected: _Optional[bool] = ..., mean_latency_ms: _Optional[float] = ..., error_rate: _Optional[float] = ...) -> None: ...

class ScalingHint(_message.Message):
    __slots__ = ("rps", "concurrency", "mean_latency_ms", "p95_latency_ms", "latency_target_ms", "current_replicas", "desired_replicas", "reason", "over_capacity")
    RPS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TARGET_MS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DESIRED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OVER_CAPACITY_FIELD_NUMBER: _ClassVar[int]
    rps: float
    concurrency: float
    mean_latency_ms: float
    p95_latency_ms: float
    latency_target_ms: float
    current_replicas: int
    desired_replicas: int
    reason: str
    over_capacity: bool
    def __init__(self, rps: _Optional[float] = ..., concurrency: _Optional[float] = ..., mean_latency_ms: _Optional[float] = ..., p95_latency_ms: _Optional[float] = ..., latency_target_ms: _Optional[float] = ..., current_replicas: _Optional[int] = ..., desired_replicas: _Optional[int] = ..., reason: _Optional[str] = ..., over_capacity: _Optional[bool] = ...) -> None: ...
