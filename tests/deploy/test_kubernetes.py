"""deploy/kubernetes/: every manifest passes the Kubernetes schemas (strict, offline), and the
manifests agree with each other, with the image and with the service's own settings."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.drain import GOODBYE_GRACE_SECS
from gateway.settings import ENVIRONMENT_KEYS, load_config
from tests.corpus import skip_or_fail
from tests.gateway.server import REPO

MANIFESTS = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.29", "1.33")
NOT_IN_KUSTOMIZATION = {"redis.yaml", "sip-service.yaml"}

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - reported by the fixture below
    kubernetes_validate = None


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The schemas ship with kubernetes-validate: any attempt to fetch one fails the test."""
    if kubernetes_validate is None:
        skip_or_fail("kubernetes-validate not installed (pip install kubernetes-validate)")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during validation: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def documents() -> dict[str, list[dict]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(MANIFESTS.glob("*.yaml"))
    }


def objects() -> dict[tuple[str, str], dict]:
    """(kind, name) -> object, for every Kubernetes object in the manifests."""
    found = {}
    for docs in documents().values():
        for doc in docs:
            if doc["kind"] != "Kustomization":
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def schema_errors(doc: dict, version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(map(str, exc.path))}: {exc.message}"
    return None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_the_strict_schemas(version: str) -> None:
    kinds = set()
    for name, docs in documents().items():
        for doc in docs:
            if doc["kind"] == "Kustomization":
                continue
            kinds.add(doc["kind"])
            assert schema_errors(doc, version) is None, (name, schema_errors(doc, version))
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert {*expected, "ConfigMap", "Secret"} <= kinds


def test_validation_catches_a_broken_manifest() -> None:
    deployment = objects()[("Deployment", "callgate")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert schema_errors(broken, KUBERNETES_VERSIONS[-1]) is not None
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = container[
        "readinessProbe"
    ]
    assert schema_errors(misspelt, KUBERNETES_VERSIONS[-1]) is not None


def test_kustomization_lists_the_core_manifests() -> None:
    [kustomization] = documents()["kustomization.yaml"]
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - NOT_IN_KUSTOMIZATION


def _gateway_pod() -> tuple[dict, dict]:
    deployment = objects()[("Deployment", "callgate")]
    pod = deployment["spec"]["template"]
    return pod, pod["spec"]["containers"][0]


def test_probes_and_drain_fit_the_service() -> None:
    pod, container = _gateway_pod()
    config = yaml.safe_load(objects()[("ConfigMap", "callgate-config")]["data"]["callgate.yaml"])
    [port] = container["ports"]
    assert port["containerPort"] == config["server"]["port"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    prestop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert prestop[0] == "sleep"
    needed = float(prestop[1]) + config["calls"]["drain_timeout_secs"] + GOODBYE_GRACE_SECS
    assert pod["spec"]["terminationGracePeriodSeconds"] >= needed
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_pods_run_as_the_image_user() -> None:
    pod, container = _gateway_pod()
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, user.groups()))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_selectors_and_references_line_up() -> None:
    found = objects()
    pod, container = _gateway_pod()
    labels = pod["metadata"]["labels"]
    for kind, name in (("Service", "callgate"), ("Service", "callgate-sip")):
        assert found[(kind, name)]["spec"]["selector"].items() <= labels.items()
    pdb = found[("PodDisruptionBudget", "callgate")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = found[("HorizontalPodAutoscaler", "callgate")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "callgate")
    [secret_ref] = container["envFrom"]
    assert ("Secret", secret_ref["secretRef"]["name"]) in found
    config_volume = next(v for v in pod["spec"]["volumes"] if "configMap" in v)
    assert ("ConfigMap", config_volume["configMap"]["name"]) in found
    redis_url = urlsplit(found[("Secret", "callgate-secrets")]["stringData"]["CALLGATE_REDIS_URL"])
    redis_service = found[("Service", redis_url.hostname)]
    assert redis_url.port in {port["port"] for port in redis_service["spec"]["ports"]}


def test_every_variable_is_one_the_service_reads() -> None:
    _, container = _gateway_pod()
    text = (MANIFESTS / "deployment.yaml").read_text()
    named = {item["name"] for item in container["env"]}
    named |= set(re.findall(r"#\s*- name: ([A-Z_]+)", text))  # the commented-out options
    named |= set(objects()[("Secret", "callgate-secrets")]["stringData"])
    assert named - set(ENVIRONMENT_KEYS) == set()


def test_the_config_map_is_a_loadable_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Laid out as the Deployment mounts it, with the pod's environment, it loads; its default
    agent is the shipped one."""
    pod, container = _gateway_pod()
    data = objects()[("ConfigMap", "callgate-config")]["data"]
    volume = next(v for v in pod["spec"]["volumes"] if "configMap" in v)
    for item in volume["configMap"]["items"]:
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    assert {item["key"] for item in volume["configMap"]["items"]} == set(data)
    for variable in ENVIRONMENT_KEYS:
        monkeypatch.delenv(variable, raising=False)
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    config = load_config(tmp_path / "callgate.yaml")
    assert config.settings.public_url == "https://voice.example.com"
    shipped = yaml.safe_load((REPO / "config" / "agents" / "default.yaml").read_text())
    assert yaml.safe_load(data["agent-default.yaml"]) == shipped
