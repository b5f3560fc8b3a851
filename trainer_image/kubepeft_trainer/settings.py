"""The trainer's settings: every ``KUBEPEFT_*`` variable the trainer reads, in one typed model.

Read once at the start of a process (``kubepeft train`` in :mod:`kubepeft_trainer.main`, each
rank in :mod:`kubepeft_trainer.worker`) with :meth:`TrainerSettings.load` and passed down; no
other trainer module reads the environment for a ``KUBEPEFT_*`` variable. The operator renders
the contract's variables (``kubepeft.contract.ENV_*``) into the worker pods; the field names are
chosen so that ``KUBEPEFT_<FIELD>`` is exactly those names (a test holds them together). The
storage tuning variables (``KUBEPEFT_S3_*``) belong to the core's settings, read by the storage
client itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kubepeft.contract import DEFAULT_CONFIG_PATH, DEFAULT_MASTER_PORT, LauncherEnv
from kubepeft.settings import PlaneSettings
from kubepeft_trainer.distributed import DEFAULT_ZERO3_PERSISTENCE_THRESHOLD


class TrainerSettings(PlaneSettings):
    """The ``KUBEPEFT_*`` environment of ``kubepeft train`` and of its rank processes."""

    # --- the contract: rendered by the operator (and the local run) ---------------------------
    config: Path = Field(
        default=Path(DEFAULT_CONFIG_PATH),
        description="The TrainerConfig JSON (``--config`` wins).",
    )
    workdir: Path | None = Field(
        default=None,
        description="This node's local work folder (``--workdir`` wins); unset: a temporary folder per attempt.",
    )
    node_rank: int = Field(default=0, ge=0, description="This node's rank, 0 .. numNodes-1.")
    num_nodes: int = Field(default=1, ge=1, description="Nodes of the attempt.")
    procs_per_node: int = Field(default=1, ge=1, description="Rank processes per node.")
    master_addr: str = Field(default="127.0.0.1", description="Host of node 0 (the rendezvous).")
    master_port: int = Field(default=DEFAULT_MASTER_PORT, ge=1, le=65535, description="Rendezvous port on node 0.")
    attempt: int = Field(default=0, ge=0, description="The attempt number, copied into every report.")
    progress_file: Path | None = Field(
        default=None, description="Append every progress report to this file as JSON lines (local runs)."
    )
    progress_configmap: str | None = Field(
        default=None, description="Patch the reports into this ConfigMap's ``report.json`` (pods)."
    )
    namespace: str = Field(default="default", description="Namespace of the progress ConfigMap.")

    # --- the trainer's own knobs --------------------------------------------------------------
    dist_timeout_minutes: int = Field(
        default=30, ge=1, description="Timeout of the ranks' collective operations, in minutes."
    )
    checkpoint_part_timeout: float = Field(
        default=900.0,
        gt=0,
        description="Seconds node 0 waits for every node's checkpoint part before leaving a step uncommitted.",
    )
    zero3_persistence_threshold: int = Field(
        default=DEFAULT_ZERO3_PERSISTENCE_THRESHOLD,
        ge=0,
        description="DeepSpeed ZeRO-3 ``stage3_param_persistence_threshold`` (tests: 0, to partition a tiny model).",
    )
    launcher_pid: int | None = Field(
        default=None,
        ge=1,
        description="Set by the node launcher for its ranks: a rank exits when this process is gone.",
    )

    def launcher_env(self) -> LauncherEnv:
        """The contract's launcher environment of this node."""
        return LauncherEnv(
            node_rank=self.node_rank,
            num_nodes=self.num_nodes,
            procs_per_node=self.procs_per_node,
            master_addr=self.master_addr,
            master_port=self.master_port,
        )


ENV_LAUNCHER_PID = TrainerSettings.variable("launcher_pid")
"""Written by the launcher into its ranks' environment (read back through the settings)."""
