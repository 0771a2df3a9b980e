"""`tracemesh inject`: the sidecar it adds to Kubernetes workloads, idempotence, untouched documents, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.support.processes import REPO_ROOT
from tracemesh.cli import build_parser, main
from tracemesh.inject import (
    INJECTED_ANNOTATION,
    SIDECAR_NAME,
    SidecarSettings,
    inject_stream,
)

SERVICE_DOC = """\
# the catalog's Service: comments, flow style and key order must survive
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  selector: {app: catalog}
  ports: [{port: 80, targetPort: tm-inbound}]   # through the sidecar
"""

DEPLOYMENT_DOC = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: catalog
  namespace: shop
spec:
  replicas: 3
  selector: {matchLabels: {app: catalog}}
  template:
    metadata:
      labels: {app: catalog}
    spec:
      containers:
        - name: catalog
          image: shop/catalog:1
          ports:
            - containerPort: 8080
            - containerPort: 9100
"""

STATEFULSET_DOC = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: carts-db
  annotations: {tracemesh.io/service: cart, tracemesh.io/app-port: "7000"}
spec:
  serviceName: carts-db
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart}}
    spec:
      containers:
        - {name: cart, image: shop/cart:1, ports: [{containerPort: 8080}]}
"""

DAEMONSET_DOC = """\
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-agent}
spec:
  selector: {matchLabels: {app: node-agent}}
  template:
    metadata: {labels: {app: node-agent}}
    spec:
      containers:
        - {name: agent, image: shop/agent:1}
"""

POD_DOC = """\
apiVersion: v1
kind: Pod
metadata: {name: payments}
spec:
  containers:
    - {name: payments, image: shop/payments:1, ports: [{containerPort: 50051}]}
"""

CONFIGMAP_DOC = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop-settings
data:
  # odd but valid formatting stays as written
  greeting:    "hello"
  block: |
    kind: Deployment
"""


def stream(*docs: str) -> str:
    return "---\n".join(docs)


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def pod_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def pod_annotations(doc: dict) -> dict:
    meta = doc["metadata"] if doc["kind"] == "Pod" else doc["spec"]["template"]["metadata"]
    return meta.get("annotations") or {}


def sidecar(doc: dict) -> dict:
    found = [c for c in pod_spec(doc)["containers"] if c["name"] == SIDECAR_NAME]
    assert len(found) == 1, f"{doc['kind']} has {len(found)} sidecars"
    return found[0]


def proxy_namespace(container: dict):
    """The sidecar's args as the real `tracemesh proxy` parser reads them (the image's entry point is tracemesh)."""
    args = container["args"]
    assert args[0] == "proxy"
    return build_parser("proxy").parse_args(args)


def check_sidecar(doc: dict, service: str, app_port: int | None, settings: SidecarSettings = SidecarSettings()) -> None:
    container = sidecar(doc)
    args = proxy_namespace(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["image"] == settings.image
    assert args.service == service
    assert args.outbound == f"127.0.0.1:{settings.outbound_port}"
    assert args.admin == f"0.0.0.0:{ports['tm-admin']}" == f"0.0.0.0:{settings.admin_port}"
    assert args.collector == settings.collector and args.control == settings.control
    if app_port is None:
        assert args.inbound is None and args.app is None and args.advertise is None and "tm-inbound" not in ports
    else:
        assert args.inbound == f"0.0.0.0:{ports['tm-inbound']}" == f"0.0.0.0:{settings.inbound_port}"
        assert args.app == f"127.0.0.1:{app_port}"
        # registered at the control port with the pod IP, which Kubernetes substitutes from the env
        assert args.advertise == f"$(POD_IP):{settings.inbound_port}"
        env = {e["name"]: e for e in container["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": "tm-admin"}
    assert pod_annotations(doc)[INJECTED_ANNOTATION] == "true"


def test_every_workload_kind_gets_one_consistent_sidecar():
    output, report = inject_stream(stream(DEPLOYMENT_DOC, STATEFULSET_DOC, DAEMONSET_DOC, POD_DOC))
    deployment, statefulset, daemonset, pod = documents(output)
    check_sidecar(deployment, "catalog", 8080)  # the first containerPort
    check_sidecar(statefulset, "cart", 7000)  # both from annotations
    check_sidecar(daemonset, "node-agent", None)  # serves nothing: outbound only
    check_sidecar(pod, "payments", 50051)
    # the app's own containers are kept as they were
    assert pod_spec(deployment)["containers"][0] == yaml.safe_load(DEPLOYMENT_DOC)["spec"]["template"]["spec"]["containers"][0]
    assert report == [
        "deployment/catalog injected (service catalog, app port 8080)",
        "statefulset/carts-db injected (service cart, app port 7000)",
        "daemonset/node-agent injected (service node-agent, outbound only)",
        "pod/payments injected (service payments, app port 50051)",
    ]


def test_settings_reach_the_sidecar():
    settings = SidecarSettings(image="registry.example/tracemesh:9", collector="otel.observability:4317",
                               control="tm.mesh:14319", inbound_port=5143, outbound_port=5140, admin_port=5191)
    output, _ = inject_stream(DEPLOYMENT_DOC, settings)
    check_sidecar(documents(output)[0], "catalog", 8080, settings)


def test_injecting_twice_changes_nothing():
    text = stream(SERVICE_DOC, DEPLOYMENT_DOC, CONFIGMAP_DOC, STATEFULSET_DOC, DAEMONSET_DOC, POD_DOC)
    once, _ = inject_stream(text)
    twice, report = inject_stream(once)
    assert twice == once
    assert report == [f"{kind}/{name} already injected" for kind, name in
                      [("deployment", "catalog"), ("statefulset", "carts-db"), ("daemonset", "node-agent"), ("pod", "payments")]]


def test_other_documents_are_copied_as_written():
    output, report = inject_stream(stream(SERVICE_DOC, DEPLOYMENT_DOC, CONFIGMAP_DOC))
    assert output.startswith("---\n" + SERVICE_DOC)
    assert output.endswith("---\n" + CONFIGMAP_DOC)
    assert [doc["kind"] for doc in documents(output)] == ["Service", "Deployment", "ConfigMap"]
    assert len(report) == 1


def test_disabled_and_already_injected_workloads_stay_as_written():
    disabled = DEPLOYMENT_DOC.replace("  namespace: shop\n", "  namespace: shop\n  annotations: {tracemesh.io/inject: disabled}\n")
    output, report = inject_stream(disabled)
    assert output == "---\n" + disabled
    assert report == ["deployment/catalog skipped (tracemesh.io/inject: disabled)"]


def test_a_list_of_workloads_is_injected_item_by_item():
    items = {"apiVersion": "v1", "kind": "List",
             "items": [yaml.safe_load(DEPLOYMENT_DOC), yaml.safe_load(SERVICE_DOC), yaml.safe_load(POD_DOC)]}
    output, _ = inject_stream(yaml.safe_dump(items))
    deployment, service, pod = documents(output)[0]["items"]
    check_sidecar(deployment, "catalog", 8080)
    check_sidecar(pod, "payments", 50051)
    assert service == yaml.safe_load(SERVICE_DOC)


@pytest.mark.parametrize(
    "text, message",
    [
        ("kind: Deployment\nmetadata: {name: x}\nspec: [1,\n", "not valid YAML at line 4"),
        ("kind: Deployment\nmetadata: {name: x}\nspec: {}\n", "document 1 (deployment/x): spec.template.spec.containers is missing"),
        (stream(SERVICE_DOC, "kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n"),
         "document 2 (pod/p): spec.containers is missing or empty"),
        (POD_DOC.replace("50051", "4143"), "the app uses port 4143, which the sidecar needs"),
        (STATEFULSET_DOC.replace('"7000"', "http"), "tracemesh.io/app-port 'http' is not a port number"),
    ],
)
def test_bad_input_is_an_error_naming_the_problem(tmp_path, capsys, text, message):
    path = tmp_path / "in.yaml"
    path.write_text(text)
    assert main(["inject", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"tracemesh inject: {path}: ") and message in captured.err


def test_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["inject", str(tmp_path / "nope.yaml")]) == 1
    assert "tracemesh inject: cannot read" in capsys.readouterr().err


def test_the_command_reads_stdin_and_writes_stdout():
    """The real command line in a pipe, as in `kubectl get deploy -o yaml | tracemesh inject - | kubectl apply -f -`."""
    text = stream(SERVICE_DOC, DEPLOYMENT_DOC)
    done = subprocess.run([sys.executable, "-m", "tracemesh", "inject", "-", "--image", "tracemesh:test"],
                          input=text, capture_output=True, text=True, cwd=REPO_ROOT, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == inject_stream(text, SidecarSettings(image="tracemesh:test"))[0]
    assert "deployment/catalog injected" in done.stderr
