"""``tracemesh demo``: the collector, a small shop of services behind sidecars, and shoppers.

The first thing a user runs, so it must start in seconds, show what it is doing, and leave nothing
behind. Every child runs in its own session: Ctrl-C reaches only this process, which then stops the
children in dependency order (shoppers, shop, collector last so the final spans are stored) and
kills any process group still alive after a grace period. Children also get SIGTERM if this
process dies without cleaning up (Linux parent-death signal).

The shop's services are ordinary apps in ``examples/shop/`` (aiohttp and grpc.aio, instrumented with
OpenTelemetry; shipping with py-zipkin); this module only knows how to wire them up.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mesh.cli import duration

SHOP_DIR = Path(__file__).resolve().parents[1] / "examples" / "shop"
PORTS_PER_INSTANCE = 4  # app, sidecar inbound, sidecar outbound, sidecar admin
SLOW_EVERY_S, SLOW_FOR_S = 45, 15  # the last catalog instance's slow phases
START_TIMEOUT_S = 60.0
SHOP_GRACE_S = 8.0
COLLECTOR_GRACE_S = 30.0


@dataclass(frozen=True)
class Service:
    name: str
    script: str
    instances: int = 1
    calls_out: bool = False  # calls other services (through its sidecar's outbound listener)
    database: str = ""  # SQLite file in the data directory
    zipkin: bool = False  # instrumented with py-zipkin (spans to the Zipkin endpoint), else OpenTelemetry


SHOP = (
    Service("frontend", "frontend.py", calls_out=True),
    Service("catalog", "catalog.py", instances=3),
    Service("cart", "cart.py", database="carts.db"),
    Service("checkout", "checkout.py", calls_out=True),
    Service("payments", "payments.py"),
    Service("shipping", "shipping.py", zipkin=True),
)


@dataclass(frozen=True)
class Instance:
    service: Service
    number: int
    app_port: int
    inbound_port: int
    outbound_port: int
    admin_port: int

    @property
    def name(self) -> str:
        return f"{self.service.name}-{self.number}"

    @property
    def slow(self) -> bool:
        return self.service.instances > 1 and self.number == self.service.instances


@dataclass(frozen=True)
class Collector:
    otlp_grpc: str
    otlp_http: str
    http: str
    control: str

    @property
    def api_url(self) -> str:
        return f"http://{self.http}"


def address(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text if host else f"127.0.0.1:{port}"


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the collector, a demo shop behind sidecars, and traffic",
        description="Start the collector (embedded store), a shop of six services (frontend, catalog x3, cart "
        "with its SQLite database, checkout, payments, shipping; HTTP and gRPC), a tracemesh proxy beside each "
        "instance, and shoppers sending traffic with some errors and a catalog instance that turns slow now "
        "and then. Ctrl-C stops everything.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tracemesh demo                       # then open http://127.0.0.1:9411/\n"
        "  tracemesh demo --rps 50 --duration 5m --base-port 17100 --http 127.0.0.1:19411",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".tracemesh/demo"),
                        help="store, spool, logs and the endpoints file (default ./.tracemesh/demo)")
    parser.add_argument("--store", help="chdb:///dir or clickhouse://user:pass@host:9000/db "
                        "(default chdb://DATA_DIR/chdb)")
    parser.add_argument("--rps", type=positive, default=20.0, help="shopper visits per second (default 20)")
    parser.add_argument("--duration", type=duration, help="stop after this long, e.g. 90s, 10m (default: until Ctrl-C)")
    parser.add_argument("--base-port", type=int, default=7100,
                        help=f"the shop's ports start here, {PORTS_PER_INSTANCE} per instance (default 7100; "
                        "0 = any free ports)")
    parser.add_argument("--otlp-grpc", type=address, default="127.0.0.1:4317", help="collector OTLP/gRPC address")
    parser.add_argument("--otlp-http", type=address, default="127.0.0.1:4318", help="collector OTLP/HTTP address")
    parser.add_argument("--http", type=address, default="127.0.0.1:9411",
                        help="collector UI, query API and Zipkin address (default 127.0.0.1:9411)")
    parser.add_argument("--control", type=address, default="127.0.0.1:4319",
                        help="collector control address the sidecars register at (default 127.0.0.1:4319)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not SHOP_DIR.is_dir():
        print(f"tracemesh demo: the example shop is not at {SHOP_DIR}; run it from a source checkout "
              "(pip install -e .)", file=sys.stderr)
        return 1
    if not 0 <= args.base_port <= 65535 - PORTS_PER_INSTANCE * instance_count():
        print(f"tracemesh demo: --base-port {args.base_port} leaves no room for the shop's ports", file=sys.stderr)
        return 2
    collector = Collector(args.otlp_grpc, args.otlp_http, args.http, args.control)
    instances = plan_instances(allocate_ports(args.base_port, PORTS_PER_INSTANCE * instance_count()))
    busy = busy_ports(collector, instances)
    if busy:
        print("tracemesh demo: ports in use: " + ", ".join(busy) + ". Is a collector or demo already running? "
              "Choose others with --base-port / --http / --otlp-grpc / --otlp-http / --control.", file=sys.stderr)
        return 1
    data_dir = args.data_dir.resolve()
    store = args.store or f"chdb://{data_dir / 'chdb'}"
    return Demo(collector, instances, data_dir, store, args.rps, args.duration).run()


def instance_count() -> int:
    return sum(service.instances for service in SHOP)


def allocate_ports(base: int, count: int) -> list[int]:
    """``count`` consecutive ports from ``base``, or any free ones when ``base`` is 0."""
    if base:
        return list(range(base, base + count))
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def plan_instances(ports: list[int]) -> list[Instance]:
    instances, next_port = [], iter(ports)
    for service in SHOP:
        for number in range(1, service.instances + 1):
            instances.append(Instance(service, number, *(next(next_port) for _ in range(PORTS_PER_INSTANCE))))
    return instances


def split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def all_addresses(collector: Collector, instances: list[Instance]) -> list[tuple[str, str]]:
    """(what, host:port) of every listener the demo opens."""
    found = [("collector OTLP/gRPC", collector.otlp_grpc), ("collector OTLP/HTTP", collector.otlp_http),
             ("collector HTTP", collector.http), ("collector control", collector.control)]
    for instance in instances:
        for role, port in (("app", instance.app_port), ("inbound", instance.inbound_port),
                           ("outbound", instance.outbound_port), ("admin", instance.admin_port)):
            found.append((f"{instance.name} {role}", f"127.0.0.1:{port}"))
    return found


def busy_ports(collector: Collector, instances: list[Instance]) -> list[str]:
    return [f"{addr} ({what})" for what, addr in all_addresses(collector, instances) if not port_free(*split(addr))]


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: children outlive a demo killed with SIGKILL
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the demo process dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One process of the demo, in its own session (process group), output in its log file."""

    name: str
    args: list[str]
    log_path: Path
    ready_check: Callable[[], bool] | None = None  # None = ready once started
    describe: str = ""
    inherit_output: bool = False
    popen: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        output = None if self.inherit_output else open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.args, stdout=output, stderr=subprocess.STDOUT if output else None, stdin=subprocess.DEVNULL,
                cwd=SHOP_DIR, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        finally:
            if output is not None:
                output.close()

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        return self.ready_check is None or self.ready_check()

    def signal_group(self, sig: int) -> None:
        if self.popen is not None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as reply:
            return reply.status == 200
    except OSError:
        return False


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Demo:
    def __init__(self, collector: Collector, instances: list[Instance], data_dir: Path, store: str,
                 rps: float, duration_s: float | None):
        self.collector = collector
        self.instances = instances
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.store = store
        self.rps = rps
        self.duration_s = duration_s
        self.signals = 0
        self.collector_child: Child | None = None
        self.shop: list[Child] = []
        self.traffic: Child | None = None

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        endpoints = self.write_endpoints()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        started = time.monotonic()
        print(f"tracemesh demo: starting the collector, {len(self.instances)} service instances and their sidecars "
              f"(logs in {self.logs})", flush=True)
        try:
            self.collector_child = self.collector_process()
            self.shop = [child for instance in self.instances for child in self.instance_processes(instance, endpoints)]
            for child in [self.collector_child, *self.shop]:
                child.start()
            if not self.wait_ready([self.collector_child, *self.shop], started):
                return 1 if self.signals == 0 else 0
            self.print_summary(time.monotonic() - started)
            self.traffic = self.traffic_process()
            self.traffic.start()
            return self.watch()
        finally:
            self.stop_all()

    def wait_ready(self, children: list[Child], started: float) -> bool:
        pending = list(children)
        while pending:
            if self.signals:
                return False
            for child in list(pending):
                if not child.running():
                    code = child.popen.returncode if child.popen else None
                    print(f"  FAILED {child.name} exited with code {code} while starting; its log "
                          f"({child.log_path}):\n{child.log_tail()}", file=sys.stderr, flush=True)
                    return False
                if child.ready():
                    pending.remove(child)
                    print(f"  ready  {child.name:<20} {child.describe:<52} {time.monotonic() - started:5.1f}s",
                          flush=True)
            if time.monotonic() - started > START_TIMEOUT_S:
                names = ", ".join(child.name for child in pending)
                print(f"tracemesh demo: not ready after {START_TIMEOUT_S:.0f}s: {names} (see {self.logs})",
                      file=sys.stderr, flush=True)
                return False
            time.sleep(0.1)
        return True

    def watch(self) -> int:
        """Until Ctrl-C, the duration, or a process dying: 0, 0, 1."""
        deadline = time.monotonic() + self.duration_s if self.duration_s else None
        while not self.signals:
            if deadline is not None and time.monotonic() >= deadline:
                print(f"tracemesh demo: {self.duration_s:g}s are over", flush=True)
                return 0
            for child in [self.collector_child, *self.shop, self.traffic]:
                if not child.running():
                    print(f"tracemesh demo: {child.name} exited with code {child.popen.returncode}; stopping. Its log "
                          f"({child.log_path}):\n{child.log_tail()}", file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.2)
        return 0

    def on_signal(self, signum, frame) -> None:
        self.signals += 1
        if self.signals == 1:
            print("\ntracemesh demo: stopping (Ctrl-C again to kill at once)", flush=True)
        else:
            for child in self.children():
                child.signal_group(signal.SIGKILL)

    def children(self) -> list[Child]:
        return [child for child in (self.traffic, *self.shop, self.collector_child) if child is not None]

    # ---- stopping --------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Shoppers first, then the shop (apps flush their spans, sidecars drain), the collector last."""
        began = time.monotonic()
        stages = [("traffic", [self.traffic] if self.traffic else [], 5.0),
                  ("shop", self.shop, SHOP_GRACE_S),
                  ("collector", [self.collector_child] if self.collector_child else [], COLLECTOR_GRACE_S)]
        for _, children, grace in stages:
            self.stop_group(children, grace)
        count = sum(1 for child in self.children() if child.popen is not None)
        busy = [f"{addr} ({what})" for what, addr in all_addresses(self.collector, self.instances)
                if not port_free(*split(addr))]
        print(f"tracemesh demo: stopped {count} processes in {time.monotonic() - began:.1f}s"
              + (f"; still in use: {', '.join(busy)}" if busy else ""), flush=True)

    def stop_group(self, children: list[Child], grace_s: float) -> None:
        started = [child for child in children if child.popen is not None]
        for child in started:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in started:
            try:
                child.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"tracemesh demo: {child.name} did not stop within {grace_s:g}s; killing it", flush=True)
            # the whole group, also when the leader exited: nothing of the child may outlive the demo
            child.signal_group(signal.SIGKILL)
            child.popen.wait()

    # ---- what runs -------------------------------------------------------------------------

    def write_endpoints(self) -> Path:
        path = self.data_dir / "endpoints.yaml"
        lines = ["# written by tracemesh demo: service -> its instances' sidecar inbound addresses\n"]
        for service in SHOP:
            addresses = [f'"127.0.0.1:{i.inbound_port}"' for i in self.instances if i.service is service]
            lines.append(f"{service.name}: [{', '.join(addresses)}]\n")
        path.write_text("".join(lines))
        return path

    def collector_process(self) -> Child:
        c = self.collector
        args = [sys.executable, "-m", "tracemesh", "collector", "--otlp-grpc", c.otlp_grpc, "--otlp-http", c.otlp_http,
                "--http", c.http, "--control", c.control, "--store", self.store,
                "--spool", str(self.data_dir / "spool")]
        return Child("collector", args, self.logs / "collector.log", lambda: http_ok(f"{c.api_url}/ready"),
                     f"http://{c.http}  OTLP {c.otlp_grpc} {c.otlp_http}  control {c.control}")

    def instance_processes(self, instance: Instance, endpoints: Path) -> list[Child]:
        service = instance.service
        app_args = [sys.executable, str(SHOP_DIR / service.script), "--port", str(instance.app_port)]
        if service.zipkin:
            app_args += ["--zipkin", f"{self.collector.api_url}/api/v2/spans"]
        else:
            app_args += ["--instance", instance.name, "--otlp", f"http://{self.collector.otlp_http}/v1/traces"]
        if service.calls_out:
            app_args += ["--outbound", f"127.0.0.1:{instance.outbound_port}"]
        if service.database:
            app_args += ["--db", str(self.data_dir / service.database)]
        if instance.slow:
            app_args += ["--slow-every", str(SLOW_EVERY_S), "--slow-for", str(SLOW_FOR_S)]
        sidecar_args = [
            sys.executable, "-m", "tracemesh", "proxy", "--service", service.name,
            "--inbound", f"127.0.0.1:{instance.inbound_port}", "--app", f"127.0.0.1:{instance.app_port}",
            "--outbound", f"127.0.0.1:{instance.outbound_port}", "--admin", f"127.0.0.1:{instance.admin_port}",
            "--collector", f"http://{self.collector.otlp_http}", "--control", self.collector.control,
            "--endpoints", str(endpoints),
        ]
        kind = "py-zipkin" if service.zipkin else "OTel"
        app = Child(instance.name, app_args, self.logs / f"{instance.name}.log",
                    lambda: port_open(instance.app_port),
                    f"app :{instance.app_port} ({kind}{', turns slow' if instance.slow else ''})")
        sidecar = Child(f"{instance.name} sidecar", sidecar_args, self.logs / f"{instance.name}-sidecar.log",
                        lambda: http_ok(f"http://127.0.0.1:{instance.admin_port}/ready"),
                        f"in :{instance.inbound_port} out :{instance.outbound_port} admin :{instance.admin_port}")
        return [app, sidecar]

    def traffic_process(self) -> Child:
        frontend = next(i for i in self.instances if i.service.name == "frontend")
        args = [sys.executable, str(SHOP_DIR / "traffic.py"), "--target", f"127.0.0.1:{frontend.inbound_port}",
                "--rps", f"{self.rps:g}"]
        return Child("traffic", args, self.logs / "traffic.log", inherit_output=True)

    def print_summary(self, seconds: float) -> None:
        api = self.collector.api_url
        frontend = next(i for i in self.instances if i.service.name == "frontend")
        slow = next(i for i in self.instances if i.slow)
        count = 1 + len(self.shop) + 1
        print(
            f"\nTracemesh demo running: {count} processes, started in {seconds:.1f}s.\n"
            f"  UI              {api}/\n"
            f"  service graph   {api}/api/v1/graph\n"
            f"  traces          {api}/api/v1/traces?service=frontend&limit=20\n"
            f"  services        {api}/api/v1/services\n"
            f"  CLI             tracemesh traces --service checkout --collector-url {api}\n"
            f"  the shop        curl 'http://127.0.0.1:{frontend.inbound_port}/?user=you'   (frontend's sidecar)\n"
            f"  sidecar metrics http://127.0.0.1:{frontend.admin_port}/metrics\n"
            f"Shoppers: {self.rps:g} visits/s with some errors; {slow.name} turns slow {SLOW_FOR_S}s of every "
            f"{SLOW_EVERY_S}s. Data in {self.data_dir}. "
            + (f"Stops after {self.duration_s:g}s or on Ctrl-C." if self.duration_s else "Ctrl-C stops everything."),
            flush=True,
        )
