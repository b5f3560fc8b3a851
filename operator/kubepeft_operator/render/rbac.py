"""The trainer's identity: it may get and patch its job's progress ConfigMap, nothing else."""

from __future__ import annotations

from typing import Any

from kubepeft_operator import naming
from kubepeft_operator.render.common import JobIdentity, child_metadata

RBAC_API = "rbac.authorization.k8s.io/v1"


def render_service_account(job: JobIdentity) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": child_metadata(job, naming.trainer_account_name(job.name), "trainer-identity"),
        "automountServiceAccountToken": True,
    }


def render_role(job: JobIdentity) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "Role",
        "metadata": child_metadata(job, naming.trainer_account_name(job.name), "trainer-identity"),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [naming.progress_map_name(job.name)],
                "verbs": ["get", "patch"],
            }
        ],
    }


def render_role_binding(job: JobIdentity) -> dict[str, Any]:
    name = naming.trainer_account_name(job.name)
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": child_metadata(job, name, "trainer-identity"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}],
    }
