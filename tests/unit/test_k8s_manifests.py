"""The Kubernetes manifests in deploy/k8s agree with the code, config.yaml and each other: one
Deployment per service running the one image as that service, probes on the service's metrics
port, non-root pods with time to stop, secrets only through the Secret, autoscalers that point at
real Deployments, the migration Job, and a kustomization that lists every file.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import load_all_yaml_as_written, load_yaml_as_written

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KEZEK_SERVICES = ["registry", "applications", "queue", "allocation", "audit", "gateway"]
SECRET_KEYS = {"KEZEK_DB_URL", "KEZEK_AMQP_URI", "KEZEK_TOKEN_SECRET"}
NAMESPACE = "kezek"


# -- helpers ---------------------------------------------------------------------------------------
def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml"))


def load_docs() -> list[tuple[str, dict]]:
    """Every Kubernetes object under deploy/k8s as (file name, object); not the kustomization."""
    docs = []
    for path in manifest_files():
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all_yaml_as_written(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def config_text() -> str:
    return (ROOT / "config.yaml").read_text()


def variables_config_reads() -> set[str]:
    return set(re.findall(r"\$\{(KEZEK_\w+)", config_text()))


def metrics_ports() -> dict[str, int]:
    """The default metrics port of every service, from config.yaml's ${VAR:default}."""
    raw = load_yaml_as_written(config_text())["KEZEK"]["METRICS_PORTS"]
    return {name: int(re.fullmatch(r"\$\{\w+:(\d+)\}", value).group(1))
            for name, value in raw.items()}


def metrics_variables() -> dict[str, str]:
    """service -> the environment variable that overrides its metrics port."""
    raw = load_yaml_as_written(config_text())["KEZEK"]["METRICS_PORTS"]
    return {name: re.fullmatch(r"\$\{(\w+):\d+\}", value).group(1) for name, value in raw.items()}


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, dict]]:
    return load_docs()


def of_kind(docs, kind: str) -> dict[str, dict]:
    found = {}
    for _, doc in docs:
        if doc["kind"] == kind:
            name = doc["metadata"]["name"]
            assert name not in found, f"two {kind}s named {name}"
            found[name] = doc
    return found


@pytest.fixture(scope="module")
def deployments(docs) -> dict[str, dict]:
    return of_kind(docs, "Deployment")


@pytest.fixture(scope="module")
def configmap(docs) -> dict:
    maps = of_kind(docs, "ConfigMap")
    assert list(maps) == ["kezek-config"]
    return maps["kezek-config"]


def only_container(pod_spec: dict) -> dict:
    containers = pod_spec["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(container: dict) -> dict:
    return {item["name"]: item for item in container.get("env", [])}


def effective(pod_spec: dict, container: dict, key: str):
    """A security setting as Kubernetes applies it: the container's, else the pod's."""
    if key in container.get("securityContext", {}):
        return container["securityContext"][key]
    return pod_spec.get("securityContext", {}).get(key)


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"probe port {port!r} is not a named container port"
    return named[port]


# -- every object ----------------------------------------------------------------------------------
def test_every_file_parses_and_every_object_is_in_the_kezek_namespace(docs):
    assert docs
    for filename, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), filename
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, (filename, doc["kind"],
                                                                     doc["metadata"]["name"])
    assert "Namespace" in {doc["kind"] for _, doc in docs}


def test_kustomization_lists_every_file_in_the_folder():
    kustomization = load_yaml_as_written((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {p.name for p in manifest_files()} - {"kustomization.yaml"}
    assert set(listed) == expected
    assert kustomization.get("namespace", NAMESPACE) == NAMESPACE


def test_kubectl_kustomize_builds_the_folder():
    kubectl = shutil.which("kubectl")
    assert kubectl, "no kubectl: `make test` installs Debian's kubernetes-client when absent"
    result = subprocess.run([kubectl, "kustomize", str(K8S)], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in load_all_yaml_as_written(result.stdout) if doc]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for _, d in load_docs())


# -- Deployments -----------------------------------------------------------------------------------
def test_every_kezek_service_has_a_deployment_of_the_one_image_as_itself(deployments):
    assert set(deployments) == set(KEZEK_SERVICES)
    images = set()
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]
        # the selector picks this service's pods and no other's
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == name
        container = only_container(pod["spec"])
        images.add(container["image"])
        assert env_of(container)["SERVICE"]["value"] == name
        # the entry point starts $SERVICE only when given no command or arguments
        assert "command" not in container and "args" not in container, name
    assert len(images) == 1


def test_probes_use_the_metrics_port_config_yaml_gives_each_service(deployments, configmap):
    ports = metrics_ports()
    overrides = metrics_variables()
    assert set(ports) == set(KEZEK_SERVICES)
    for name, deployment in deployments.items():
        pod_spec = deployment["spec"]["template"]["spec"]
        container = only_container(pod_spec)
        # a port moved through the environment would leave the probes knocking on the old one
        assert overrides[name] not in configmap["data"], name
        assert overrides[name] not in env_of(container), name
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert port_number(container, get["port"]) == ports[name], (name, probe)
        exposed = {p["containerPort"] for p in container["ports"]}
        assert ports[name] in exposed, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(ports[name])
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


def test_pods_run_as_non_root_without_privileges_and_get_time_to_stop(deployments):
    for name, deployment in deployments.items():
        pod_spec = deployment["spec"]["template"]["spec"]
        container = only_container(pod_spec)
        assert effective(pod_spec, container, "runAsNonRoot") is True, name
        assert effective(pod_spec, container, "runAsUser") == 10001, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"].get("privileged", False) is False, name
        assert "ALL" in container["securityContext"]["capabilities"]["drop"], name
        # nameko finishes the work in flight after SIGTERM (compose gives it 60 s too)
        assert pod_spec["terminationGracePeriodSeconds"] >= 30, name
        if container["securityContext"].get("readOnlyRootFilesystem"):
            # the service writes var/ (the SMS outbox) and temporary files
            mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert {"/tmp", "/app/var"} <= mounted, name


def test_every_container_states_resource_requests_and_limits(deployments):
    for name, deployment in deployments.items():
        resources = only_container(deployment["spec"]["template"]["spec"])["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), (name, kind)


def test_the_gateway_listens_on_8000_behind_its_service(docs, deployments):
    container = only_container(deployments["gateway"]["spec"]["template"]["spec"])
    assert env_of(container)["KEZEK_GATEWAY_ADDRESS"]["value"] == "0.0.0.0:8000"
    services = of_kind(docs, "Service")
    gateway = services["gateway"]["spec"]
    assert gateway["selector"].items() <= (
        deployments["gateway"]["spec"]["template"]["metadata"]["labels"].items())
    (port,) = gateway["ports"]
    assert port["port"] == 8000 and port_number(container, port["targetPort"]) == 8000


def test_every_service_selector_matches_some_pods(docs, deployments):
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for name, service in of_kind(docs, "Service").items():
        if service["spec"].get("type") == "ExternalName":
            continue
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


# -- configuration and secrets ---------------------------------------------------------------------
def test_secrets_reach_the_pods_only_through_the_secret(docs, deployments, configmap):
    secrets = of_kind(docs, "Secret")
    assert set(secrets) == {"kezek-secrets"}
    template = secrets["kezek-secrets"]
    assert set(template.get("stringData", {})) | set(template.get("data", {})) == SECRET_KEYS
    # a template: every value is an obvious placeholder
    for key, value in template["stringData"].items():
        assert "change-me" in value, key
    assert not SECRET_KEYS & set(configmap["data"])
    jobs = of_kind(docs, "Job")
    pods = [d["spec"]["template"]["spec"] for d in list(deployments.values()) + list(jobs.values())]
    for pod_spec in pods:
        container = only_container(pod_spec)
        from_secret = {ref["secretRef"]["name"] for ref in container.get("envFrom", [])
                       if "secretRef" in ref}
        env = env_of(container)
        for key in SECRET_KEYS:
            if key in env:
                assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "kezek-secrets", key
            else:
                assert from_secret == {"kezek-secrets"}, key
        # no literal connection string or password anywhere in the pod spec
        text = yaml.safe_dump(pod_spec)
        assert not re.search(r"(postgresql|amqp)(\+\w+)?://", text)
        assert "change-me" not in text and "password" not in text.lower()


def test_configmap_sets_only_variables_config_yaml_reads(configmap, deployments):
    read = variables_config_reads()
    assert set(configmap["data"]) <= read
    assert all(isinstance(value, str) for value in configmap["data"].values())
    set_in_deployments = {var for d in deployments.values()
                          for var in env_of(only_container(d["spec"]["template"]["spec"]))
                          if var.startswith("KEZEK_")}
    assert set_in_deployments <= read
    # every setting is in the manifests except the metrics ports, whose defaults the probes use
    provided = set(configmap["data"]) | SECRET_KEYS | set_in_deployments
    assert read - provided == set(metrics_variables().values())


def test_external_rabbitmq_and_postgres_have_in_namespace_names(docs):
    services = of_kind(docs, "Service")
    for name in ("rabbitmq", "postgres"):
        assert services[name]["spec"]["type"] == "ExternalName"
        assert services[name]["spec"]["externalName"]


# -- autoscaling and the migration Job -------------------------------------------------------------
def test_allocation_and_gateway_autoscale_on_cpu(docs, deployments):
    autoscalers = {}
    for _, doc in docs:
        if doc["kind"] == "HorizontalPodAutoscaler":
            assert doc["apiVersion"] == "autoscaling/v2"
            target = doc["spec"]["scaleTargetRef"]
            assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
            assert target["name"] in deployments
            autoscalers[target["name"]] = doc["spec"]
    assert set(autoscalers) == {"allocation", "gateway"}
    for name, spec in autoscalers.items():
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        resources = [m["resource"] for m in spec["metrics"] if m["type"] == "Resource"]
        assert any(r["name"] == "cpu" and r["target"]["type"] == "Utilization"
                   for r in resources), name
        # utilisation is measured against the request, so there must be one
        container = only_container(deployments[name]["spec"]["template"]["spec"])
        assert "cpu" in container["resources"]["requests"]
        # a fixed replica count would be reset by every `kubectl apply`, fighting the autoscaler
        assert "replicas" not in deployments[name]["spec"], name


def test_the_migration_job_runs_kezek_migrate_with_the_one_image(docs, deployments):
    jobs = of_kind(docs, "Job")
    assert len(jobs) == 1
    (job,) = jobs.values()
    pod_spec = job["spec"]["template"]["spec"]
    container = only_container(pod_spec)
    # arguments to the image's entry point, which runs any command given to it
    assert "command" not in container
    assert container["args"] == ["kezek", "migrate"]
    images = {only_container(d["spec"]["template"]["spec"])["image"] for d in deployments.values()}
    assert images == {container["image"]}
    assert pod_spec["restartPolicy"] in ("OnFailure", "Never")
    assert effective(pod_spec, container, "runAsNonRoot") is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
