"""Pure render tests: every object is valid Kubernetes (strict, current schemas) and says what we mean."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from kubepeft_operator import naming
from kubepeft_operator.preflight import check_claims, check_secrets, claims_to_read
from kubepeft_operator.render import (
    credential_mounts,
    render_job_children,
    render_worker_pod,
    render_workers,
)
from kubepeft_operator.settings import OperatorSettings

from kubepeft.contract import DEFAULT_CONFIG_PATH, TrainerConfig
from kubepeft.worker_paths import CONFIG_DIR, RESERVED
from tests.operator.support import NS, S3_KEYS, UID, identity, spec

K8S_VERSION = kubernetes_validate.latest_version()
SETTINGS = OperatorSettings()


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


SPECS = {
    "cpu-2node": spec(),
    "gpu-placed": spec(
        resources={
            "nodes": 1,
            "gpusPerNode": 4,
            "sharedMemory": "8Gi",
            "scratch": "100Gi",
            "nodeSelector": {"pool": "a100"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                }
            },
            "priorityClassName": "training",
            "image": "my/trainer:dev",
        }
    ),
    "hf-paths": spec(
        model={"uri": "hf://org/model", "credentialsSecretRef": {"name": "hf", "tokenKey": "tok"}},
        dataset={"uri": "/data/train.jsonl"},
        output={"uri": "/out"},
    ),
    # Inputs from anywhere: a model on a claim, a dataset on a second S3 server with its own keys,
    # an adapter with its own Secret, the output on another claim (read-write).
    "volumes": spec(
        model={"uri": "pvc://models/tiny-llama"},
        dataset={
            "uri": "s3://lake/train.jsonl",
            "endpoint": "https://lake.example.com",
            "credentialsSecretRef": {"name": "lake-creds"},
        },
        adapters={"sources": [{"uri": "s3://runs/adapters/a", "credentialsSecretRef": {"name": "adapter-creds"}}]},
        volumes=[{"claimName": "models"}, {"claimName": "scratch-runs.v1", "mountPath": "/data/runs"}],
        output={"uri": "/data/runs/out"},
    ),
}
SETTINGS_VARIANTS = {
    "default": SETTINGS,
    "full": OperatorSettings(
        image_pull_secrets=("reg",),
        trainer_node_selector={"pool": "default", "arch": "amd64"},
        trainer_tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
        trainer_default_cpu="8",
        trainer_default_memory="32Gi",
        default_credentials_secret="fallback",
        default_s3_endpoint="http://seaweed:8333",
        default_s3_region="eu-1",
    ),
}


@pytest.mark.parametrize("settings_name", SETTINGS_VARIANTS)
@pytest.mark.parametrize("spec_name", SPECS)
def test_every_rendered_object_is_valid_kubernetes(spec_name: str, settings_name: str) -> None:
    job, peft, settings = (
        identity(labels={naming.KUEUE_QUEUE_LABEL: "team"}),
        SPECS[spec_name],
        SETTINGS_VARIANTS[settings_name],
    )
    objects = render_job_children(job, peft, settings) + render_workers(job, peft, settings, attempt=3)
    assert [o["kind"] for o in objects[:6]] == [
        "ConfigMap",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Service",
    ]
    for obj in objects:
        validate(obj)
        meta = obj["metadata"]
        assert meta["namespace"] == NS and meta["labels"][naming.LABEL_JOB_NAME] == "tune"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubepeft.dev/v1alpha1",
                "kind": "PeftJob",
                "name": "tune",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_validation_catches_mistakes() -> None:
    """The validator is not a rubber stamp: a misspelt field and a non-string quantity fail."""
    pod = render_worker_pod(identity(), spec(), SETTINGS, 1, 0)
    pod["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


def test_config_map_carries_the_trainer_config_with_operator_defaults() -> None:
    settings = SETTINGS_VARIANTS["full"]
    config_map = render_job_children(identity(), spec(output={"uri": "s3://runs/out"}), settings)[0]
    config = TrainerConfig.from_json(config_map["data"]["config.json"])
    assert config.job.name == "tune" and config.job.namespace == NS and config.job.uid == UID
    assert config.output.root == f"s3://runs/out/{NS}/tune"
    assert config.output.endpoint == "http://seaweed:8333" and config.output.region == "eu-1"
    assert config.credentials_dirs == {
        "model": "/var/run/secrets/kubepeft/model",
        "dataset": "/var/run/secrets/kubepeft/dataset",
        "output": "/var/run/secrets/kubepeft/output",
    }
    explicit = render_job_children(
        identity(), spec(output={"uri": "s3://runs/o", "endpoint": "http://mine:9000"}), settings
    )[0]
    mine = TrainerConfig.from_json(explicit["data"]["config.json"])
    assert mine.output.endpoint == "http://mine:9000" and mine.output.region == "us-east-1"


def test_credentials_are_projected_files_never_values() -> None:
    mounts = {m.source: m for m in credential_mounts(spec(), SETTINGS)}
    assert mounts["model"].secret == "model-creds" and mounts["model"].explicit
    assert mounts["dataset"].secret == "s3-creds"  # the dataset falls back to the output's ref
    assert mounts["output"].items == (
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    hf = {m.source: m for m in credential_mounts(SPECS["hf-paths"], SETTINGS)}
    assert list(hf) == ["model"] and hf["model"].items == (("tok", "HF_TOKEN"),)
    default = {m.source: m for m in credential_mounts(spec(model={"uri": "hf://o/m"}), SETTINGS_VARIANTS["full"])}
    assert default["model"].secret == "fallback" and not default["model"].explicit

    pod = render_worker_pod(identity(), spec(), SETTINGS, 1, 0)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    source = volumes["credentials-model"]["projected"]["sources"][0]["secret"]
    assert source["name"] == "model-creds" and "optional" not in source
    assert {i["path"] for i in source["items"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    mounts_by_name = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts_by_name["credentials-output"] == {
        "name": "credentials-output",
        "mountPath": "/var/run/secrets/kubepeft/output",
        "readOnly": True,
    }
    assert "secretKeyRef" not in json.dumps(pod) and "eA==" not in json.dumps(pod)


def test_a_hub_dataset_does_not_borrow_the_outputs_s3_secret() -> None:
    """The output's Secret holds S3 keys; demanding a hub token from it would fail a valid job."""
    hub = spec(dataset={"uri": "hf://org/data"})
    mounts = credential_mounts(hub, SETTINGS)
    assert "dataset" not in {m.source for m in mounts}
    found = {"model-creds": frozenset(S3_KEYS), "s3-creds": frozenset(S3_KEYS)}
    assert check_secrets(mounts, found, NS).ok
    # Its own ref is used as given, and the operator's default Secret still applies (optionally).
    own = {
        m.source: m
        for m in credential_mounts(
            spec(dataset={"uri": "hf://org/data", "credentialsSecretRef": {"name": "hub"}}), SETTINGS
        )
    }
    assert own["dataset"].secret == "hub" and own["dataset"].items == (("HF_TOKEN", "HF_TOKEN"),)
    default = {m.source: m for m in credential_mounts(hub, SETTINGS_VARIANTS["full"])}
    assert default["dataset"].secret == "fallback" and not default["dataset"].explicit


def test_worker_pod_shape() -> None:
    pod = render_worker_pod(identity(), spec(), SETTINGS, attempt=2, rank=1)
    meta, podspec = pod["metadata"], pod["spec"]
    container = podspec["containers"][0]
    assert meta["name"] == "tune-a2-1"
    assert meta["labels"][naming.LABEL_ATTEMPT] == "2" and meta["labels"][naming.LABEL_RANK] == "1"
    assert podspec["hostname"] == "tune-1" and podspec["subdomain"] == "tune"
    assert podspec["restartPolicy"] == "Never" and podspec["serviceAccountName"] == "tune-trainer"
    assert container["command"] == ["kubepeft", "train"] and container["image"] == SETTINGS.trainer_image_cpu
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    env = env_of(pod)
    assert env["KUBEPEFT_NODE_RANK"] == "1" and env["KUBEPEFT_NUM_NODES"] == "2"
    assert env["KUBEPEFT_PROCS_PER_NODE"] == "1" and env["KUBEPEFT_MASTER_PORT"] == "29500"
    assert env["KUBEPEFT_MASTER_ADDR"] == f"tune-0.tune.{NS}.svc"
    assert env["KUBEPEFT_ATTEMPT"] == "2" and env["KUBEPEFT_PROGRESS_CONFIGMAP"] == "tune-progress"
    assert env["KUBEPEFT_CONFIG"] == "/etc/kubepeft/config.json" and env["OMP_NUM_THREADS"] == "2"
    assert env["KUBEPEFT_WORKDIR"] == "/scratch"  # the trainer works on the sized scratch volume
    assert env["HF_HOME"].startswith("/cache/") and env["TORCH_EXTENSIONS_DIR"].startswith("/cache/")
    assert env["KUBEPEFT_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # Pod Security "restricted".
    assert podspec["securityContext"]["runAsNonRoot"] and podspec["securityContext"]["runAsUser"] == 1000
    assert podspec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/cache", "/scratch", "/dev/shm", "/etc/kubepeft"} <= mounts
    shm = next(v for v in podspec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}


def test_gpu_pod_uses_gpu_image_limits_and_merged_placement() -> None:
    settings = SETTINGS_VARIANTS["full"]
    pod = render_worker_pod(identity(), SPECS["gpu-placed"], settings, 1, 0)
    container, podspec = pod["spec"]["containers"][0], pod["spec"]
    assert container["image"] == "my/trainer:dev"
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "4"}
    assert "OMP_NUM_THREADS" not in env_of(pod) and env_of(pod)["KUBEPEFT_PROCS_PER_NODE"] == "4"
    assert podspec["nodeSelector"] == {"pool": "a100", "arch": "amd64"}  # the spec wins over the defaults
    assert [t["key"] for t in podspec["tolerations"]] == ["dedicated", "gpu"]
    assert podspec["priorityClassName"] == "training" and podspec["imagePullSecrets"] == [{"name": "reg"}]
    assert podspec["affinity"]["nodeAffinity"]
    assert next(v for v in podspec["volumes"] if v["name"] == "scratch")["emptyDir"] == {"sizeLimit": "100Gi"}
    gpu_default = render_worker_pod(identity(), spec(resources={"gpusPerNode": 1}), SETTINGS, 1, 0)
    assert gpu_default["spec"]["containers"][0]["image"] == SETTINGS.trainer_image


def test_kueue_labels_make_each_attempt_one_pod_group() -> None:
    job = identity(labels={naming.KUEUE_QUEUE_LABEL: "team-queue"})
    pods = render_workers(job, spec(), SETTINGS, attempt=4)
    for pod in pods:
        assert pod["metadata"]["labels"][naming.KUEUE_QUEUE_LABEL] == "team-queue"
        assert pod["metadata"]["labels"][naming.KUEUE_POD_GROUP_LABEL] == "tune-a4"
        assert pod["metadata"]["annotations"][naming.KUEUE_POD_GROUP_TOTAL] == "2"
    plain = render_worker_pod(identity(), spec(), SETTINGS, 1, 0)
    assert naming.KUEUE_POD_GROUP_LABEL not in plain["metadata"]["labels"] and "annotations" not in plain["metadata"]


def test_rendezvous_is_consistent_across_ranks_and_service_selects_all_workers() -> None:
    job, peft = identity(), spec(resources={"nodes": 4, "gpusPerNode": 2})
    pods = render_workers(job, peft, SETTINGS, attempt=1)
    envs = [env_of(p) for p in pods]
    assert [e["KUBEPEFT_NODE_RANK"] for e in envs] == ["0", "1", "2", "3"]
    for key in ("KUBEPEFT_MASTER_ADDR", "KUBEPEFT_MASTER_PORT", "KUBEPEFT_NUM_NODES", "KUBEPEFT_PROCS_PER_NODE"):
        assert len({e[key] for e in envs}) == 1, key
    service = render_job_children(job, peft, SETTINGS)[5]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    host0 = pods[0]["spec"]["hostname"]
    assert envs[0]["KUBEPEFT_MASTER_ADDR"] == f"{host0}.{service['metadata']['name']}.{NS}.svc"


def test_trainer_role_grants_only_its_progress_config_map() -> None:
    children = render_job_children(identity(), spec(), SETTINGS)
    role, binding = children[3], children[4]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["tune-progress"], "verbs": ["get", "patch"]}
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tune-trainer", "namespace": NS}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_declared_claims_are_mounted_read_only_except_the_outputs() -> None:
    pod = render_worker_pod(identity(), SPECS["volumes"], SETTINGS, attempt=1, rank=0)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert volumes["claim-0"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert mounts["claim-0"] == {"name": "claim-0", "mountPath": "/mnt/kubepeft/volumes/models", "readOnly": True}
    # The output is an absolute path on the second claim: that one is writable.
    assert volumes["claim-1"]["persistentVolumeClaim"] == {"claimName": "scratch-runs.v1"}
    assert mounts["claim-1"] == {"name": "claim-1", "mountPath": "/data/runs"}
    assert pod["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    # A pvc:// output makes its own claim writable the same way.
    on_claim = spec(volumes=[{"claimName": "runs"}], output={"uri": "pvc://runs/out"})
    claim = render_worker_pod(identity(), on_claim, SETTINGS, 1, 0)["spec"]["volumes"][-1]
    assert claim["persistentVolumeClaim"] == {"claimName": "runs"}
    # Jobs without volumes render exactly as before.
    plain = render_worker_pod(identity(), spec(), SETTINGS, 1, 0)
    assert "fsGroupChangePolicy" not in plain["spec"]["securityContext"]
    assert not [v for v in plain["spec"]["volumes"] if "persistentVolumeClaim" in v]


def test_every_folder_the_worker_mounts_itself_is_reserved_from_declared_volumes() -> None:
    """The API keeps declared volumes off these folders (kubepeft.worker_paths.RESERVED): a new
    worker mount outside them would let a volume hide it."""
    assert DEFAULT_CONFIG_PATH.startswith(CONFIG_DIR + "/")
    settings = SETTINGS_VARIANTS["full"]
    pod = render_worker_pod(identity(), SPECS["volumes"], settings, attempt=1, rank=0)
    own = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"] if not m["name"].startswith("claim-")]
    assert own and all(any(p == r or p.startswith(r + "/") for r in RESERVED) for p in own), own


def test_each_input_reads_its_own_credentials_adapters_included() -> None:
    mounts = {m.source: m for m in credential_mounts(SPECS["volumes"], SETTINGS_VARIANTS["full"])}
    # The model is on a claim (no keys); the adapter and the dataset have their own Secrets; the
    # output is a path (no keys).
    assert set(mounts) == {"dataset", "adapter-0"}
    assert mounts["adapter-0"].secret == "adapter-creds" and mounts["adapter-0"].explicit
    assert mounts["adapter-0"].path == "/var/run/secrets/kubepeft/adapter-0"
    assert mounts["dataset"].secret == "lake-creds"
    config_map = render_job_children(identity(), SPECS["volumes"], SETTINGS)[0]
    config = TrainerConfig.from_json(config_map["data"]["config.json"])
    assert config.credentials_dirs == {
        "dataset": "/var/run/secrets/kubepeft/dataset",
        "adapter-0": "/var/run/secrets/kubepeft/adapter-0",
    }
    assert config.spec.volumes == SPECS["volumes"].volumes  # the trainer maps pvc:// from the spec


def test_an_adapter_without_a_ref_uses_the_outputs_secret_on_the_outputs_endpoint_only() -> None:
    """It no longer reads the output's folder by accident: it gets its own folder, holding the
    output's keys only where the API's defaulting rule says so."""
    same = spec(adapters={"sources": [{"uri": "s3://runs/adapters/a"}]})
    mounts = {m.source: m for m in credential_mounts(same, SETTINGS_VARIANTS["full"])}
    assert mounts["adapter-0"].secret == "s3-creds" and mounts["adapter-0"].explicit
    own = spec(adapters={"sources": [{"uri": "s3://lake/a", "endpoint": "https://other.example.com"}]})
    mounts = {m.source: m for m in credential_mounts(own, SETTINGS_VARIANTS["full"])}
    # Another endpoint: neither the output's Secret nor the operator's default (keys for its endpoint).
    assert "adapter-0" not in mounts and mounts["model"].secret == "model-creds"


def test_preflight_names_a_missing_adapter_secret_and_a_missing_claim() -> None:
    job = SPECS["volumes"]
    mounts = credential_mounts(job, SETTINGS)
    found = {"lake-creds": frozenset(S3_KEYS)}
    result = check_secrets(mounts, found, NS)
    assert result.reason == "SecretNotFound"
    assert (
        result.message == f'Secret "adapter-creds" (credentials for adapters.sources[0]) not found in namespace "{NS}"'
    )
    assert check_secrets(mounts, {**found, "adapter-creds": frozenset(S3_KEYS)}, NS).ok

    assert claims_to_read(job) == ["models", "scratch-runs.v1"]
    missing = check_claims(job, {"models": ("ReadOnlyMany",)}, NS)
    assert missing.reason == "PersistentVolumeClaimNotFound"
    assert missing.message == f'PersistentVolumeClaim "scratch-runs.v1" (spec.volumes) not found in namespace "{NS}"'
    both = {"models": ("ReadOnlyMany",), "scratch-runs.v1": ("ReadWriteMany",)}
    assert check_claims(job, both, NS).ok
    # Two workers cannot share a single-pod claim; one worker can.
    single = {**both, "models": ("ReadWriteOncePod",)}
    assert check_claims(job, single, NS).reason == "PersistentVolumeClaimAccessMode"
    one_node = spec(**{**SPECS["volumes"].to_wire(), "resources": {"nodes": 1, "gpusPerNode": 0}})
    assert check_claims(one_node, single, NS).ok


def test_a_sweeps_report_pod_mounts_only_the_claim_its_output_is_on() -> None:
    from kubepeft_operator.sweep.logic import SweepRef
    from kubepeft_operator.sweep.report_pod import render_report_pod

    from kubepeft.api.sweep_models import PeftSweepSpec

    template = SPECS["volumes"].to_wire()
    sweep = PeftSweepSpec.model_validate({"template": template, "parameters": [{"path": "lora.r", "values": [2, 4]}]})
    pod = render_report_pod(SweepRef(name="ranks", namespace=NS, uid=UID), sweep, SETTINGS)
    validate(pod)
    claims = [v["persistentVolumeClaim"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "scratch-runs.v1"}]  # read-write: the report is written there
    assert {"name": "claim-1", "mountPath": "/data/runs"} in pod["spec"]["containers"][0]["volumeMounts"]
    # The same user and group as the workers: a claim they can write, the report can write too.
    worker = render_worker_pod(identity(), SPECS["volumes"], SETTINGS, 1, 0)
    assert pod["spec"]["securityContext"] == worker["spec"]["securityContext"]
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000
