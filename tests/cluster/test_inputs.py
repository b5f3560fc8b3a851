"""Inputs from anywhere on a real API server: the pods the operator renders for a job reading its
model from a PersistentVolumeClaim, its dataset from another S3 endpoint and an adapter with its
own Secret are accepted (strict field validation, Pod Security ``restricted``)."""

from __future__ import annotations

from typing import Any

import pytest
from kubepeft_operator.render import JobIdentity, render_job_children, render_workers
from kubepeft_operator.settings import OperatorSettings

from kubepeft.api.models import PeftJobSpec
from tests.cluster.rest import Kube
from tests.cluster.test_admission import ANYWHERE, JOBS, claim
from tests.operator.support import S3_KEYS, peftjob, secret

pytestmark = pytest.mark.cluster


def test_rendered_workers_with_claims_and_per_source_secrets_are_accepted(admin: Kube, namespace: str) -> None:
    for name in ("s3-creds", "adapter-creds", "lake-creds"):
        admin.create(secret(name, *S3_KEYS), namespace)
    admin.create(claim("models", "ReadOnlyMany"), namespace)
    admin.create(claim("runs", "ReadWriteMany"), namespace)
    job = admin.request("POST", JOBS.format(ns=namespace), peftjob("anywhere", **ANYWHERE))
    spec = PeftJobSpec.model_validate(job["spec"])
    identity = JobIdentity(name="anywhere", namespace=namespace, uid=job["metadata"]["uid"], labels={})
    settings = OperatorSettings()
    # The children the pods need (their ServiceAccount, ConfigMap) exist for real; the pods are dry-run.
    for child in render_job_children(identity, spec, settings):
        admin.create(child, namespace)
    pods = render_workers(identity, spec, settings, attempt=1)
    for pod in pods:
        stored: dict[str, Any] = admin.create(pod, namespace, dryRun="All", fieldValidation="Strict")
        claims = {
            v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"].get("readOnly", False)
            for v in stored["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"models": True, "runs": False}
        mounts = {m["mountPath"] for m in stored["spec"]["containers"][0]["volumeMounts"]}
        assert {"/mnt/kubepeft/volumes/models", "/data/runs", "/var/run/secrets/kubepeft/adapter-0"} <= mounts
        assert "/var/run/secrets/kubepeft/dataset" in mounts
