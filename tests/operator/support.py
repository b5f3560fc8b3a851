"""Shared builders for the operator tests."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from kubepeft_operator.render import JobIdentity

from kubepeft.api.models import PeftJobSpec

NS = "team-a"
UID = "11111111-2222-4333-8444-555555555555"
T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)

BASE_SPEC: dict[str, Any] = {
    "method": "lora",
    "model": {"uri": "s3://models/tiny-llama", "credentialsSecretRef": {"name": "model-creds"}},
    "dataset": {"uri": "s3://data/train.jsonl"},
    "training": {"maxSteps": 20},
    "resources": {"nodes": 2, "gpusPerNode": 0, "cpu": "2", "memory": "4Gi"},
    "output": {"uri": "s3://runs/out", "credentialsSecretRef": {"name": "s3-creds"}},
}


def spec_dict(**changes: Any) -> dict[str, Any]:
    """The base spec with top-level fields replaced (``None`` removes one)."""
    spec = copy.deepcopy(BASE_SPEC)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def spec(**changes: Any) -> PeftJobSpec:
    return PeftJobSpec.model_validate(spec_dict(**changes))


def identity(name: str = "tune", labels: dict[str, str] | None = None) -> JobIdentity:
    return JobIdentity(name=name, namespace=NS, uid=UID, labels=labels or {})


def peftjob(name: str = "tune", labels: dict[str, str] | None = None, **changes: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubepeft.dev/v1alpha1",
        "kind": "PeftJob",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec_dict(**changes),
    }


def secret(name: str, *keys: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {k: "eA==" for k in keys}}


S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
