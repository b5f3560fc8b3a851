"""Operator settings, read once from the environment (the Helm chart sets these variables)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_GPU_IMAGE = "ghcr.io/kubepeft/trainer:0.1.0"
DEFAULT_CPU_IMAGE = "ghcr.io/kubepeft/trainer-cpu:0.1.0"


class SettingsError(ValueError):
    """An operator setting is malformed; the operator refuses to start."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _json(name: str, value: str, kind: type) -> Any:
    if not value.strip():
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(parsed, kind):
        raise SettingsError(f"{name} must be a JSON {kind.__name__}")
    return parsed


def _int(name: str, value: str, default: int) -> int:
    if not value.strip():
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, not {value!r}") from exc


@dataclass(frozen=True)
class OperatorSettings:
    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = cluster-wide."""
    trainer_image: str = DEFAULT_GPU_IMAGE
    trainer_image_cpu: str = DEFAULT_CPU_IMAGE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    default_s3_endpoint: str = ""
    default_s3_region: str = ""
    default_credentials_secret: str = ""
    trainer_node_selector: dict[str, str] = field(default_factory=dict)
    trainer_tolerations: list[dict[str, Any]] = field(default_factory=list)
    trainer_default_cpu: str = ""
    trainer_default_memory: str = ""
    log_level: str = "INFO"
    metrics_port: int = 8080
    health_port: int = 8081
    peering: str = ""
    max_workers: int = 0
    """kopf's per-object worker limit; 0 = kopf's default (unlimited)."""
    api_connections: int = 16
    """Concurrent connections for the operator's own API calls (creates, deletes, status patches)."""
    resync_seconds: float = 30.0
    """Periodic resync of every job (safety net for missed events, deadlines, TTLs)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str = "") -> str:
            return env.get(name, default) or default

        pull_policy = get("KUBEPEFT_IMAGE_PULL_POLICY", "IfNotPresent")
        if pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(
                f"KUBEPEFT_IMAGE_PULL_POLICY must be Always, IfNotPresent or Never, not {pull_policy!r}"
            )
        node_selector = _json("KUBEPEFT_TRAINER_NODE_SELECTOR", get("KUBEPEFT_TRAINER_NODE_SELECTOR"), dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in node_selector.items()):
            raise SettingsError("KUBEPEFT_TRAINER_NODE_SELECTOR must map strings to strings")
        tolerations = _json("KUBEPEFT_TRAINER_TOLERATIONS", get("KUBEPEFT_TRAINER_TOLERATIONS"), list)
        if not all(isinstance(t, dict) for t in tolerations):
            raise SettingsError("KUBEPEFT_TRAINER_TOLERATIONS must be a JSON list of objects")
        resync = get("KUBEPEFT_RESYNC_SECONDS", "30")
        try:
            resync_seconds = float(resync)
        except ValueError as exc:
            raise SettingsError(f"KUBEPEFT_RESYNC_SECONDS must be a number, not {resync!r}") from exc
        return cls(
            watch_namespaces=_csv(get("KUBEPEFT_WATCH_NAMESPACES")),
            trainer_image=get("KUBEPEFT_TRAINER_IMAGE", DEFAULT_GPU_IMAGE),
            trainer_image_cpu=get("KUBEPEFT_TRAINER_IMAGE_CPU", DEFAULT_CPU_IMAGE),
            image_pull_policy=pull_policy,
            image_pull_secrets=_csv(get("KUBEPEFT_IMAGE_PULL_SECRETS")),
            default_s3_endpoint=get("KUBEPEFT_DEFAULT_S3_ENDPOINT"),
            default_s3_region=get("KUBEPEFT_DEFAULT_S3_REGION"),
            default_credentials_secret=get("KUBEPEFT_DEFAULT_CREDENTIALS_SECRET"),
            trainer_node_selector=node_selector,
            trainer_tolerations=tolerations,
            trainer_default_cpu=get("KUBEPEFT_TRAINER_DEFAULT_CPU"),
            trainer_default_memory=get("KUBEPEFT_TRAINER_DEFAULT_MEMORY"),
            log_level=get("KUBEPEFT_LOG_LEVEL", "INFO").upper(),
            metrics_port=_int("KUBEPEFT_METRICS_PORT", get("KUBEPEFT_METRICS_PORT"), 8080),
            health_port=_int("KUBEPEFT_HEALTH_PORT", get("KUBEPEFT_HEALTH_PORT"), 8081),
            peering=get("KUBEPEFT_PEERING"),
            max_workers=_int("KUBEPEFT_MAX_WORKERS", get("KUBEPEFT_MAX_WORKERS"), 0),
            api_connections=max(1, _int("KUBEPEFT_API_CONNECTIONS", get("KUBEPEFT_API_CONNECTIONS"), 16)),
            resync_seconds=max(1.0, resync_seconds),
        )
