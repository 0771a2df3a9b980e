"""``tracemesh proxy``: run one sidecar proxy beside one service instance."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mesh.destination import BALANCERS, EWMA, MESH, DestinationPolicy, parse_duration, parse_timeouts
from mesh.proxy import ProxyConfig, run

EPILOG = """\
example:
  tracemesh proxy --service checkout --inbound 127.0.0.1:4143 --app 127.0.0.1:8080 \\
      --outbound 127.0.0.1:4140 --collector 127.0.0.1:4317 --admin 127.0.0.1:9990 \\
      --endpoints endpoints.yaml --route 127.0.0.1:4150=payments --timeout payments=2s

The app sends its outbound calls to --outbound with the service name as Host (curl -H 'Host: payments'
http://127.0.0.1:4140/..., or http_proxy=http://127.0.0.1:4140) or to a --route listener. Other
instances reach this one at --inbound. The endpoints file maps service -> ["host:port", ...] (TOML or
YAML) and is reloaded when it changes. Proxy errors carry a tracemesh-proxy-error response header.
"""


def address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text if host else f"127.0.0.1:{port}"


def route(text: str) -> tuple[str, str]:
    listen, sep, service = text.partition("=")
    if not sep or not service:
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDR=SERVICE")
    return address(listen), service


def size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    unit = units.get(text[-1:].lower(), 1)
    number = text[:-1] if unit != 1 else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512k, 64m")
    return int(number) * unit


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "proxy",
        help="run a sidecar proxy that traces every hop",
        description="Sidecar proxy: forwards inbound traffic to the local app and the app's outbound calls to "
        "other services (HTTP/1.1 and gRPC), records one span per request per proxy, and balances, "
        "retries, times out and sheds per destination.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--service", required=True, help="name of the service this proxy fronts (service.name of its spans)")
    parser.add_argument("--inbound", type=address, help="listen here for traffic to this instance")
    parser.add_argument("--app", type=address, help="the local app's address (required with --inbound)")
    parser.add_argument("--outbound", type=address, help="listen here for the app's calls to other services")
    parser.add_argument("--collector", type=address, help="where spans go: http://HOST:PORT for OTLP/HTTP (lighter), HOST:PORT for OTLP/gRPC; no export if omitted")
    parser.add_argument("--admin", type=address, default="127.0.0.1:9990", help="admin server: /metrics /ready /live /tap (default %(default)s)")
    parser.add_argument("--endpoints", metavar="FILE", help="TOML or YAML file: service -> list of host:port; watched")
    parser.add_argument("--control", type=address, metavar="ADDR",
                        help="the collector's control address (e.g. 127.0.0.1:4319): register this instance, get "
                             "endpoints, routing weights and scaling hints from it (the endpoints file, if any, "
                             "covers services it does not know)")
    parser.add_argument("--advertise", type=address, metavar="ADDR",
                        help="the address other proxies reach this instance's --inbound at, registered at --control "
                             "(default: --inbound; give the pod or container address when --inbound binds 0.0.0.0)")
    parser.add_argument("--zone", default="", help="locality label sent with the registration")
    parser.add_argument("--balancer", choices=BALANCERS,
                        help="ewma: power of two choices on local peak-EWMA load; mesh: the same combined with the "
                             "collector's weights; round-robin: blind rotation (default: mesh with --control, else ewma)")
    parser.add_argument("--route", type=route, action="append", default=[], metavar="ADDR=SERVICE",
                        help="an extra outbound listener bound to one service (repeatable)")
    parser.add_argument("--timeout", action="append", default=[], metavar="[SERVICE=]DURATION",
                        help="time until the response starts (retries included), for all destinations or one "
                             "(repeatable; default 10s)")
    parser.add_argument("--connect-timeout", type=duration, default=1.0, metavar="DURATION", help="default 1s")
    parser.add_argument("--inbound-timeout", type=duration, default=30.0, metavar="DURATION",
                        help="timeout of requests to the local app (default 30s)")
    parser.add_argument("--max-in-flight", type=int, default=1000, help="per destination before queueing (default %(default)s)")
    parser.add_argument("--max-queue", type=int, default=1000, help="queued requests per destination before shedding (default %(default)s)")
    parser.add_argument("--max-queue-wait", type=duration, default=1.0, metavar="DURATION",
                        help="longest wait in the queue before shedding (default 1s)")
    parser.add_argument("--max-body", type=size, default=256 * 1024**2, metavar="SIZE",
                        help="largest request or response body relayed (default 256m)")
    parser.add_argument("--span-buffer", type=int, default=8192, help="spans buffered for export before dropping (default %(default)s)")
    parser.add_argument("--grace", type=duration, default=5.0, metavar="DURATION", help="drain time on SIGTERM (default 5s)")
    parser.set_defaults(run=run_proxy)


def run_proxy(args: argparse.Namespace) -> int:
    if args.inbound and not args.app:
        print("tracemesh proxy: --inbound needs --app (where the local app listens)", file=sys.stderr)
        return 2
    if not (args.inbound or args.outbound or args.route):
        print("tracemesh proxy: nothing to do: give --inbound, --outbound or --route", file=sys.stderr)
        return 2
    if args.advertise and not args.inbound:
        print("tracemesh proxy: --advertise names the address of --inbound; give --inbound too", file=sys.stderr)
        return 2
    if args.control and args.inbound and not args.advertise and args.inbound.rpartition(":")[0] in ("0.0.0.0", "[::]", "::"):
        print(f"tracemesh proxy: warning: registering {args.inbound} at --control, an address other instances cannot "
              "reach; give --advertise HOST:PORT (the pod or container address)", file=sys.stderr)
    base = DestinationPolicy(
        connect_timeout_s=args.connect_timeout,
        max_in_flight=args.max_in_flight,
        max_queue=args.max_queue,
        max_queue_wait_s=args.max_queue_wait,
        balancer=args.balancer or (MESH if args.control else EWMA),
    )
    try:
        policy, overrides = parse_timeouts(args.timeout, base)
    except ValueError as error:
        print(f"tracemesh proxy: {error}", file=sys.stderr)
        return 2
    config = ProxyConfig(
        service=args.service,
        inbound=args.inbound,
        app=args.app,
        outbound=args.outbound,
        collector=args.collector,
        admin=args.admin,
        endpoints=args.endpoints,
        control=args.control,
        advertise=args.advertise,
        zone=args.zone,
        routes=args.route,
        policy=policy,
        overrides=overrides,
        inbound_policy=dataclasses.replace(base, timeout_s=args.inbound_timeout),
        max_body_bytes=args.max_body,
        span_buffer=args.span_buffer,
        grace_s=args.grace,
    )
    return run(config)
