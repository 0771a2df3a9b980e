"""``tracemesh inject``: add the sidecar proxy to the workloads of a Kubernetes YAML stream.

Users keep their manifests as they are and pipe them through this command on the way to
``kubectl apply`` (as with ``linkerd inject``). Only pod templates change: the documents that are not
workloads, and workloads already injected, are written back as the exact text they came in, so
injecting twice changes nothing and reviews show only the sidecar. A changed document is re-emitted
by PyYAML, so its comments are lost.

The sidecar binds its inbound listener on all addresses but registers the pod IP (downward API) at
the collector's control port, since ``0.0.0.0`` is no address another pod can reach.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import yaml

SIDECAR_NAME = "tracemesh-proxy"
INJECTED_ANNOTATION = "tracemesh.io/injected"
SERVICE_ANNOTATION = "tracemesh.io/service"
APP_PORT_ANNOTATION = "tracemesh.io/app-port"
INJECT_ANNOTATION = "tracemesh.io/inject"  # "disabled" leaves a workload alone
TEMPLATED_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}  # spec.template is the pod
COLLECTOR_HOST = "tracemesh-collector.tracemesh.svc.cluster.local"  # deploy/kubernetes/collector.yaml


class InjectError(ValueError):
    """Input that cannot be injected; the message names the document and the problem."""


@dataclass(frozen=True)
class SidecarSettings:
    image: str = "tracemesh:0.1.0"
    collector: str = f"http://{COLLECTOR_HOST}:4318"
    control: str = f"{COLLECTOR_HOST}:4319"
    inbound_port: int = 4143
    outbound_port: int = 4140
    admin_port: int = 4191

    def ports(self) -> set[int]:
        return {self.inbound_port, self.outbound_port, self.admin_port}


def register(subparsers) -> None:
    defaults = SidecarSettings()
    parser = subparsers.add_parser(
        "inject",
        help="add the tracemesh proxy sidecar to the workloads of a Kubernetes YAML stream",
        description="Read Kubernetes manifests (a multi-document YAML stream) and write them to stdout with a "
        f"{SIDECAR_NAME} container added to every Deployment, StatefulSet, DaemonSet and Pod. Other documents, "
        f"and workloads already injected or annotated {INJECT_ANNOTATION}: disabled, are copied unchanged. "
        f"The proxy's --service is the {SERVICE_ANNOTATION} annotation or the workload's name; its --app port is "
        f"the {APP_PORT_ANNOTATION} annotation or the first containerPort.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tracemesh inject deployment.yaml | kubectl apply -f -\n"
        "  kubectl get deploy -o yaml | tracemesh inject - | kubectl apply -f -\n\n"
        "The app calls other services at 127.0.0.1:OUTBOUND_PORT naming them in Host (HTTP) or :authority (gRPC).\n"
        "Point a Service's targetPort at the sidecar's port 'tm-inbound' for incoming traffic to be traced.",
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="manifests to read (default - = stdin)")
    parser.add_argument("--image", default=defaults.image, help="the Tracemesh image (default %(default)s)")
    parser.add_argument("--collector", default=defaults.collector,
                        help="the proxy's --collector: OTLP address of the collector (default %(default)s)")
    parser.add_argument("--control", default=defaults.control,
                        help="the proxy's --control: the collector's control address (default %(default)s)")
    parser.add_argument("--inbound-port", type=int, default=defaults.inbound_port, help="default %(default)s")
    parser.add_argument("--outbound-port", type=int, default=defaults.outbound_port,
                        help="where the app sends its calls, on 127.0.0.1 (default %(default)s)")
    parser.add_argument("--admin-port", type=int, default=defaults.admin_port,
                        help="/ready, /live and /metrics (default %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = SidecarSettings(args.image, args.collector, args.control, args.inbound_port, args.outbound_port,
                               args.admin_port)
    name = "stdin" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as error:
        print(f"tracemesh inject: cannot read {name}: {error}", file=sys.stderr)
        return 1
    try:
        output, report = inject_stream(text, settings)
    except InjectError as error:
        print(f"tracemesh inject: {name}: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(output)
    for line in report:
        print(line, file=sys.stderr)
    return 0


def split_documents(text: str) -> list[str]:
    """The text of each document of a YAML stream, without its ``---`` line; a YAML error is an InjectError."""
    bodies, start, previous_end = [], 0, 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.DocumentStartEvent):
                # an implicit start keeps the comments above the document's first token
                start = event.end_mark.index if event.explicit else previous_end
            elif isinstance(event, yaml.DocumentEndEvent):
                bodies.append(text[start:event.start_mark.index].strip("\n"))
                previous_end = event.end_mark.index
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InjectError(f"not valid YAML{where}: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise InjectError(f"not valid YAML: {error}") from None
    return bodies


def inject_stream(text: str, settings: SidecarSettings = SidecarSettings()) -> tuple[str, list[str]]:
    """The stream with sidecars added, and one line per workload saying what happened to it."""
    out, report = [], []
    for number, body in enumerate(split_documents(text), start=1):
        document = yaml.safe_load(body)
        changed = inject_document(document, settings, report, f"document {number}")
        out.append("---\n" + (yaml.safe_dump(document, sort_keys=False) if changed else body + "\n"))
    return "".join(out), report


def inject_document(document, settings: SidecarSettings, report: list[str], where: str) -> bool:
    """Add the sidecar to the workload(s) in ``document`` in place; True when something changed."""
    if not isinstance(document, dict):
        return False
    kind = document.get("kind")
    if kind == "List":
        changed = False
        for number, item in enumerate(document.get("items") or [], start=1):
            changed |= inject_document(item, settings, report, f"{where} item {number}")
        return changed
    if kind not in TEMPLATED_KINDS and kind != "Pod":
        return False
    metadata = document.get("metadata") or {}
    label = f"{kind.lower()}/{metadata.get('name') or metadata.get('generateName') or '?'}"
    pod = document if kind == "Pod" else (document.get("spec") or {}).get("template")
    containers = ((pod or {}).get("spec") or {}).get("containers") if isinstance(pod, dict) else None
    if not isinstance(containers, list) or not containers:
        path = "spec.containers" if kind == "Pod" else "spec.template.spec.containers"
        raise InjectError(f"{where} ({label}): {path} is missing or empty")
    pod_annotations = (pod.get("metadata") or {}).get("annotations") or {}
    annotations = {**(metadata.get("annotations") or {}), **pod_annotations}
    if annotations.get(INJECT_ANNOTATION) == "disabled":
        report.append(f"{label} skipped ({INJECT_ANNOTATION}: disabled)")
        return False
    if any(isinstance(c, dict) and c.get("name") == SIDECAR_NAME for c in containers):
        report.append(f"{label} already injected")
        return False
    service = annotations.get(SERVICE_ANNOTATION) or metadata.get("name") or metadata.get("generateName", "").rstrip("-")
    if not service:
        raise InjectError(f"{where} ({label}): no name to use as the service; set metadata.name or the "
                          f"{SERVICE_ANNOTATION} annotation")
    app_port = find_app_port(containers, annotations, settings, f"{where} ({label})")
    containers.append(sidecar_container(str(service), app_port, settings))
    pod_metadata = pod.get("metadata") or {}
    pod_metadata["annotations"] = {**(pod_metadata.get("annotations") or {}), INJECTED_ANNOTATION: "true"}
    pod["metadata"] = pod_metadata
    report.append(f"{label} injected (service {service}" + (f", app port {app_port})" if app_port else ", outbound only)"))
    return True


def find_app_port(containers: list, annotations: dict, settings: SidecarSettings, where: str) -> int | None:
    """The port the app serves on: the annotation, else the first containerPort; None when it serves none."""
    declared = [p.get("containerPort") for c in containers if isinstance(c, dict)
                for p in (c.get("ports") or []) if isinstance(p, dict)]
    text = annotations.get(APP_PORT_ANNOTATION)
    if text is not None:
        if not str(text).isdigit() or not 0 < int(text) < 65536:
            raise InjectError(f"{where}: {APP_PORT_ANNOTATION} {text!r} is not a port number")
        port = int(text)
    else:
        port = declared[0] if declared else None
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise InjectError(f"{where}: containerPort {port!r} is not a port number")
    clash = settings.ports() & {p for p in declared if isinstance(p, int)}
    if clash:
        raise InjectError(f"{where}: the app uses port {min(clash)}, which the sidecar needs; choose other "
                          "--inbound-port / --outbound-port / --admin-port")
    return port


def proxy_args(service: str, app_port: int | None, settings: SidecarSettings) -> list[str]:
    """The sidecar's command line after the image's ``tracemesh`` entry point."""
    args = ["proxy", f"--service={service}"]
    if app_port:
        args += [f"--inbound=0.0.0.0:{settings.inbound_port}", f"--app=127.0.0.1:{app_port}",
                 f"--advertise=$(POD_IP):{settings.inbound_port}"]
    return args + [f"--outbound=127.0.0.1:{settings.outbound_port}", f"--admin=0.0.0.0:{settings.admin_port}",
                   f"--collector={settings.collector}", f"--control={settings.control}"]


def sidecar_container(service: str, app_port: int | None, settings: SidecarSettings) -> dict:
    ports = [{"name": "tm-admin", "containerPort": settings.admin_port}]
    if app_port:
        ports.insert(0, {"name": "tm-inbound", "containerPort": settings.inbound_port})
    return {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "args": proxy_args(service, app_port, settings),
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "tm-admin"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "tm-admin"}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
