"""Which caller → callee request each span describes: the edges of the service graph.

Two kinds of spans describe a hop between services:

* A Tracemesh proxy's outbound CLIENT span (``tracemesh.direction=outbound``) knows both ends:
  its own service and ``peer.service``. It is one request on that edge, counted at once, with the
  endpoint the proxy chose and the retries it made.
* Applications without a proxy describe a hop with two spans, the caller's CLIENT (or PRODUCER)
  span and the callee's SERVER (or CONSUMER) span, whose parent is the caller's span. As in
  Tempo's service graph, each waits (in arrival order, at most ``wait_ns`` and at most
  ``max_pending`` spans) for its partner from any later batch. A CLIENT span that expires
  unpaired but names its peer (``peer.service``, else ``server.address``) becomes a request to that
  uninstrumented node. A CLIENT span with ``db.system`` is a database call and is counted at once:
  databases send no spans to wait for. A SERVER span without a parent is a request from outside
  the traced system, counted on the edge from the node ``user``. A Zipkin *shared* SERVER span
  (``zipkin.shared``) carries its caller's span id rather than a child id, and pairs by that.

No double counting when proxies and instrumented applications describe the same hop (rule):
the proxy's outbound CLIENT span is the hop. It *claims* its own span id and its parent's; a
CLIENT span whose id is claimed (the application's span for the call the proxy made) and a
SERVER span whose parent is claimed (the callee-side proxy's span under it) are not paired. A
proxy's inbound SERVER span claims its own id, so the application's SERVER span under it is
dropped, but it still pairs with an application CLIENT span: that is the hop from a caller
without a proxy into a proxied service. Claims are remembered as long as pending spans wait (up to
``CLAIMS_PER_PENDING * max_pending`` of them, by hash to keep them small: a proxied request
makes three); an application CLIENT span that did not propagate its context to the proxy cannot
be recognised and is counted once more when it names its peer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import orjson

from collector.graph import _hop_scan
from spans.conventions import (
    DIRECTION,
    ENDPOINT,
    HTTP_METHOD,
    HTTP_STATUS,
    PEER_SERVICE,
    PROXY_ERROR,
    RETRIES,
    RPC_METHOD,
    RPC_SERVICE,
    SERVER_ADDRESS,
    SERVER_PORT,
    SERVICE_INSTANCE_ID,
)
from spans.model import KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, STATUS_ERROR, SpanColumns

# Connection types (an edge is a (client, server, connection) triple).
REQUEST = "request"
MESSAGING = "messaging"
DATABASE = "database"

# The node every request from outside the traced system comes from.
USER_NODE = "user"
# The callee of a proxy span that names none.
UNKNOWN_NODE = "unknown"

DB_SYSTEM = "db.system"
ZIPKIN_SHARED = "zipkin.shared"
# Older semantic-convention names, still sent by many instrumentations and Zipkin clients.
LEGACY_SERVER_ADDRESS = "net.peer.name"
LEGACY_SERVER_PORT = "net.peer.port"
HTTP_ROUTE = "http.route"
LEGACY_HTTP_METHOD = "http.method"
LEGACY_HTTP_STATUS = "http.status_code"
REQUEST_BODY_SIZES = ("http.request.body.size", "http.request_content_length")
RESPONSE_BODY_SIZES = ("http.response.body.size", "http.response_content_length")

OUTBOUND = "outbound"
INBOUND = "inbound"

CLAIMS_PER_PENDING = 3

_CALLER_KINDS = (KIND_CLIENT, KIND_PRODUCER)
# The columns a span is read from: first what pairing needs, then what a ``Side`` is built from.
_SPAN_FIELDS = (
    "kind",
    "trace_id",
    "span_id",
    "parent_span_id",
    "attributes",
    "resource_attributes",
    "service",
    "name",
    "start_ns",
    "duration_ns",
    "status_code",
)
_SIDE_FIELDS = slice(6, None)  # service .. status_code, as ``Side`` takes them
MAX_CACHED_RESOURCES = 4096


def _quoted(*keys: str) -> tuple[str, ...]:
    return tuple(f'"{key}"' for key in keys)


# Per kind of span that describes a hop, the attribute keys that change how it is paired (a
# proxy's direction; a database call; a Zipkin shared span); and the keys that name a caller's peer.
_PAIRING_KEYS = {
    KIND_CLIENT: _quoted(DIRECTION, DB_SYSTEM),
    KIND_PRODUCER: _quoted(DB_SYSTEM),
    KIND_SERVER: _quoted(DIRECTION, ZIPKIN_SHARED),
    KIND_CONSUMER: _quoted(ZIPKIN_SHARED),
}
_PEER_KEYS = _quoted(PEER_SERVICE, SERVER_ADDRESS, LEGACY_SERVER_ADDRESS)
# Whether JSON text may hold one of some quoted keys. A JSON encoder writes a key as its name in
# quotes unless it escapes some of its characters, and then the text holds a backslash; so a False
# is exact, and spares parsing the attributes of most spans that only wait.
_mentions = _hop_scan.mentions
# ``_hop_scan``'s view of the same: per kind number, None or (is a caller, its pairing keys).
_SCAN_KINDS = tuple(
    (kind in _CALLER_KINDS, _PAIRING_KEYS[kind]) if kind in _PAIRING_KEYS else None
    for kind in range(max(_PAIRING_KEYS) + 1)
)


def _attributes(text: str) -> dict:
    attributes = orjson.loads(text)
    return attributes if isinstance(attributes, dict) else {}


class Observation(NamedTuple):
    """One request on one edge, at the detail the windows keep."""

    client: str
    server: str
    connection: str
    endpoint: str
    route: str
    time_ns: int  # when the request completed, as the caller saw it
    duration_ns: int
    error: bool
    retries: int
    request_bytes: int
    response_bytes: int


class Side:
    """One span of a hop, reduced to what its request needs; built only when a request is counted.

    ``endpoint`` is, for a caller, the endpoint its proxy chose or the address it dialled; for a
    callee, its ``service.instance.id``. ``peer`` and ``database`` name what a caller called."""

    __slots__ = (
        "service",
        "kind",
        "start_ns",
        "duration_ns",
        "error",
        "route",
        "endpoint",
        "peer",
        "database",
        "retries",
        "request_bytes",
        "response_bytes",
    )

    def __init__(
        self,
        kind: int,
        service: str,
        name: str,
        start_ns: int,
        duration_ns: int,
        status: int,
        attributes: dict,
        endpoint: str,
    ):
        # Written for speed (a request builds one or two): one lookup per attribute, and the
        # helpers called only for the values that are not what instrumentations usually send.
        get = attributes.get
        self.service = service
        self.kind = kind
        self.start_ns = start_ns
        self.duration_ns = duration_ns
        self.error = status == STATUS_ERROR or PROXY_ERROR in attributes or _server_failure(attributes)
        self.route = route_of(attributes, name)
        self.endpoint = endpoint
        peer = get(PEER_SERVICE)
        self.peer = (peer if peer.__class__ is str else _text(peer)) or _host(attributes)
        database = get(DB_SYSTEM)
        self.database = "" if database is None else _text(database)
        retries = get(RETRIES)
        self.retries = 0 if retries is None else _count(retries)
        self.request_bytes = _body_size(attributes, REQUEST_BODY_SIZES)
        self.response_bytes = _body_size(attributes, RESPONSE_BODY_SIZES)


class HopStats(NamedTuple):
    paired: int
    unpaired_to_peer: int
    unpaired_dropped: int
    evicted: int
    malformed: int
    pending: int


# A span waiting for its partner is a ``_hop_scan.PendingTable`` entry: its deadline, its row as
# ``_SPAN_FIELDS``, and its attributes if they were parsed already, else None. Keeping the row
# rather than a ``Side`` means a span that never pairs (or is dropped by a claim) is never read
# beyond its ids and a key scan; a waiting span holds on to its row's strings, its attribute text
# the largest.


class HopTracker:
    """Turns span batches into ``Observation``s, holding half-hops until their partner arrives."""

    def __init__(self, wait_ns: int, max_pending: int):
        self.wait_ns = wait_ns
        self.max_pending = max_pending
        # (trace id, span id) -> waiting caller span, oldest first.
        self._callers = _hop_scan.PendingTable()
        # (trace id, parent span id) -> waiting callee span, oldest first.
        self._callees = _hop_scan.PendingTable()
        # hash((trace id, span id)) -> deadline: ids a proxy span stands for (see the module docstring).
        self._claimed: OrderedDict[int, int] = OrderedDict()
        self.max_claims = CLAIMS_PER_PENDING * max_pending
        # resource attribute text -> its service.instance.id (few distinct resources send many spans).
        self._instances: dict[str, str] = {}
        self._paired = self._unpaired_to_peer = self._unpaired_dropped = self._evicted = 0
        self._malformed = 0

    def stats(self) -> HopStats:
        return HopStats(
            self._paired,
            self._unpaired_to_peer,
            self._unpaired_dropped,
            self._evicted,
            self._malformed,
            len(self._callers) + len(self._callees),
        )

    def process(self, columns: SpanColumns, now_ns: int, out: list[Observation]) -> None:
        """Append the requests ``columns`` complete to ``out``; a span that cannot be read is
        counted as malformed and skipped, never raised. The native scan stores the half-hops that
        only wait (most of them) and hands every other span of a pairing kind to ``handle``."""

        def handle(span: tuple) -> None:
            pairing_keys = _PAIRING_KEYS.get(span[0])
            if pairing_keys is not None:
                try:
                    self._process_span(span, pairing_keys, now_ns, out)
                except Exception:  # noqa: BLE001 - odd spans must never break ingest
                    self._malformed += 1

        fields = tuple(columns[name] for name in _SPAN_FIELDS)
        _hop_scan.scan(fields, _SCAN_KINDS, self._callers, self._callees, self._claimed, now_ns + self.wait_ns, handle)
        self.expire(now_ns, out)

    def expire(self, now_ns: int, out: list[Observation]) -> None:
        """Give up on half-hops whose wait is over, and on the oldest beyond ``max_pending``."""
        callers, callees, claimed = self._callers, self._callees, self._claimed
        # Beyond the limit, the oldest callees go first, then the oldest callers.
        excess = len(callers) + len(callees) - self.max_pending
        evicted = min(max(excess, 0), len(callees))
        dropped, _ = callees.expire(evicted, now_ns, None)
        self._unpaired_dropped += dropped
        excess -= dropped
        self._evicted += evicted + min(max(excess, 0), len(callers))
        # A caller not parsed yet whose text names no peer key is dropped in the table, no call.
        dropped, unsure = callers.expire(max(excess, 0), now_ns, _PEER_KEYS)
        self._unpaired_dropped += dropped
        for span, attributes in unsure:
            try:
                self._caller_unpaired(span, attributes, out)
            except Exception:  # noqa: BLE001 - its attributes were read only now
                self._malformed += 1
        while claimed and (next(iter(claimed.values())) <= now_ns or len(claimed) > self.max_claims):
            claimed.popitem(last=False)

    # ---- one span ----------------------------------------------------------------------------

    def _process_span(self, span: tuple, pairing_keys: tuple[str, ...], now_ns: int, out: list[Observation]) -> None:
        kind, trace_id, span_id, parent_id, text = span[:5]
        attributes = _attributes(text) if _mentions(text, pairing_keys) else None
        direction = attributes.get(DIRECTION) if attributes else None
        if kind in _CALLER_KINDS:
            if kind == KIND_CLIENT and direction == OUTBOUND:
                side = self._side(span, attributes)
                out.append(_request(side, side.peer or UNKNOWN_NODE, REQUEST))
                self._claim((trace_id, span_id), now_ns)
                if parent_id:
                    self._claim((trace_id, parent_id), now_ns)
            else:
                self._add_caller((trace_id, span_id), span, attributes, now_ns, out)
            return
        if kind == KIND_SERVER and direction == INBOUND:
            self._claim((trace_id, span_id), now_ns)
        if attributes and attributes.get(ZIPKIN_SHARED):
            # Zipkin's shared span: the callee recorded its half under the caller's span id.
            self._add_callee((trace_id, span_id), span, attributes, now_ns, out)
        elif parent_id:
            self._add_callee((trace_id, parent_id), span, attributes, now_ns, out)
        elif kind == KIND_SERVER:
            out.append(_request_from_outside(self._side(span, attributes)))

    def _add_caller(self, key, span: tuple, attributes: dict | None, now_ns: int, out: list[Observation]) -> None:
        if hash(key) in self._claimed:
            return
        if attributes and attributes.get(DB_SYSTEM):
            side = self._side(span, attributes)
            out.append(_request(side, side.peer or side.database, DATABASE))
            return
        waiting = self._callees.pop(key)
        if waiting is not None:
            self._paired += 1
            out.append(_paired_request(self._side(span, attributes), self._side(waiting[1], waiting[2])))
        else:
            self._callers.put(key, now_ns + self.wait_ns, span, attributes)

    def _add_callee(self, key, span: tuple, attributes: dict | None, now_ns: int, out: list[Observation]) -> None:
        if hash(key) in self._claimed:
            return
        waiting = self._callers.pop(key)
        if waiting is not None:
            self._paired += 1
            out.append(_paired_request(self._side(waiting[1], waiting[2]), self._side(span, attributes)))
        else:
            self._callees.put(key, now_ns + self.wait_ns, span, attributes)

    def _claim(self, key, now_ns: int) -> None:
        self._callers.pop(key)
        self._callees.pop(key)
        claim = hash(key)
        self._claimed[claim] = now_ns + self.wait_ns
        self._claimed.move_to_end(claim)

    def _caller_unpaired(self, span: tuple, attributes: dict | None, out: list[Observation]) -> None:
        if span[0] == KIND_CLIENT and (attributes is not None or _mentions(span[4], _PEER_KEYS)):
            side = self._side(span, attributes)
            if side.peer:
                self._unpaired_to_peer += 1
                out.append(_request(side, side.peer, REQUEST))
                return
        self._unpaired_dropped += 1

    def _side(self, span: tuple, attributes: dict | None) -> Side:
        """The ``Side`` of a span row, parsing its attributes unless that was done already."""
        if attributes is None:
            attributes = _attributes(span[4])
        if span[0] in _CALLER_KINDS:
            endpoint = _text(attributes.get(ENDPOINT)) or _address(attributes)
        else:
            endpoint = self._instance(span[5])
        return Side(span[0], *span[_SIDE_FIELDS], attributes, endpoint)

    def _instance(self, resource_text: str) -> str:
        """The ``service.instance.id`` of a resource, parsed once per distinct resource text."""
        instance = self._instances.get(resource_text)
        if instance is None:
            resource = orjson.loads(resource_text)
            instance = _text(resource.get(SERVICE_INSTANCE_ID)) if isinstance(resource, dict) else ""
            if len(self._instances) >= MAX_CACHED_RESOURCES:
                self._instances.clear()
            self._instances[resource_text] = instance
        return instance


# ---- the request each kind of hop makes ------------------------------------------------------


def _request(client: Side, server: str, connection: str) -> Observation:
    """A request known from the caller's span alone."""
    return Observation(
        client.service,
        server,
        connection,
        client.endpoint,
        client.route,
        client.start_ns + client.duration_ns,
        client.duration_ns,
        client.error,
        client.retries,
        client.request_bytes,
        client.response_bytes,
    )


def _request_from_outside(server: Side) -> Observation:
    return Observation(
        USER_NODE,
        server.service,
        REQUEST,
        server.endpoint,
        server.route,
        server.start_ns + server.duration_ns,
        server.duration_ns,
        server.error,
        server.retries,
        server.request_bytes,
        server.response_bytes,
    )


def _paired_request(client: Side, server: Side) -> Observation:
    """A caller's span and its callee's. Latency is the caller's view of the request; across a
    queue (PRODUCER → CONSUMER) it runs from publishing to the end of consuming."""
    if client.kind == KIND_PRODUCER:
        connection = MESSAGING
        duration_ns = max(0, server.start_ns + server.duration_ns - client.start_ns)
    else:
        connection = REQUEST
        duration_ns = client.duration_ns
    return Observation(
        client.service,
        server.service,
        connection,
        server.endpoint or client.endpoint,
        server.route,
        client.start_ns + duration_ns,
        duration_ns,
        client.error or server.error,
        client.retries or server.retries,
        client.request_bytes or server.request_bytes,
        client.response_bytes or server.response_bytes,
    )


# ---- reading attributes ----------------------------------------------------------------------


def route_of(attributes: dict, span_name: str) -> str:
    """``GET /users/{id}`` from ``http.route``, ``pkg.Service/Method`` for RPC, else the span name."""
    route = attributes.get(HTTP_ROUTE)
    if route:
        method = attributes.get(HTTP_METHOD) or attributes.get(LEGACY_HTTP_METHOD)
        return f"{method} {route}" if method else _text(route)
    rpc_method = attributes.get(RPC_METHOD)
    if rpc_method:
        return f"{_text(attributes.get(RPC_SERVICE))}/{rpc_method}"
    return span_name


def _host(attributes: dict) -> str:
    return _text(attributes.get(SERVER_ADDRESS) or attributes.get(LEGACY_SERVER_ADDRESS))


def _address(attributes: dict) -> str:
    """``host:port`` the caller dialled, or just the host."""
    host = _host(attributes)
    port = attributes.get(SERVER_PORT, attributes.get(LEGACY_SERVER_PORT))
    return f"{host}:{port}" if host and port is not None else host


def _server_failure(attributes: dict) -> bool:
    """An HTTP 5xx answer, even on a span whose status was left unset (Zipkin sends it as text)."""
    status = attributes.get(HTTP_STATUS, attributes.get(LEGACY_HTTP_STATUS))
    if status.__class__ is int:
        return status >= 500
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    return isinstance(status, int) and status >= 500


def _text(value) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _count(value) -> int:
    """A non-negative whole number from an attribute value, 0 when it is not one."""
    if value.__class__ is int:
        return value if 0 <= value < 2**63 else 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**63:
        return 0
    return int(value)


def _body_size(attributes: dict, names: tuple[str, str]) -> int:
    current, legacy = names
    if current in attributes:
        return _count(attributes[current])
    return _count(attributes[legacy]) if legacy in attributes else 0
