"""Worker pods: one per node per attempt, a gang the operator starts and tears down as a unit."""

from __future__ import annotations

import math
import re
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft.contract import (
    CONFIG_KEY,
    DEFAULT_CONFIG_PATH,
    DEFAULT_MASTER_PORT,
    ENV_ATTEMPT,
    ENV_CONFIG,
    ENV_NAMESPACE,
    ENV_PROGRESS_CONFIGMAP,
    ENV_WORKDIR,
    LauncherEnv,
)
from kubepeft.sources import writable_claims
from kubepeft.worker_paths import CACHE_DIR, CONFIG_DIR, SCRATCH_DIR, SHM_DIR, TMP_DIR
from kubepeft_operator import naming
from kubepeft_operator.render.common import JobIdentity, child_metadata
from kubepeft_operator.render.config import credential_mounts
from kubepeft_operator.settings import OperatorSettings

CONTAINER_NAME = "trainer"
TRAINER_UID = 1000
GPU_RESOURCE = "nvidia.com/gpu"
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")


def _cpu_cores(quantity: str | None) -> float | None:
    match = _CPU_RE.match(quantity or "")
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


def _resources(spec: PeftJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    res = spec.resources
    amounts: dict[str, str] = {}
    if cpu := res.cpu or settings.trainer_default_cpu:
        amounts["cpu"] = cpu
    if memory := res.memory or settings.trainer_default_memory:
        amounts["memory"] = memory
    if res.gpus_per_node > 0:
        amounts[GPU_RESOURCE] = str(res.gpus_per_node)
    # Requests equal limits: the trainer's memory is predictable, and it must not be overcommitted.
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _tolerations(spec: PeftJobSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for toleration in [*settings.trainer_tolerations, *(t.to_wire() for t in spec.resources.tolerations)]:
        if toleration not in merged:
            merged.append(toleration)
    return merged


def _env(
    job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings, attempt: int, rank: int
) -> list[dict[str, Any]]:
    launcher = LauncherEnv(
        node_rank=rank,
        num_nodes=spec.resources.nodes,
        procs_per_node=spec.processes_per_node(),
        master_addr=naming.master_addr(job.name, job.namespace),
        master_port=DEFAULT_MASTER_PORT,
    )
    values = {
        **launcher.to_env(),
        ENV_ATTEMPT: str(attempt),
        ENV_CONFIG: DEFAULT_CONFIG_PATH,
        ENV_PROGRESS_CONFIGMAP: naming.progress_map_name(job.name),
        # Downloads, checkpoints before upload and export staging go to the scratch volume
        # (sized by spec.resources.scratch), not to /tmp.
        ENV_WORKDIR: SCRATCH_DIR,
        "HF_HOME": "/cache/huggingface",
        "TORCH_EXTENSIONS_DIR": "/cache/torch_extensions",
        "XDG_CACHE_HOME": "/cache",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
    }
    if spec.resources.gpus_per_node == 0:
        cores = _cpu_cores(spec.resources.cpu or settings.trainer_default_cpu)
        threads = max(1, math.floor(cores / spec.processes_per_node())) if cores else 1
        values["OMP_NUM_THREADS"] = str(threads)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    env.append({"name": ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    return env


def claim_volumes(spec: PeftJobSpec, only: set[str] | None = None) -> tuple[list[Any], list[Any]]:
    """Declared PersistentVolumeClaims (those in ``only``, if given): read-only, except the one the
    output is written to."""
    writable = writable_claims(spec)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, volume in enumerate(spec.volumes or []):
        if only is not None and volume.claim_name not in only:
            continue
        name = f"claim-{index}"  # claim names may be longer than a volume name allows
        read_only = volume.claim_name not in writable
        claim: dict[str, Any] = {"claimName": volume.claim_name}
        mount: dict[str, Any] = {"name": name, "mountPath": volume.effective_mount_path()}
        if read_only:
            claim["readOnly"] = True
            mount["readOnly"] = True
        volumes.append({"name": name, "persistentVolumeClaim": claim})
        mounts.append(mount)
    return volumes, mounts


def _credentials(spec: PeftJobSpec, settings: OperatorSettings) -> tuple[list[Any], list[Any]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for cred in credential_mounts(spec, settings):
        items = [{"key": key, "path": path} for key, path in cred.items]
        secret: dict[str, Any] = {"name": cred.secret, "items": items}
        if not cred.explicit:
            secret["optional"] = True
        volumes.append({"name": cred.volume_name, "projected": {"defaultMode": 0o440, "sources": [{"secret": secret}]}})
        mounts.append({"name": cred.volume_name, "mountPath": cred.path, "readOnly": True})
    return volumes, mounts


def _volumes(job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings) -> tuple[list[Any], list[Any]]:
    scratch: dict[str, Any] = {"sizeLimit": spec.resources.scratch} if spec.resources.scratch else {}
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {"name": naming.config_map_name(job.name), "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
        },
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "scratch", "emptyDir": scratch},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shared_memory}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": TMP_DIR},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "dshm", "mountPath": SHM_DIR},
    ]
    for more_volumes, more_mounts in (_credentials(spec, settings), claim_volumes(spec)):
        volumes += more_volumes
        mounts += more_mounts
    return volumes, mounts


def _metadata(job: JobIdentity, spec: PeftJobSpec, attempt: int, rank: int) -> dict[str, Any]:
    labels = {naming.LABEL_ATTEMPT: str(attempt), naming.LABEL_RANK: str(rank)}
    annotations: dict[str, str] = {}
    if queue := job.labels.get(naming.KUEUE_QUEUE_LABEL):
        # Kueue admits the attempt's pods as one group (plain-pod gang).
        labels[naming.KUEUE_QUEUE_LABEL] = queue
        labels[naming.KUEUE_POD_GROUP_LABEL] = naming.fit(job.name, f"-a{attempt}")
        annotations[naming.KUEUE_POD_GROUP_TOTAL] = str(spec.resources.nodes)
    metadata = child_metadata(job, naming.worker_pod_name(job.name, attempt, rank), "worker", **labels)
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def _container(
    spec: PeftJobSpec, settings: OperatorSettings, env: list[dict[str, Any]], mounts: list[Any]
) -> dict[str, Any]:
    res = spec.resources
    return {
        "name": CONTAINER_NAME,
        "image": res.image or (settings.trainer_image if res.gpus_per_node > 0 else settings.trainer_image_cpu),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kubepeft", "train"],
        "env": env,
        "ports": [{"name": "rendezvous", "containerPort": DEFAULT_MASTER_PORT, "protocol": "TCP"}],
        "resources": _resources(spec, settings),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }


def container_security() -> dict[str, Any]:
    """Every kubepeft container: Pod Security ``restricted``, read-only root file system."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security(spec: PeftJobSpec) -> dict[str, Any]:
    """Every kubepeft pod of a job (workers, a sweep's report): the image's user, and its group on
    mounted volumes, so a claim the output is on can be written."""
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.volumes:
        # Without it the kubelet re-chowns a whole claim (a model store: many large files) at every mount.
        security["fsGroupChangePolicy"] = "OnRootMismatch"
    return security


def _placement(spec: PeftJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Scheduling and pull fields of the pod spec, each present only when set."""
    res = spec.resources
    placement: dict[str, Any] = {}
    if node_selector := {**settings.trainer_node_selector, **res.node_selector}:
        placement["nodeSelector"] = node_selector
    if tolerations := _tolerations(spec, settings):
        placement["tolerations"] = tolerations
    if res.affinity:
        placement["affinity"] = res.affinity
    if res.priority_class_name:
        placement["priorityClassName"] = res.priority_class_name
    if settings.image_pull_secrets:
        placement["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return placement


def render_worker_pod(
    job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings, attempt: int, rank: int
) -> dict[str, Any]:
    volumes, mounts = _volumes(job, spec, settings)
    env = _env(job, spec, settings, attempt, rank)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": naming.worker_hostname(job.name, rank),
        "subdomain": naming.service_name(job.name),
        "serviceAccountName": naming.trainer_account_name(job.name),
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security(spec),
        "containers": [_container(spec, settings, env, mounts)],
        "volumes": volumes,
        **_placement(spec, settings),
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(job, spec, attempt, rank), "spec": pod_spec}


def render_workers(
    job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings, attempt: int
) -> list[dict[str, Any]]:
    return [render_worker_pod(job, spec, settings, attempt, rank) for rank in range(spec.resources.nodes)]
