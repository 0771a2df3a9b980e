"""Attribute names Tracemesh proxies put on their spans, in one place so the proxy that writes them
and the collector (graph, UI) that reads them cannot drift apart.

Standard OpenTelemetry semantic-convention names are used where one exists (HTTP, RPC, peer);
``tracemesh.*`` names carry the per-hop timing breakdown no convention covers. Durations are
integer nanoseconds.
"""

# OpenTelemetry semantic conventions (HTTP, RPC, network, peer).
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS = "rpc.grpc.status_code"
PEER_SERVICE = "peer.service"
ERROR_TYPE = "error.type"
SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"

# Tracemesh's timing breakdown of one hop.
DIRECTION = "tracemesh.direction"  # "inbound" | "outbound"
QUEUE_NS = "tracemesh.queue_ns"  # waited in the proxy's admission queue
CONNECT_NS = "tracemesh.connect_ns"  # 0 when a pooled connection was reused
CONNECTION_REUSED = "tracemesh.connection_reused"
FIRST_BYTE_NS = "tracemesh.first_byte_ns"  # request head sent -> first response byte
BODY_NS = "tracemesh.body_ns"  # first response byte -> last response byte
RETRIES = "tracemesh.retries"
RETRY_DELAY_NS = "tracemesh.retry_delay_ns"  # total backoff slept between attempts
ENDPOINT = "tracemesh.endpoint"  # host:port of the endpoint finally used
ENDPOINT_LOAD = "tracemesh.endpoint_load"  # its peak-EWMA load estimate when chosen
PROXY_ERROR = "tracemesh.proxy_error"  # why the proxy itself failed the request (timeout, shed, ...)

# Resource attribute marking spans that a Tracemesh proxy (not an application) produced.
PROXY_RESOURCE = "tracemesh.proxy"

# Response header naming the proxy error when the proxy answers on its own (503, 504, ...).
PROXY_ERROR_HEADER = "tracemesh-proxy-error"
