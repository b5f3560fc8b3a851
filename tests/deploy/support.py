"""Helpers for the deploy tier: render the chart with the real Helm SDK, validate objects with
the real Kubernetes OpenAPI schemas, and read RBAC rules and pod templates."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "kubepeft"
RELEASE = "kubepeft"
RELEASE_NAMESPACE = "kubepeft-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema we have.
KUBE_VERSIONS = ("1.29", kubernetes_validate.latest_version())
# Kinds without a Kubernetes OpenAPI schema: their shape is checked by dedicated tests.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}

# Realistic overrides, each rendered, validated and checked by the tests.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "two-replicas": {"replicas": 2},
    "two-replicas-namespaced": {"replicas": 2, "watchNamespaces": ["team-a", "team-b"]},
    "custom-images": {
        "images": {
            "operator": {
                "repository": "registry.example.com/ml/kubepeft-operator",
                "tag": "1.2.3",
                "pullPolicy": "Always",
            },
            "trainer": {
                "repository": "registry.example.com/ml/kubepeft-trainer",
                "digest": "sha256:" + "a" * 64,
                "pullPolicy": "Always",
            },
            "trainerCpu": {"repository": "registry.example.com/ml/kubepeft-trainer-cpu", "tag": "1.2.3-cpu"},
        },
        "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror-cred"}],
    },
    "custom-storage": {
        "defaultStorage": {
            "endpoint": "https://minio.storage.svc:9000",
            "region": "eu-west-1",
            "credentialsSecret": "team-s3",
        },
        "trainer": {
            "defaultResources": {"cpu": "8", "memory": "64Gi"},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "control-plane", "operator": "Exists", "effect": "NoSchedule"}],
        "podAnnotations": {"example.com/team": "ml"},
        "logLevel": "DEBUG",
        "maxWorkers": 40,
    },
}


def load_chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


def render_text(values: dict[str, Any], *, namespace: str = RELEASE_NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, exactly as `helm template` would produce it."""
    with load_chart() as chart:
        return chart.render(values, name=RELEASE, namespace=namespace, is_install=True)


def render(values: dict[str, Any], *, namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """Every object the chart renders (NOTES.txt excluded)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_text(values, namespace=namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or the valueFrom dict) of the operator container."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# Kinds that first exist (as v1) in a later Kubernetes than the chart's oldest: validated from there.
SINCE = {"ValidatingAdmissionPolicy": "1.30", "ValidatingAdmissionPolicyBinding": "1.30"}


def validate_strict(obj: dict[str, Any]) -> None:
    """Validate against the real OpenAPI schemas (strict: unknown fields fail) for every version."""
    oldest = SINCE.get(obj["kind"])
    for version in (v for v in KUBE_VERSIONS if oldest is None or tuple(map(int, v.split("."))) >= (1, 30)):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            where = f"{obj['kind']}/{obj['metadata']['name']}"
            raise AssertionError(f"{where} invalid for Kubernetes {version}: {path}: {err.message}") from None


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a rule list grants."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload's pod template."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield f"Pod/{obj['metadata']['name']}", obj["spec"]


def assert_restricted(name: str, pod: dict[str, Any]) -> None:
    """The Pod Security "restricted" profile, field by field (plus our stricter defaults)."""
    pod_ctx = pod.get("securityContext", {})
    assert pod_ctx.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot"
    assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: pod seccompProfile"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), f"{name}: host namespaces"
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        allowed = {
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        }
        assert kinds <= allowed, f"{name}: volume {volume['name']} of type {kinds} not allowed by restricted"
    for container in pod.get("initContainers", []) + pod["containers"]:
        where = f"{name} container {container['name']}"
        ctx = container.get("securityContext", {})
        assert ctx.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
        assert ctx.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop"
        assert not ctx.get("capabilities", {}).get("add"), f"{where}: capabilities.add"
        assert not ctx.get("privileged"), f"{where}: privileged"
        run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        assert run_as_user not in (None, 0), f"{where}: runAsUser must be set and non-zero"
        assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, f"{where}: runAsNonRoot"
        seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), f"{where}: seccompProfile"
        for port in container.get("ports", []):
            assert "hostPort" not in port, f"{where}: hostPort"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a linter from this interpreter's environment (.venv/bin)."""
    tool = Path(sys.executable).parent / args[0]
    assert tool.exists(), f"{tool} is missing: run `make setup`"
    return subprocess.run([str(tool), *args[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
