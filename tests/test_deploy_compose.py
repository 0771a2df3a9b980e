"""docker-compose.yml and the Dockerfile agree with the code: every tracemesh command parses with the real
CLI parser, the shop matches `tracemesh demo`'s, and addresses line up. (No Docker engine here, so the
files are checked, not run.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml

from tests.support.processes import REPO_ROOT
from tracemesh.cli import build_parser
from tracemesh.demo import SHOP, SLOW_EVERY_S, SLOW_FOR_S

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
IMAGE_ENTRYPOINT = "tracemesh"


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of each Dockerfile line, comments and continuations handled."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def image_paths() -> dict[PurePosixPath, Path]:
    """Where each COPY source lands in the image -> the repository path it comes from."""
    workdir, mapped = PurePosixPath("/"), {}
    for instruction, arguments in dockerfile():
        if instruction == "WORKDIR":
            workdir = workdir / arguments
        elif instruction == "COPY":
            *sources, destination = shlex.split(arguments)
            target = workdir / destination
            for source in sources:
                mapped[target / source if destination.endswith("/") else target] = REPO_ROOT / source
    return mapped


def built_from_project(service: dict) -> bool:
    build = service.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    return context == "."


def parsed(name: str):
    """The service's command as the real `tracemesh` parser reads it."""
    command = SERVICES[name]["command"]
    return build_parser(command[0]).parse_args(command)


def options(command: list[str]) -> dict[str, str]:
    """--flag=value arguments of an app command (the shop apps)."""
    return dict(arg[2:].split("=", 1) for arg in command if arg.startswith("--"))


def sidecars() -> dict[str, str]:
    """sidecar service -> the app service whose network namespace it shares."""
    return {name: s["network_mode"].removeprefix("service:") for name, s in SERVICES.items() if "network_mode" in s}


def apps() -> list[str]:
    return list(sidecars().values())


def test_the_dockerfile_copies_what_exists_and_runs_the_collector():
    instructions = dockerfile()
    for _, source in image_paths().items():
        assert source.exists(), f"the Dockerfile copies {source.relative_to(REPO_ROOT)}, which does not exist"
    entrypoint = json.loads(next(args for ins, args in instructions if ins == "ENTRYPOINT"))
    assert entrypoint == [IMAGE_ENTRYPOINT]
    command = json.loads(next(args for ins, args in instructions if ins == "CMD"))
    args = build_parser(command[0]).parse_args(command)
    exposed = {int(port) for ins, ports in instructions if ins == "EXPOSE" for port in ports.split()}
    listening = {args.otlp_grpc, args.otlp_http, args.http, args.control}
    assert {f"0.0.0.0:{port}" for port in exposed} == listening


def test_every_service_is_an_image_or_the_project_build_and_its_dependencies_exist():
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            assert built_from_project(service), name
        depends = service.get("depends_on", [])
        for target in depends if isinstance(depends, list) else depends.keys():
            assert target in SERVICES, f"{name} depends on {target}, which is no service"
        if "network_mode" in service:
            assert service["network_mode"].removeprefix("service:") in SERVICES, name
            assert "ports" not in service, f"{name} shares a network namespace: publish its ports on the owner"
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_every_tracemesh_command_parses_with_the_real_cli():
    commands = [name for name, s in SERVICES.items() if built_from_project(s) and "entrypoint" not in s]
    assert set(commands) == {"collector", *sidecars()}
    for name in commands:
        parsed(name)  # argparse exits (SystemExit) on an unknown flag or a bad value


def test_the_collector_stores_into_the_clickhouse_service_and_publishes_its_ports():
    args = parsed("collector")
    store = urlsplit(args.store)
    environment = SERVICES["clickhouse"]["environment"]
    assert (store.scheme, store.hostname, store.port) == ("clickhouse", "clickhouse", 9000)
    assert (store.username, store.password, store.path) == (
        environment["CLICKHOUSE_USER"], environment["CLICKHOUSE_PASSWORD"], "/" + environment["CLICKHOUSE_DB"])
    published = {int(p.split(":")[1]) for p in SERVICES["collector"]["ports"]}
    assert published == {int(a.rpartition(":")[2]) for a in (args.otlp_grpc, args.otlp_http, args.http, args.control)}
    assert SERVICES["collector"]["depends_on"] == {"clickhouse": {"condition": "service_healthy"}}


def test_the_shop_is_the_demo_shop():
    """Each demo service with as many instances as `tracemesh demo` runs, each beside one sidecar."""
    sidecar_services = [parsed(sidecar).service for sidecar in sidecars()]
    assert sorted(sidecar_services) == sorted(s.name for s in SHOP for _ in range(s.instances))
    scripts = {s.name: s for s in SHOP}
    for sidecar, app in sidecars().items():
        service = scripts[parsed(sidecar).service]
        command = SERVICES[app]["command"]
        assert SERVICES[app]["entrypoint"] == ["python"]
        assert PurePosixPath(command[0]).name == service.script
        assert ("outbound" in options(command)) == service.calls_out, app
        assert ("zipkin" in options(command)) == service.zipkin, app
    slow = [app for app in apps() if "slow-every" in options(SERVICES[app]["command"])]
    assert len(slow) == 1
    assert options(SERVICES[slow[0]]["command"]).items() >= {("slow-every", str(SLOW_EVERY_S)), ("slow-for", str(SLOW_FOR_S))}


def test_app_commands_use_flags_their_scripts_define_and_exist_in_the_image():
    copied = image_paths()
    for name, service in SERVICES.items():
        if service.get("entrypoint") != ["python"]:
            continue
        script_in_image = PurePosixPath(service["command"][0])
        source = next((src / script_in_image.relative_to(dest) for dest, src in copied.items()
                       if script_in_image.is_relative_to(dest)), None)
        assert source is not None and source.is_file(), f"{name}: {script_in_image} is not in the image"
        defined = set(re.findall(r'add_argument\(\s*"--([a-z-]+)"', source.read_text()))
        assert set(options(service["command"])) <= defined, name


def test_sidecars_and_apps_address_each_other_and_the_collector():
    collector = parsed("collector")
    otlp_port, zipkin_port, control_port = (int(a.rpartition(":")[2]) for a in
                                             (collector.otlp_http, collector.http, collector.control))
    for sidecar, app in sidecars().items():
        args, app_options = parsed(sidecar), options(SERVICES[app]["command"])
        assert args.app == f"127.0.0.1:{app_options['port']}", sidecar
        inbound_port = args.inbound.rpartition(":")[2]
        assert args.inbound.startswith("0.0.0.0:")
        # the address other sidecars get from the control port is this network namespace's name
        assert args.advertise == f"{app}:{inbound_port}", sidecar
        assert args.outbound == app_options.get("outbound"), sidecar  # the app calls out through its sidecar
        assert args.collector == f"http://collector:{otlp_port}" and args.control == f"collector:{control_port}"
        telemetry = urlsplit(app_options.get("otlp") or app_options["zipkin"])
        assert (telemetry.hostname, telemetry.port) == ("collector", otlp_port if "otlp" in app_options else zipkin_port)
        health = " ".join(SERVICES[sidecar]["healthcheck"]["test"])
        assert f"http://{args.admin}/ready" in health, sidecar
        assert set(SERVICES[sidecar]["depends_on"]) == {app}


def test_the_frontend_and_the_traffic_meet_at_the_frontend_sidecar():
    frontend_sidecar = next(s for s in sidecars() if parsed(s).service == "frontend")
    inbound_port = parsed(frontend_sidecar).inbound.rpartition(":")[2]
    app = sidecars()[frontend_sidecar]
    assert [p.split(":")[1] for p in SERVICES[app]["ports"]] == [inbound_port]
    traffic = options(SERVICES["traffic"]["command"])
    assert traffic["target"] == f"{app}:{inbound_port}"
    assert set(SERVICES["traffic"]["depends_on"]) == set(sidecars())


def test_the_published_addresses_are_the_ones_the_compose_file_names():
    header = (REPO_ROOT / "docker-compose.yml").read_text().split("services:")[0]
    frontend_port = SERVICES["frontend"]["ports"][0].split(":")[0]
    collector_http = next(p.split(":")[0] for p in SERVICES["collector"]["ports"]
                          if p.endswith(":" + parsed("collector").http.rpartition(":")[2]))
    assert f"http://localhost:{collector_http}/" in header and f"http://localhost:{frontend_port}/" in header
