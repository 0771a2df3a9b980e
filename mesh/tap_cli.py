"""`tracemesh tap`: watch the requests through one proxy as they finish.

Reads the proxy's admin port (``GET /tap``, one JSON line per request) rather than the collector, so
it shows every request the moment it ends, before export, batching or storage. Filters are applied
by the proxy, so a narrow tap on a busy proxy sends only what was asked for.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import urllib.parse

import orjson

from spans.cli_args import positive_int

CONNECT_TIMEOUT_S = 5.0
DEFAULT_ADMIN = "127.0.0.1:9990"


class TapError(Exception):
    """The proxy could not be reached or refused the tap; the message says which."""


def register(subparsers) -> None:
    tap = subparsers.add_parser(
        "tap",
        help="live stream of the requests through one proxy",
        description="Print each request through a proxy as it finishes (direction, service, method, path, "
        "status, latency, endpoint), read from the proxy's admin port. Ctrl-C stops.",
    )
    tap.add_argument("--proxy-admin", type=admin_address, default=admin_address(DEFAULT_ADMIN), metavar="HOST:PORT",
                     help=f"the proxy's --admin address (default {DEFAULT_ADMIN}, the proxy's default)")
    tap.add_argument("--service", help="only requests to this destination service (inbound: the proxy's own)")
    tap.add_argument("--path", metavar="PREFIX", help="only requests whose path starts with PREFIX")
    tap.add_argument("--status", type=status_filter, help="only this HTTP status (503) or class (5xx)")
    tap.add_argument("--max", type=positive_int, metavar="N", help="stop after N requests")
    tap.add_argument("--json", action="store_true", help="print the proxy's JSON lines as they come")
    tap.set_defaults(run=run_tap)


def admin_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def status_filter(text: str) -> str:
    text = text.lower()
    if (len(text) == 3 and text[0] in "12345" and text[1:] == "xx") or (text.isdigit() and 100 <= int(text) <= 599):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not an HTTP status (503) or class (5xx)")


def run_tap(args: argparse.Namespace) -> int:
    host, port = args.proxy_admin
    query = urllib.parse.urlencode(
        [(name, value) for name, value in (("service", args.service), ("path", args.path), ("status", args.status)) if value]
    )
    connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
    try:
        lines = tap_lines(connection, "/tap" + ("?" + query if query else ""), f"{host}:{port}")
        shown = 0
        for line in lines:
            if "dropped" in line:
                print(f"tracemesh: the proxy dropped {line['dropped']} requests so far (this reader is too slow)",
                      file=sys.stderr)
                continue
            print(orjson.dumps(line).decode() if args.json else request_line(line), flush=True)
            shown += 1
            if shown == args.max:
                break
    except TapError as error:
        print(f"tracemesh: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader (head, less) is gone; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        connection.close()
    return 0


def tap_lines(connection: http.client.HTTPConnection, path: str, address: str):
    """The tap's JSON lines; ends when the proxy ends the stream."""
    try:
        connection.connect()
        sock = connection.sock  # the response takes it over (Connection: close)
        connection.request("GET", path)
        response = connection.getresponse()
    except OSError as error:
        raise TapError(f"cannot reach the proxy's admin port at {address}: {error}") from None
    if response.status != 200:
        message = response.read().decode("utf-8", "replace").strip()
        raise TapError(f"{response.status} from the proxy at {address}: {message}")
    sock.settimeout(None)  # a quiet proxy is not an error: wait for requests
    while True:
        try:
            line = response.readline()
        except (OSError, http.client.HTTPException) as error:
            raise TapError(f"the tap stream from {address} broke: {error}") from None
        if not line:
            return
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            raise TapError(f"{address} did not answer with tap lines; is --proxy-admin a Tracemesh proxy?") from None


def request_line(request: dict) -> str:
    """``03:12:45.120 outbound  checkout  GET /cart  503  12.3ms  127.0.0.1:9001  retries=1  error=...  trace=...``"""
    status = request["status"] or (f"grpc={request['grpcStatus']}" if "grpcStatus" in request else "-")
    parts = [
        request["time"][11:23],
        request["direction"] or "-",
        request["service"] or "-",
        f"{request['method']} {request['path']}",
        str(status),
        f"{request['durationMs']:g}ms",
        request["endpoint"] or "-",
    ]
    if request["retries"]:
        parts.append(f"retries={request['retries']}")
    if request["error"]:
        parts.append(f"error={request['error']}")
    parts.append(f"trace={request['traceId']}")
    return "  ".join(parts)
