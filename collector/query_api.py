"""The collector's read side over HTTP: services, operations, one trace, trace search.

Everything a user types arrives here as text, so this module is also where that text is checked:
durations with units, RFC 3339 or Unix-microsecond times, ``key=value`` tags, trace ids. A bad
value is a 400 naming the parameter, before anything reaches the store; the store then binds the
checked values as query parameters. Store calls block, so they run in the default executor and
never stall the event loop that also serves ingest.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import orjson
from aiohttp import web

from collector.store import SpanStore, StoreUnavailable, TraceQuery
from collector.trace_json import name_of, trace_json
from spans.model import KIND_NAMES, row_count

OPENAPI_PATH = Path(__file__).with_name("openapi.json")

SEARCH_LIMIT_DEFAULT = 20
SEARCH_LIMIT_MAX = 1000
STORE_RETRY_AFTER_SECONDS = 5
# Largest nanosecond count ClickHouse's UInt64 columns and the API's 64-bit ints can both hold.
MAX_NANOSECONDS = 2**63 - 1

STORE_KEY = web.AppKey("query_store", SpanStore)

NANOSECONDS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # MICRO SIGN
    "μs": 1_000,  # GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)"
DURATION_PATTERN = re.compile(f"(?:{_DURATION_PART})+", re.ASCII)
DURATION_PART_PATTERN = re.compile(_DURATION_PART, re.ASCII)

RFC3339_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

TRACE_ID_PATTERN = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")

SEARCH_PARAMETERS = ("service", "operation", "tag", "minDuration", "maxDuration", "start", "end", "limit", "error")


class BadParameter(ValueError):
    """A query value that cannot mean anything; its message names the parameter."""


def setup_query_api(app: web.Application, store: SpanStore) -> None:
    """Add the query routes and the OpenAPI document to ``app``, reading from ``store``."""
    app[STORE_KEY] = store
    app.router.add_get("/api/v1/services", list_services)
    app.router.add_get("/api/v1/services/{service}/operations", list_operations)
    app.router.add_get("/api/v1/traces", search_traces)
    app.router.add_get("/api/v1/traces/{traceId}", get_trace)
    openapi_body = OPENAPI_PATH.read_bytes()

    async def openapi_document(request: web.Request) -> web.Response:
        check_parameters(request, ())
        return web.Response(body=openapi_body, content_type="application/json")

    app.router.add_get("/api/v1/openapi.json", openapi_document)


# ---- handlers ----------------------------------------------------------------------------------


async def list_services(request: web.Request) -> web.Response:
    check_parameters(request, ())
    services = await call_store(request, lambda store: store.services())
    return json_response({"services": services})


async def list_operations(request: web.Request) -> web.Response:
    check_parameters(request, ())
    service = request.match_info["service"]
    operations = await call_store(request, lambda store: store.operations(service))
    return json_response(
        {"operations": [{"name": name, "spanKind": name_of(KIND_NAMES, kind)} for name, kind in operations]}
    )


async def get_trace(request: web.Request) -> web.Response:
    check_parameters(request, ())
    trace_id = parse_trace_id(request.match_info["traceId"])

    def read(store: SpanStore) -> dict | None:
        columns = store.trace(trace_id)
        return trace_json(columns) if row_count(columns) else None

    trace = await call_store(request, read)
    if trace is None:
        raise json_error(web.HTTPNotFound, f"trace {trace_id} not found")
    return json_response(trace)


async def search_traces(request: web.Request) -> web.Response:
    check_parameters(request, SEARCH_PARAMETERS)
    query = parse_search(request.query)
    # Shaping up to `limit` whole traces is real work too: it stays off the loop with the query.
    traces = await call_store(request, lambda store: [trace_json(columns) for columns in store.search(query)])
    return json_response({"traces": traces})


# ---- plumbing ----------------------------------------------------------------------------------


async def call_store(request: web.Request, call: Callable[[SpanStore], object]):
    """``call(store)`` in the default executor; a store that went away is a 503 with Retry-After."""
    store = request.app[STORE_KEY]
    try:
        return await asyncio.get_running_loop().run_in_executor(None, call, store)
    except StoreUnavailable as exc:
        raise json_error(
            web.HTTPServiceUnavailable,
            f"span store unavailable: {exc}",
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        ) from exc


def check_parameters(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise json_error(web.HTTPBadRequest, f"unknown parameter {name!r} (known parameters: {known})")


def json_response(payload: object) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def json_error(kind: type[web.HTTPException], message: str, headers: dict | None = None) -> web.HTTPException:
    return kind(text=orjson.dumps({"error": message}).decode(), content_type="application/json", headers=headers)


def parse_trace_id(text: str) -> str:
    """A 16- or 32-hex-digit id in any case, as the 32 lowercase digits the store keeps.

    A 64-bit id is the low half of a 128-bit one whose high half is zero, as Zipkin pads it.
    """
    if not TRACE_ID_PATTERN.fullmatch(text):
        raise json_error(web.HTTPBadRequest, f"trace id {text!r} is not 16 or 32 hexadecimal digits")
    return text.lower().rjust(32, "0")


# ---- search parameters -------------------------------------------------------------------------


def parse_search(params) -> TraceQuery:
    """The ``TraceQuery`` a search's query string asks for; an HTTP 400 when any value is bad."""
    try:
        return search_query(params)
    except BadParameter as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc


def single_parameter(params, name: str) -> str | None:
    """The value of a parameter given at most once; an empty value counts as not given, so a form
    may submit all its fields."""
    values = [value for value in params.getall(name, []) if value != ""]
    if len(values) > 1:
        raise BadParameter(f"{name}: given {len(values)} times, at most once allowed")
    return values[0] if values else None


def search_query(params) -> TraceQuery:
    def parsed(name: str, parse: Callable[[str, str], object]):
        value = single_parameter(params, name)
        return None if value is None else parse(name, value)

    min_duration = parsed("minDuration", parse_duration)
    max_duration = parsed("maxDuration", parse_duration)
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise BadParameter("minDuration is greater than maxDuration")
    start = parsed("start", parse_time)
    end = parsed("end", parse_time)
    if start is not None and end is not None and start > end:
        raise BadParameter("start is after end")
    limit = parsed("limit", parse_limit)
    return TraceQuery(
        service=single_parameter(params, "service"),
        operation=single_parameter(params, "operation"),
        tags=tuple(parse_tag("tag", value) for value in params.getall("tag", []) if value != ""),
        min_duration_ns=min_duration,
        max_duration_ns=max_duration,
        start_ns=start,
        end_ns=end,
        error=parsed("error", parse_bool),
        limit=SEARCH_LIMIT_DEFAULT if limit is None else limit,
    )


def parse_duration(name: str, text: str) -> int:
    """``800ns``, ``250us``, ``1.5ms``, ``2s``, ``5m``, ``1h30m`` → nanoseconds (fractions below 1 ns dropped)."""
    if not DURATION_PATTERN.fullmatch(text):
        raise BadParameter(
            f"{name}: {text!r} is not a duration; use a number with a unit (ns, us, ms, s, m, h), e.g. 250us or 1.5ms"
        )
    total = sum(
        Decimal(number) * NANOSECONDS_PER_UNIT[unit] for number, unit in DURATION_PART_PATTERN.findall(text)
    )
    if total > MAX_NANOSECONDS:
        raise BadParameter(f"{name}: {text!r} is too long a duration")
    return int(total)


def parse_time(name: str, text: str) -> int:
    """An RFC 3339 timestamp (``2026-11-25T01:34:03.5Z``) or Unix microseconds → Unix nanoseconds."""
    microseconds = whole_number(text)
    nanoseconds = rfc3339_nanoseconds(name, text) if microseconds is None else microseconds * 1_000
    if not 0 <= nanoseconds <= MAX_NANOSECONDS:
        raise BadParameter(f"{name}: {text!r} is outside the range of Unix nanosecond timestamps")
    return nanoseconds


def rfc3339_nanoseconds(name: str, text: str) -> int:
    match = RFC3339_PATTERN.fullmatch(text)
    if not match:
        raise BadParameter(
            f"{name}: {text!r} is neither an RFC 3339 timestamp (e.g. 2026-11-25T01:34:03Z) nor Unix microseconds"
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset in ("Z", "z"):
        zone = timezone.utc
    else:
        sign = 1 if offset[0] == "+" else -1
        zone_hours, zone_minutes = int(offset[1:3]), int(offset[4:6])
        if zone_hours > 23 or zone_minutes > 59:
            raise BadParameter(f"{name}: {text!r} has an impossible UTC offset")
        zone = timezone(sign * timedelta(hours=zone_hours, minutes=zone_minutes))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=zone)
    except ValueError as exc:
        raise BadParameter(f"{name}: {text!r} is not a real date and time ({exc})") from exc
    whole_seconds = (moment - UNIX_EPOCH) // timedelta(seconds=1)
    return whole_seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def parse_tag(name: str, text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise BadParameter(f"{name}: {text!r} is not key=value (e.g. tag=http.status_code=500)")
    return key, value


def parse_limit(name: str, text: str) -> int:
    limit = whole_number(text)
    if limit is None or not 1 <= limit <= SEARCH_LIMIT_MAX:
        raise BadParameter(f"{name}: {text!r} is not a whole number from 1 to {SEARCH_LIMIT_MAX}")
    return limit


def parse_bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise BadParameter(f"{name}: {text!r} is neither true nor false")
    return lowered == "true"


def whole_number(text: str) -> int | None:
    """The value of a run of ASCII digits, else None; runs too long for 64 bits all count as 2**64."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    return 2**64 if len(significant) > 20 else int(significant or "0")
