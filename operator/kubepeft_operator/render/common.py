"""What every child shares: the owner reference and the labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubepeft.api.models import API_VERSION, KIND
from kubepeft_operator import naming


@dataclass(frozen=True)
class JobIdentity:
    """The parts of a PeftJob's metadata the renderers use."""

    name: str
    namespace: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JobIdentity:
        meta = body.get("metadata") or {}
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace") or "default",
            uid=meta.get("uid", ""),
            labels=dict(meta.get("labels") or {}),
        )


def owner_reference(job: JobIdentity) -> dict[str, Any]:
    """Children are garbage-collected with their PeftJob (no finalizer needed)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": job.name,
        "uid": job.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(job: JobIdentity, name: str, component: str, **extra_labels: str) -> dict[str, Any]:
    labels = {**naming.job_labels(job.name), naming.LABEL_COMPONENT: component, **extra_labels}
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(job)],
    }
