"""The report pod of a finished sweep (pure rendering).

The operator never holds storage credentials, so the report is written by one short pod with the
CPU trainer image and the template's output credentials (the same projected Secret a worker
mounts), reading the sweep's spec and status from a ConfigMap. Both are owned by the sweep.
"""

from __future__ import annotations

import json
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus, SweepReport
from kubepeft.contract import output_root
from kubepeft.sources import writable_claims
from kubepeft.storage.uri import join
from kubepeft.sweep.report import BANK_JSON, RESULTS_JSON, RESULTS_MD, TRADEOFF_PNG, bank_task_path
from kubepeft_operator import naming
from kubepeft_operator.render.config import credential_mounts
from kubepeft_operator.render.workers import claim_volumes, container_security, pod_security
from kubepeft_operator.settings import OperatorSettings
from kubepeft_operator.sweep.logic import LABEL_SWEEP, Event, SweepRef, owner_reference

COMPONENT = "sweep-report"
INPUT_KEY = "input.json"
INPUT_DIR = "/etc/kubepeft-report"


def report_name(sweep: str) -> str:
    return naming.fit(sweep, "-report")


def report_uris(spec: PeftSweepSpec, namespace: str, name: str) -> SweepReport:
    """Where the report pod writes (the same layout as the local run's report)."""
    root = output_root(spec.template, namespace, name)
    return SweepReport(
        results=join(root, RESULTS_JSON),
        table=join(root, RESULTS_MD),
        tradeoff=join(root, TRADEOFF_PNG),
        bank=join(root, BANK_JSON) if bank_task_path(spec) else None,
        manifest=join(root, "manifest.json"),
    )


def _metadata(sweep: SweepRef) -> dict[str, Any]:
    return {
        "name": report_name(sweep.name),
        "namespace": sweep.namespace,
        "labels": {
            LABEL_SWEEP: sweep.name,
            naming.LABEL_JOB_NAME: naming.label_value(report_name(sweep.name)),
            naming.LABEL_COMPONENT: COMPONENT,
            naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
        },
        "ownerReferences": [owner_reference(sweep)],
    }


def render_report_input(
    sweep: SweepRef, spec: PeftSweepSpec, status: PeftSweepStatus, settings: OperatorSettings
) -> dict[str, Any]:
    endpoint = spec.template.output.endpoint or settings.default_s3_endpoint or None
    document = {
        "name": sweep.name,
        "namespace": sweep.namespace,
        "endpoint": endpoint,
        "spec": spec.to_wire(),
        "status": status.to_wire(),
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(sweep),
        "data": {INPUT_KEY: json.dumps(document)},
    }


def _credentials(template: PeftJobSpec, settings: OperatorSettings) -> tuple[list[Any], list[Any], list[str]]:
    volumes: list[Any] = []
    mounts: list[Any] = []
    args: list[str] = []
    for cred in credential_mounts(template, settings):
        if cred.source != "output":
            continue
        secret: dict[str, Any] = {"name": cred.secret, "items": [{"key": k, "path": p} for k, p in cred.items]}
        if not cred.explicit:
            secret["optional"] = True
        volumes.append({"name": cred.volume_name, "projected": {"defaultMode": 0o440, "sources": [{"secret": secret}]}})
        mounts.append({"name": cred.volume_name, "mountPath": cred.path, "readOnly": True})
        args = ["--credentials-dir", cred.path]
    return volumes, mounts, args


def render_report_pod(sweep: SweepRef, spec: PeftSweepSpec, settings: OperatorSettings) -> dict[str, Any]:
    volumes, mounts, args = _credentials(spec.template, settings)
    # An output on a claim: the report is written there, so that claim (only) is mounted read-write.
    claims, claim_mounts = claim_volumes(spec.template, writable_claims(spec.template))
    volumes += claims
    mounts += claim_mounts
    volumes += [
        {"name": "input", "configMap": {"name": report_name(sweep.name)}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts += [{"name": "input", "mountPath": INPUT_DIR, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
    container = {
        "name": "report",
        "image": settings.trainer_image_cpu,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["kubepeft", "sweep-report", "--input", f"{INPUT_DIR}/{INPUT_KEY}", *args],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": mounts,
        "securityContext": container_security(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # it talks to storage only, never to the API
        "enableServiceLinks": False,
        "securityContext": pod_security(spec.template),
        "containers": [container],
        "volumes": volumes,
    }
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(sweep), "spec": pod_spec}


def report_step(
    sweep: SweepRef,
    spec: PeftSweepSpec,
    status: PeftSweepStatus,
    pod: dict[str, Any] | None,
    settings: OperatorSettings,
) -> tuple[PeftSweepStatus, list[dict[str, Any]], list[Event]]:
    """Once the sweep has ended: start the report pod, then record the report's URIs when it succeeds."""
    if status.phase not in ("Succeeded", "Failed") or status.report is not None:
        return status, [], []
    if pod is None:
        objects = [render_report_input(sweep, spec, status, settings), render_report_pod(sweep, spec, settings)]
        return (
            status,
            objects,
            [Event("Normal", "ReportStarted", f"writing the report in pod {report_name(sweep.name)}")],
        )
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        uris = report_uris(spec, sweep.namespace, sweep.name)
        return status.model_copy(update={"report": uris}), [], [Event("Normal", "ReportWritten", str(uris.manifest))]
    if phase == "Failed" and "report pod failed" not in (status.message or ""):
        message = f"{status.message or status.phase}; the report pod failed (see its logs)"
        event = Event("Warning", "ReportFailed", f"pod {report_name(sweep.name)} failed")
        return status.model_copy(update={"message": message}), [], [event]
    return status, [], []
