"""Operator settings: the operator's ``KUBEPEFT_*`` variables, read once at start (the Helm chart
sets them; ``docs/settings.md`` lists them). A malformed value stops the operator with a
:class:`SettingsError` naming the variable."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from kubepeft.settings import CsvList, PlaneSettings, SettingsError, split_csv

DEFAULT_GPU_IMAGE = "ghcr.io/kubepeft/trainer:0.1.0"
DEFAULT_CPU_IMAGE = "ghcr.io/kubepeft/trainer-cpu:0.1.0"

__all__ = ["DEFAULT_CPU_IMAGE", "DEFAULT_GPU_IMAGE", "OperatorSettings", "SettingsError"]


class OperatorSettings(PlaneSettings):
    """Everything the operator reads from its environment. Built directly (tests), it reads nothing."""

    watch_namespaces: CsvList = Field((), description="Comma-separated namespaces to watch; empty = cluster-wide.")
    trainer_image: str = Field(DEFAULT_GPU_IMAGE, description="Worker image when a job asks for GPUs.")
    trainer_image_cpu: str = Field(DEFAULT_CPU_IMAGE, description="Worker image of CPU-only jobs and sweep reports.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the pods the operator creates."
    )
    image_pull_secrets: CsvList = Field(
        (), description="Comma-separated Secret names set as imagePullSecrets of the pods the operator creates."
    )
    default_s3_endpoint: str = Field("", description="S3 endpoint of outputs that name none.")
    default_s3_region: str = Field("", description="S3 region of outputs that name no endpoint.")
    default_credentials_secret: str = Field(
        "",
        description="Secret mounted (optional) for every source that names no credentialsSecretRef and gets none "
        "from the output: the output itself, S3 inputs on the default endpoint, hub inputs.",
    )
    trainer_node_selector: dict[str, str] = Field(
        default_factory=dict, description="JSON object: nodeSelector of every worker (a job's own entries win)."
    )
    trainer_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="JSON list of objects: tolerations added to every worker."
    )
    trainer_default_cpu: str = Field("", description="CPU request and limit of workers whose job sets none.")
    trainer_default_memory: str = Field("", description="Memory request and limit of workers whose job sets none.")
    log_level: str = Field("INFO", description="Operator log level (case-insensitive).")
    metrics_port: int = Field(8080, description="Port of the Prometheus metrics endpoint.")
    health_port: int = Field(8081, description="Port of the liveness endpoint (/healthz).")
    peering: str = Field("", description="kopf peering name when several replicas run; empty = standalone.")
    max_workers: int = Field(0, description="kopf's per-object worker limit; 0 = kopf's default (unlimited).")
    api_connections: int = Field(
        16, description="Concurrent connections for the operator's own API calls (creates, deletes, status patches)."
    )
    resync_seconds: float = Field(
        30.0, description="Periodic resync of every job (safety net for missed events, deadlines, TTLs); at least 1."
    )

    @field_validator("watch_namespaces", "image_pull_secrets", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return split_csv(value)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("api_connections")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        return max(1, value)

    @field_validator("resync_seconds")
    @classmethod
    def _at_least_a_second(cls, value: float) -> float:
        return max(1.0, value)
