"""PeftSweeps on a real API server: the CRD is accepted, the examples pass the server's checks, and
the real operator (under the chart's RBAC) runs a sweep to Succeeded, its report pod included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.api import sweep_crd
from kubepeft.contract import REPORT_KEY, ReportArtifacts, ReportProgress, TrainerReport
from tests.cluster.kubelet import FakeKubelet
from tests.cluster.operator_process import OperatorProcess
from tests.cluster.rest import Kube
from tests.cluster.support import apply_crd, condition, wait_for
from tests.fixtures.api import REPO_ROOT
from tests.operator.scenario_support import peftsweep
from tests.operator.support import S3_KEYS, secret

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]
SWEEPS = "/apis/kubepeft.dev/v1alpha1/namespaces/{ns}/peftsweeps"
SWEEP_CRDS = [
    REPO_ROOT / "crds" / sweep_crd.CRD_FILE,
    REPO_ROOT / "charts" / "kubepeft" / "crds" / sweep_crd.CRD_FILE,
]


@pytest.fixture(scope="module")
def sweep_crd_applied(admin: Kube, peftjob_crd: object) -> dict[str, Any]:
    return apply_crd(admin, yaml.safe_load(SWEEP_CRDS[0].read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", SWEEP_CRDS, ids=["crds", "chart"])
def test_the_sweep_crd_is_accepted_and_established(admin: Kube, path: Path, sweep_crd_applied: object) -> None:
    established = apply_crd(admin, yaml.safe_load(path.read_text(encoding="utf-8")))
    assert condition(established, "Established") == "True"


@pytest.mark.parametrize("example", sorted((REPO_ROOT / "examples").glob("sweep-*.yaml")), ids=lambda p: p.stem)
def test_sweep_examples_pass_the_servers_checks(
    admin: Kube, namespace: str, sweep_crd_applied: object, example: Path
) -> None:
    for doc in yaml.safe_load_all(example.read_text(encoding="utf-8")):
        if doc and doc.get("kind") == "PeftSweep":
            params = {"dryRun": "All", "fieldValidation": "Strict"}
            admin.request("POST", SWEEPS.format(ns=namespace), doc, params=params)


def _finish_trials(admin: Kube, kubelet: FakeKubelet, namespace: str) -> int:
    """Play every bound trial pod to success (rank 0 reports an eval loss) and the report pod."""
    done = 0
    for pod in kubelet.pods(namespace):
        meta, phase = pod["metadata"], (pod.get("status") or {}).get("phase")
        if not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
            continue
        labels = meta.get("labels") or {}
        if labels.get("kubepeft.dev/component") != "sweep-report":
            job = labels["kubepeft.dev/job-name"]
            index = int(job.rsplit("-t", 1)[1])
            final = TrainerReport(
                state="Succeeded",
                attempt=1,
                progress=ReportProgress(step=10, total_steps=10, loss=1.0, eval_loss=1.0 - 0.1 * index),
                eval_loss_before=2.5,
                eval_loss_after=1.0 - 0.1 * index,
                trainable_parameters=1000 * 2**index,
                artifacts=ReportArtifacts(adapter=f"s3://runs/out/{namespace}/{job}/adapter"),
            )
            admin.patch(
                f"/api/v1/namespaces/{namespace}/configmaps/{job}-progress", {"data": {REPORT_KEY: final.to_json()}}
            )
        kubelet.finish(kubelet.run(pod), 0)
        done += 1
    return done


def test_the_real_operator_runs_a_sweep_to_succeeded(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator_process: OperatorProcess, sweep_crd_applied: object
) -> None:
    operator_process.start()
    for name in ("model-creds", "s3-creds"):
        admin.create(secret(name, *S3_KEYS), namespace)
    sweep = peftsweep("ranks", parameters=[{"path": "lora.r", "values": [2, 4]}])
    sweep["spec"]["template"]["resources"].update({"cpu": "1", "memory": "1Gi"})
    uid = admin.request("POST", SWEEPS.format(ns=namespace), sweep)["metadata"]["uid"]

    def finished() -> dict[str, Any] | None:
        _finish_trials(admin, kubelet, namespace)
        status = admin.get(SWEEPS.format(ns=namespace) + "/ranks").get("status") or {}
        return status if status.get("phase") == "Succeeded" and status.get("report") else None

    status = wait_for(finished, 180, interval=0.5, what=f"the sweep Succeeded ({operator_process.log_tail(3000)})")
    assert (status["trialCount"], status["succeeded"]) == (2, 2)
    assert status["bestTrial"]["name"] == "ranks-t1"
    trials = admin.items(f"/apis/kubepeft.dev/v1alpha1/namespaces/{namespace}/peftjobs")
    assert sorted(t["metadata"]["name"] for t in trials) == ["ranks-t0", "ranks-t1"]
    for trial in trials:
        (owner,) = trial["metadata"]["ownerReferences"]
        assert owner["uid"] == uid and owner["controller"] and owner["blockOwnerDeletion"]
    assert operator_process.running
