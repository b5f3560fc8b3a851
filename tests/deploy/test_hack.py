"""The kind end-to-end path cannot run here (no Docker daemon): check it statically — shellcheck,
the manifests against the real Kubernetes schemas, and that everything it refers to exists."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.support import REPO_ROOT, assert_restricted, load_yaml_docs, pod_specs, run_tool, validate_strict

SCRIPT = REPO_ROOT / "hack" / "kind-e2e.sh"


def _script() -> str:
    return SCRIPT.read_text(encoding="utf-8")


def test_hack_scripts_pass_shellcheck() -> None:
    scripts = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "hack").glob("*.sh"))
    assert "hack/kind-e2e.sh" in scripts
    result = run_tool("shellcheck", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_parses_and_is_strict() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    text = _script()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert re.search(r"^trap cleanup EXIT$", text, re.M)
    assert 'KEEP_CLUSTER="${KEEP_CLUSTER:-0}"' in text
    assert SCRIPT.stat().st_mode & 0o111, "hack/kind-e2e.sh must be executable"


def test_script_checks_its_prerequisites_with_clear_messages() -> None:
    text = _script()
    assert "docker info" in text and "Docker daemon is not reachable" in text
    for tool in ("docker", "kind", "kubectl", "helm"):
        assert re.search(rf"for tool in [^;]*\b{tool}\b", text), f"prerequisite {tool} is not checked"


def test_script_refers_only_to_files_that_exist() -> None:
    text = _script()
    referenced = set(re.findall(r"\b((?:hack|examples|charts|operator|trainer_image)/[\w./-]+)", text))
    assert {
        "hack/kind/cluster.yaml",
        "hack/kind/seaweedfs.yaml",
        "charts/kubepeft",
        "operator/Dockerfile",
        "trainer_image/Dockerfile.cpu",
        "examples/tiny-lora.yaml",
        "examples/tiny-lora-2node.yaml",
    } <= referenced
    for path in referenced:
        assert (REPO_ROOT / path).exists(), f"hack/kind-e2e.sh refers to missing {path}"


def test_script_runs_the_whole_flow() -> None:
    text = _script()
    for step in (
        "args=(create cluster --name",  # kind "${args[@]}"
        "kind load docker-image",
        "helm install kubepeft charts/kubepeft",
        "--set defaultStorage.endpoint=",
        "kubepeft demo --prepare-only --job examples/tiny-lora.yaml",
        "aws --endpoint-url",
        'kubectl -n "$JOBS_NS" apply -f examples/tiny-lora.yaml -f examples/tiny-lora-2node.yaml',
        "wait --for=condition=Succeeded",
        "kubepeft verify",
        "get peftjobs",
        "kind delete cluster",
    ):
        assert step in text, f"missing step: {step}"
    # Secrets never appear on a command line: keys come from files.
    assert "--from-literal" not in text


def test_examples_the_script_submits_fit_the_bucket_it_prepares() -> None:
    text = _script()
    bucket = re.search(r'^BUCKET="([^"]+)"', text, re.M)
    assert bucket
    for name in ("tiny-lora", "tiny-lora-2node"):
        (job,) = load_yaml_docs(REPO_ROOT / "examples" / f"{name}.yaml")
        assert job["metadata"]["name"] == name and f"{name}" in text
        spec = job["spec"]
        for uri in (spec["model"]["uri"], spec["dataset"]["uri"], spec["output"]["uri"]):
            assert uri.startswith(f"s3://{bucket.group(1)}/"), uri
        assert spec["resources"]["gpusPerNode"] == 0, "kind has no GPUs: the CPU trainer image runs the examples"
        assert "endpoint" not in spec["output"], "the operator's default endpoint (the in-cluster S3) must apply"
    # `kubepeft demo --prepare-only --job examples/tiny-lora.yaml` uploads the inputs that file names:
    # the two-node example must read the very same ones.
    one_node, two_node = (
        load_yaml_docs(REPO_ROOT / "examples" / f"{n}.yaml")[0] for n in ("tiny-lora", "tiny-lora-2node")
    )
    for field in ("model", "dataset"):
        assert one_node["spec"][field] == two_node["spec"][field]


def test_seaweedfs_manifest_validates_strict_and_is_restricted() -> None:
    docs = load_yaml_docs(REPO_ROOT / "hack" / "kind" / "seaweedfs.yaml")
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Namespace", "Service"]
    for doc in docs:
        validate_strict(doc)
    specs = list(pod_specs(docs))
    assert len(specs) == 1
    name, pod = specs[0]
    assert_restricted(name, pod)
    container = pod["containers"][0]
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", container["image"]), "pin the SeaweedFS image"
    assert container["args"][0] == "mini"
    assert "-s3.config=/etc/seaweedfs/s3.json" in container["args"]
    secret_volumes = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secret_volumes == ["seaweedfs-s3-config"]
    assert "seaweedfs-s3-config" in _script()
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 8333
    namespace = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
    assert f'STORAGE_NS="{namespace}"' in _script()
    assert f"http://seaweedfs.{namespace}.svc:8333" == f"http://{service['metadata']['name']}.{namespace}.svc:8333"


def test_kind_cluster_config_shape() -> None:
    (config,) = load_yaml_docs(REPO_ROOT / "hack" / "kind" / "cluster.yaml")
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"], "two workers for the two-node example"
    for node in config["nodes"]:
        assert set(node) <= {"role", "image", "extraMounts", "extraPortMappings", "labels"}
        assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+(@sha256:[a-f0-9]{64})?", node["image"]), node["image"]
