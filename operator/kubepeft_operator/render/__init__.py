"""Pure renderers: a PeftJob (+ operator settings) -> the Kubernetes objects it needs. No I/O."""

from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft_operator.render.common import JobIdentity, owner_reference
from kubepeft_operator.render.config import (
    CredentialMount,
    credential_mounts,
    render_config_map,
    render_progress_map,
    trainer_config,
)
from kubepeft_operator.render.rbac import render_role, render_role_binding, render_service_account
from kubepeft_operator.render.service import render_service
from kubepeft_operator.render.workers import render_worker_pod, render_workers
from kubepeft_operator.settings import OperatorSettings


def render_job_children(job: JobIdentity, spec: PeftJobSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Everything an attempt needs besides its pods, in creation order."""
    return [
        render_config_map(job, spec, settings),
        render_progress_map(job),
        render_service_account(job),
        render_role(job),
        render_role_binding(job),
        render_service(job),
    ]


__all__ = [
    "CredentialMount",
    "JobIdentity",
    "credential_mounts",
    "owner_reference",
    "render_config_map",
    "render_job_children",
    "render_progress_map",
    "render_role",
    "render_role_binding",
    "render_service",
    "render_service_account",
    "render_worker_pod",
    "render_workers",
    "trainer_config",
]
