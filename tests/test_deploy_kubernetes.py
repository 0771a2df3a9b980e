"""deploy/kubernetes: each variant's objects parse, reference each other by the right names, labels and
ports, run the collector with arguments the real CLI accepts, and are where `tracemesh inject` points."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.processes import REPO_ROOT
from tracemesh.cli import build_parser
from tracemesh.demo import SHOP
from tracemesh.inject import SidecarSettings, inject_stream

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
VARIANTS = ["clickhouse", "external-clickhouse"]
NAMESPACE = "tracemesh"


def kustomize(directory: Path) -> list[dict]:
    """The objects `kubectl apply -k directory` creates, for the features these kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory.name}/kustomization.yaml lists {resource}, which does not exist"
        objects += kustomize(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in kustomization.get("secretGenerator", []):
        assert kustomization.get("generatorOptions", {}).get("disableNameSuffixHash"), "the Deployment names the Secret"
        data = dict(literal.split("=", 1) for literal in generator["literals"])
        labels = kustomization["generatorOptions"].get("labels", {})
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": generator["name"], "labels": labels},
                        "stringData": data})
    for obj in objects:
        if obj["kind"] != "Namespace" and "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def find(objects: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name}"
    return found[0]


def container_ports(pod_spec: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in pod_spec["containers"] for p in c.get("ports", [])}


def secret_value(objects: list[dict], ref: dict) -> str:
    return find(objects, "Secret", ref["name"])["stringData"][ref["key"]]


@pytest.fixture(params=VARIANTS)
def variant(request) -> list[dict]:
    return kustomize(KUBERNETES / request.param)


def test_every_manifest_parses_and_names_its_kind():
    for path in KUBERNETES.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] and document["kind"], path
            if document["kind"] != "Kustomization":
                assert document["metadata"]["name"], path


def test_each_variant_has_the_collector_and_its_store_secret(variant):
    assert {"Namespace", "Deployment", "Service", "PersistentVolumeClaim", "Secret"} <= {o["kind"] for o in variant}
    find(variant, "Secret", "tracemesh-store")


def test_objects_sit_in_the_namespace_and_carry_the_labels(variant):
    find(variant, "Namespace", NAMESPACE)
    for obj in variant:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_services_select_their_workloads_by_label_and_named_ports(variant):
    workloads = [o for o in variant if o["kind"] in ("Deployment", "StatefulSet")]
    for service in (o for o in variant if o["kind"] == "Service"):
        selected = [w for w in workloads
                    if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = container_ports(selected[0]["spec"]["template"]["spec"])
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], (service["metadata"]["name"], port)
    for workload in workloads:
        assert workload["spec"]["selector"]["matchLabels"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()


def test_the_collector_runs_with_arguments_the_cli_accepts(variant):
    deployment = find(variant, "Deployment", "tracemesh-collector")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = build_parser(container["args"][0]).parse_args(container["args"])
    ports = container_ports(pod)
    listening = {"otlp-grpc": args.otlp_grpc, "otlp-http": args.otlp_http, "http": args.http, "control": args.control}
    assert {name: f"0.0.0.0:{port}" for name, port in ports.items()} == listening
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ready", "port": "http"}
    # the spool is on the claimed volume, the store URL comes from the Secret
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    find(variant, "PersistentVolumeClaim", claims["spool"])
    assert Path(args.spool).is_relative_to(mount["spool"])
    env = {e["name"]: e for e in container["env"]}
    assert args.store == "$(TRACEMESH_STORE)"
    assert urlsplit(secret_value(variant, env["TRACEMESH_STORE"]["valueFrom"]["secretKeyRef"])).scheme == "clickhouse"
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_the_clickhouse_statefulset_keeps_its_data_on_a_claim_and_matches_the_store_url():
    objects = kustomize(KUBERNETES / "clickhouse")
    statefulset = find(objects, "StatefulSet", "clickhouse")
    service = find(objects, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("clickhouse/clickhouse-server:")
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in container["volumeMounts"]} == claims
    env = {e["name"]: e.get("value") or secret_value(objects, e["valueFrom"]["secretKeyRef"]) for e in container["env"]}
    collector = find(objects, "Deployment", "tracemesh-collector")["spec"]["template"]["spec"]["containers"][0]
    store_ref = next(e for e in collector["env"] if e["name"] == "TRACEMESH_STORE")["valueFrom"]["secretKeyRef"]
    store = urlsplit(secret_value(objects, store_ref))
    assert (store.hostname, store.port) == (service["metadata"]["name"], container_ports(statefulset["spec"]["template"]["spec"])["native"])
    assert (store.username, store.password, store.path) == (env["CLICKHOUSE_USER"], env["CLICKHOUSE_PASSWORD"], "/" + env["CLICKHOUSE_DB"])


def test_the_external_variant_runs_no_clickhouse():
    objects = kustomize(KUBERNETES / "external-clickhouse")
    assert not [o for o in objects if "clickhouse" in o["metadata"]["name"]]
    assert urlsplit(find(objects, "Secret", "tracemesh-store")["stringData"]["url"]).hostname != "clickhouse"


def test_injected_sidecars_point_at_the_collector_service():
    objects = kustomize(KUBERNETES / "clickhouse")
    service = find(objects, "Service", "tracemesh-collector")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    defaults = SidecarSettings()
    assert defaults.collector == f"http://{host}:{ports['otlp-http']}"
    assert defaults.control == f"{host}:{ports['control']}"
    collector = find(objects, "Deployment", "tracemesh-collector")["spec"]["template"]["spec"]["containers"][0]
    assert collector["image"] == defaults.image  # one image for the collector and the sidecar


def shop_workloads() -> tuple[list[dict], list[dict]]:
    """The example shop before and after `tracemesh inject`."""
    text = (KUBERNETES / "shop" / "shop.yaml").read_text()
    injected, _ = inject_stream(text)
    assert inject_stream(injected)[0] == injected
    return [d for d in yaml.safe_load_all(text) if d], [d for d in yaml.safe_load_all(injected) if d]


def app_options(container: dict) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in container["args"] if arg.startswith("--"))


def test_the_example_shop_is_the_demo_shop_once_injected():
    _, objects = shop_workloads()
    collector = find(kustomize(KUBERNETES / "clickhouse"), "Service", "tracemesh-collector")
    collector_ports = {p["name"]: p["port"] for p in collector["spec"]["ports"]}
    collector_host = f"{collector['metadata']['name']}.{collector['metadata']['namespace']}.svc.cluster.local"
    instances: dict[str, int] = {}
    for deployment in (o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] != "traffic"):
        app, proxy = deployment["spec"]["template"]["spec"]["containers"]
        args, options = build_parser("proxy").parse_args(proxy["args"]), app_options(app)
        instances[args.service] = instances.get(args.service, 0) + deployment["spec"]["replicas"]
        demo_service = next(s for s in SHOP if s.name == args.service)
        script = REPO_ROOT / Path(app["args"][0]).relative_to("/opt/tracemesh")
        assert script.name == demo_service.script and script.is_file()
        defined = set(re.findall(r'add_argument\(\s*"--([a-z-]+)"', script.read_text()))
        assert set(options) <= defined, deployment["metadata"]["name"]
        assert args.app == f"127.0.0.1:{options['port']}"
        assert options.get("outbound") == (args.outbound if demo_service.calls_out else None)
        telemetry = urlsplit(options.get("otlp") or options["zipkin"])
        assert (telemetry.hostname, telemetry.port) == (
            collector_host, collector_ports["http" if demo_service.zipkin else "otlp-http"])
    assert instances == {s.name: s.instances for s in SHOP}


def test_the_shoppers_reach_the_frontend_sidecar_through_its_service():
    before, after = shop_workloads()
    traffic = find(after, "Deployment", "traffic")
    assert traffic == find(before, "Deployment", "traffic")  # not injected
    target = app_options(traffic["spec"]["template"]["spec"]["containers"][0])["target"]
    service = find(after, "Service", "frontend")
    host, port = target.rsplit(":", 1)
    assert host == f"frontend.{service['metadata']['namespace']}.svc.cluster.local"
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == int(port)
    frontend = find(after, "Deployment", "frontend")["spec"]["template"]
    assert service["spec"]["selector"].items() <= frontend["metadata"]["labels"].items()
    assert service_port["targetPort"] in container_ports(frontend["spec"])
