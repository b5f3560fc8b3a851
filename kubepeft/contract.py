"""The versioned contracts between the operator (or the local run) and the trainer.

operator -> trainer
    One JSON document, :class:`TrainerConfig`, mounted from the job's ConfigMap at
    ``$KUBEPEFT_CONFIG`` (default ``/etc/kubepeft/config.json``), plus the launcher
    environment in :class:`LauncherEnv` (node rank, nodes, processes per node, rendezvous).
    The trainer never reads the PeftJob object.

trainer -> operator
    Progress and the final result as :class:`TrainerReport` JSON. Rank 0 writes it to the
    job's progress ConfigMap (key ``report.json``) when ``KUBEPEFT_PROGRESS_CONFIGMAP`` is set
    -- the trainer's service account may only get/patch that one ConfigMap -- and always
    appends it to ``$KUBEPEFT_PROGRESS_FILE`` when set (local runs). The last report is also
    the container's termination message. The process exit code classifies failures:
    :data:`EXIT_PERMANENT` (bad input: never retried) versus anything else non-zero
    (retryable: the operator starts a new attempt that resumes from the latest checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kubepeft.api.models import Artifacts, PeftJobSpec, TrainingProgress
from kubepeft.sources import local_path

CONFIG_VERSION: Literal["kubepeft.dev/trainer-config/v1"] = "kubepeft.dev/trainer-config/v1"
REPORT_VERSION: Literal["kubepeft.dev/trainer-report/v1"] = "kubepeft.dev/trainer-report/v1"

DEFAULT_CONFIG_PATH = "/etc/kubepeft/config.json"
CONFIG_KEY = "config.json"
REPORT_KEY = "report.json"
TERMINATION_LOG = "/dev/termination-log"

# Exit codes of the trainer process.
EXIT_OK = 0
EXIT_RETRYABLE = 1
EXIT_PERMANENT = 3
# Conventional codes from signals/OOM that are retryable too: 137 (SIGKILL, OOM), 143 (SIGTERM).

ENV_CONFIG = "KUBEPEFT_CONFIG"
ENV_PROGRESS_CONFIGMAP = "KUBEPEFT_PROGRESS_CONFIGMAP"
ENV_PROGRESS_FILE = "KUBEPEFT_PROGRESS_FILE"
ENV_NAMESPACE = "KUBEPEFT_NAMESPACE"
ENV_NODE_RANK = "KUBEPEFT_NODE_RANK"
ENV_NUM_NODES = "KUBEPEFT_NUM_NODES"
ENV_PROCS_PER_NODE = "KUBEPEFT_PROCS_PER_NODE"
ENV_MASTER_ADDR = "KUBEPEFT_MASTER_ADDR"
ENV_MASTER_PORT = "KUBEPEFT_MASTER_PORT"
ENV_ATTEMPT = "KUBEPEFT_ATTEMPT"
# The node's local work folder (downloads, checkpoints before upload, export staging). Pods point
# it at the scratch volume; without it the trainer makes a temporary folder.
ENV_WORKDIR = "KUBEPEFT_WORKDIR"

DEFAULT_MASTER_PORT = 29500


class ContractModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class JobRef(ContractModel):
    namespace: str
    name: str
    uid: str = ""


class StoragePaths(ContractModel):
    """Resolved output locations, all under one job prefix."""

    root: str = Field(description="s3://bucket/prefix/<namespace>/<job> or an absolute path")
    endpoint: str | None = None
    region: str = "us-east-1"
    force_path_style: bool = True
    uri: str | None = Field(
        default=None,
        description="the job's own name of root when root is where a volume is (pvc://claim/...<namespace>/<job>)",
    )

    def child(self, name: str) -> str:
        return self.root.rstrip("/") + "/" + name

    def public(self, location: str) -> str:
        """A location under ``root`` as the job names it (reports and status): an output on a claim
        is ``pvc://claim/...`` there, wherever the trainer found the claim mounted."""
        return _moved(location, self.root, self.uri)

    def located(self, uri: str) -> str:
        """The inverse of :meth:`public`: where a reported URI is on the trainer's file system."""
        return _moved(uri, self.uri, self.root)

    @property
    def checkpoints(self) -> str:
        return self.child("checkpoints")

    @property
    def adapter(self) -> str:
        return self.child("adapter")

    @property
    def merged(self) -> str:
        return self.child("merged")

    @property
    def manifest(self) -> str:
        return self.child("manifest.json")


def _moved(location: str, old_root: str | None, new_root: str | None) -> str:
    if not old_root or not new_root:
        return location
    old = old_root.rstrip("/")
    if location == old or location.startswith(old + "/"):
        return new_root.rstrip("/") + location[len(old) :]
    return location


class TrainerConfig(ContractModel):
    """The one document the operator hands the trainer."""

    version: Literal["kubepeft.dev/trainer-config/v1"] = CONFIG_VERSION
    job: JobRef
    spec: PeftJobSpec
    output: StoragePaths
    # Names of credential sources: each maps to a folder of mounted secret files.
    credentials_dirs: dict[str, str] = Field(default_factory=dict)
    # Added in place (optional, v1 stays compatible): claim -> the folder it is at when not at its
    # spec.volumes mount path (a local run's --volume). Pods leave it empty.
    volume_dirs: dict[str, str] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainerConfig:
        return cls.model_validate_json(text)


def output_root(spec: PeftJobSpec, namespace: str, name: str) -> str:
    """``<output.uri>/<namespace>/<job>``: every artifact of a job lives under it."""
    return f"{spec.output.uri.rstrip('/')}/{namespace}/{name}"


def build_trainer_config(
    spec: PeftJobSpec,
    namespace: str,
    name: str,
    uid: str = "",
    credentials_dirs: dict[str, str] | None = None,
    endpoint_override: str | None = None,
    volume_dirs: dict[str, str] | None = None,
) -> TrainerConfig:
    """Pure: the trainer config for a job. Used by the operator and by ``kubepeft run``.

    An output on a volume (``pvc://`` or a path under a mount path) gets the root where the volume
    is on the trainer's file system: its mount path, or its folder in ``volume_dirs``."""
    uri = output_root(spec, namespace, name)
    root = local_path(spec, uri, volume_dirs)
    return TrainerConfig(
        job=JobRef(namespace=namespace, name=name, uid=uid),
        spec=spec,
        output=StoragePaths(
            root=root,
            uri=uri if uri != root else None,
            endpoint=endpoint_override or spec.output.endpoint,
            region=spec.output.region,
            force_path_style=spec.output.force_path_style,
        ),
        credentials_dirs=credentials_dirs or {},
        volume_dirs=volume_dirs or {},
    )


# The report reads its own names only (snake_case), as it always has; the status's wire is camelCase.
_REPORT_NAMES = ConfigDict(validate_by_alias=False, validate_by_name=True)


class ReportProgress(TrainingProgress):
    """The report's progress: the API's :class:`~kubepeft.api.models.TrainingProgress` (one
    definition for status and report), with step, total steps and epoch always present."""

    model_config = _REPORT_NAMES

    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0


class ReportArtifacts(Artifacts):
    """The report's artifacts: the API's :class:`~kubepeft.api.models.Artifacts` (one definition)."""

    model_config = _REPORT_NAMES


class TrainerReport(ContractModel):
    """What the trainer tells the operator: progress while running, then the result."""

    version: Literal["kubepeft.dev/trainer-report/v1"] = REPORT_VERSION
    state: Literal["Starting", "Training", "Exporting", "Succeeded", "Failed"] = "Starting"
    attempt: int = 0
    progress: ReportProgress = Field(default_factory=ReportProgress)
    artifacts: ReportArtifacts = Field(default_factory=ReportArtifacts)
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    resumed_from_step: int | None = None
    # Added in place (optional, so v1 readers and writers stay compatible): what a sweep compares.
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    peak_memory_bytes: int | None = None
    """Peak accelerator memory of rank 0 (CUDA), else the peak resident memory of its process."""
    failure_class: Literal["retryable", "permanent"] | None = None
    message: str | None = None
    time: str = ""

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


@dataclass(frozen=True)
class LauncherEnv:
    """The launcher environment every worker gets, in pods and in local runs alike."""

    node_rank: int
    num_nodes: int
    procs_per_node: int
    master_addr: str
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.procs_per_node

    def to_env(self) -> dict[str, str]:
        return {
            ENV_NODE_RANK: str(self.node_rank),
            ENV_NUM_NODES: str(self.num_nodes),
            ENV_PROCS_PER_NODE: str(self.procs_per_node),
            ENV_MASTER_ADDR: self.master_addr,
            ENV_MASTER_PORT: str(self.master_port),
        }
