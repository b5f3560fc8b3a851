"""The real operator process, under the chart's RBAC through its ServiceAccount token, against a
real kube-apiserver + controller-manager; the tests play the kubelet and the trainer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubepeft_testing.control_plane import ControlPlane

from kubepeft.contract import REPORT_KEY, ReportArtifacts, ReportProgress, TrainerReport
from tests.cluster.identities import Identity, can_i, service_account_identity
from tests.cluster.kubelet import FakeKubelet
from tests.cluster.operator_process import OperatorProcess
from tests.cluster.rest import Kube, KubeError
from tests.cluster.support import wait_for
from tests.operator.support import S3_KEYS, peftjob, secret

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

JOBS = "/apis/kubepeft.dev/v1alpha1/namespaces/{ns}/peftjobs"
CHILDREN = {
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "services": "/api/v1/namespaces/{ns}/services",
    "serviceaccounts": "/api/v1/namespaces/{ns}/serviceaccounts",
    "roles": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "rolebindings": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "pods": "/api/v1/namespaces/{ns}/pods",
}
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
WAIT_SUCCEEDED = ("--for=condition=Succeeded", "peftjob/tune", "--timeout=60s")


# --- helpers ----------------------------------------------------------------------------------


def job_manifest(name: str = "tune", **changes: Any) -> dict[str, Any]:
    manifest = peftjob(name, **changes)
    manifest["spec"].setdefault("resources", {}).update({"cpu": "1", "memory": "1Gi"})
    return manifest


def create_job(admin: Kube, ns: str, name: str = "tune", **changes: Any) -> dict[str, Any]:
    return dict(admin.request("POST", JOBS.format(ns=ns), job_manifest(name, **changes)))


def get_job(admin: Kube, ns: str, name: str = "tune") -> dict[str, Any] | None:
    try:
        return dict(admin.get(JOBS.format(ns=ns) + f"/{name}"))
    except KubeError as error:
        if error.status == 404:
            return None
        raise


def job_status(admin: Kube, ns: str, name: str = "tune") -> dict[str, Any]:
    return (get_job(admin, ns, name) or {}).get("status") or {}


def wait_phase(admin: Kube, ns: str, phase: str, name: str = "tune", timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = job_status(admin, ns, name)
        return status if status.get("phase") == phase else None

    return wait_for(reached, timeout, what=f"{name} phase {phase} (status: {job_status(admin, ns, name)})")


def reason_of(status: dict[str, Any], type_: str) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c["type"] == type_), None)


def job_pods(admin: Kube, ns: str, name: str = "tune") -> list[dict[str, Any]]:
    return admin.items(CHILDREN["pods"].format(ns=ns), labelSelector=f"kubepeft.dev/job-name={name}")


def wait_pods(admin: Kube, ns: str, count: int, attempt: int = 1, name: str = "tune") -> list[dict[str, Any]]:
    def bound() -> list[dict[str, Any]] | None:
        pods = [
            p
            for p in job_pods(admin, ns, name)
            if p["metadata"]["labels"]["kubepeft.dev/attempt"] == str(attempt) and p["spec"].get("nodeName")
        ]
        return pods if len(pods) == count else None

    return wait_for(bound, 60, what=f"{count} bound pod(s) of attempt {attempt}")


def add_secrets(admin: Kube, ns: str) -> None:
    for name in ("model-creds", "s3-creds"):
        admin.create(secret(name, *S3_KEYS), ns)


def trainer(plane: ControlPlane, admin: Kube, ns: str, name: str = "tune") -> Identity:
    return service_account_identity(plane, admin, ns, f"{name}-trainer")


def report(identity: Identity, ns: str, body: TrainerReport, name: str = "tune") -> None:
    """What rank 0's trainer does: patch its progress ConfigMap, as the job's trainer identity."""
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}-progress"
    identity.kube.patch(path, {"data": {REPORT_KEY: body.to_json()}})


def events(admin: Kube, ns: str) -> list[dict[str, Any]]:
    return admin.items(f"/api/v1/namespaces/{ns}/events")


@pytest.fixture
def operator(operator_process: OperatorProcess) -> OperatorProcess:
    return operator_process.start()


# --- the tests ---------------------------------------------------------------------------------


def test_a_job_runs_to_success_with_owned_children_progress_and_kubectl_wait(
    control_plane: ControlPlane, admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    add_secrets(admin, namespace)
    uid = create_job(admin, namespace)["metadata"]["uid"]
    pods = wait_pods(admin, namespace, 2)  # admitted under Pod Security "restricted"
    for plural, path in CHILDREN.items():
        for child in admin.items(path.format(ns=namespace), labelSelector="kubepeft.dev/job-name=tune"):
            owners = [o for o in child["metadata"].get("ownerReferences") or [] if o.get("controller")]
            assert [o["uid"] for o in owners] == [uid], f"{plural}/{child['metadata']['name']}"
    for pod in pods:
        kubelet.run(pod)
    wait_phase(admin, namespace, "Running")

    # The trainer's token patches its own progress ConfigMap, and nothing else.
    identity = trainer(control_plane, admin, namespace)
    live = TrainerReport(
        state="Training", attempt=1, progress=ReportProgress(step=5, total_steps=10, loss=1.25, eta_seconds=30)
    )
    report(identity, namespace, live)
    wait_for(lambda: (job_status(admin, namespace).get("progress") or {}).get("step") == 5, what="progress")
    assert not can_i(identity.kube, "get", "secrets", namespace, "s3-creds")
    assert not can_i(identity.kube, "list", "pods", namespace)
    assert not can_i(identity.kube, "patch", "configmaps", namespace, "tune-config")
    with pytest.raises(KubeError) as denied:
        identity.kube.get(f"/api/v1/namespaces/{namespace}/secrets/s3-creds")
    assert denied.value.status == 403

    table = subprocess.run(
        [KUBECTL, "--kubeconfig", str(control_plane.admin_kubeconfig), "get", "pj", "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, row = table.splitlines()[:2]
    assert "ETA-SECONDS" in header and "5/10" in row and "Running" in row and " 30 " in f" {row} "

    final = TrainerReport(
        state="Succeeded",
        attempt=1,
        progress=ReportProgress(step=10, total_steps=10, loss=0.5, eta_seconds=0),
        artifacts=ReportArtifacts(adapter="s3://runs/out/a", manifest="s3://runs/out/manifest.json"),
    )
    report(identity, namespace, final)
    for pod in job_pods(admin, namespace):
        kubelet.finish(pod, 0)
    waited = subprocess.run(
        [KUBECTL, "--kubeconfig", str(control_plane.admin_kubeconfig), "wait", "-n", namespace, *WAIT_SUCCEEDED],
        capture_output=True,
        text=True,
    )
    assert waited.returncode == 0, waited.stderr
    done = job_status(admin, namespace)
    assert done["phase"] == "Succeeded" and done["artifacts"]["manifest"] == "s3://runs/out/manifest.json"
    assert "etaSeconds" not in done["progress"]  # nothing left to estimate
    assert operator.running


def test_the_next_attempt_starts_only_after_the_previous_attempts_pods_are_gone(
    admin: Kube, namespace: str, operator: OperatorProcess
) -> None:
    kubelet = FakeKubelet(admin, namespace=namespace)
    kubelet.register_node()
    kubelet.start(finish_deletions=False)  # graceful deletions finish when this test says so
    try:
        add_secrets(admin, namespace)
        create_job(admin, namespace)
        pods = {p["metadata"]["labels"]["kubepeft.dev/rank"]: p for p in wait_pods(admin, namespace, 2)}
        for pod in pods.values():
            kubelet.run(pod)
        wait_phase(admin, namespace, "Running")
        kubelet.finish(pods["1"], 1, "connection reset by peer")
        wait_phase(admin, namespace, "Restarting")
        # Rank 0 of attempt 1 is terminating (its grace period); attempt 2 must not exist yet.
        wait_for(
            lambda: any(p["metadata"].get("deletionTimestamp") for p in job_pods(admin, namespace)),
            what="attempt 1 terminating",
        )
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            current = job_pods(admin, namespace)
            assert all(p["metadata"]["labels"]["kubepeft.dev/attempt"] == "1" for p in current), current
            time.sleep(0.2)
        assert "waits for" in job_status(admin, namespace).get("message", "")
        kubelet.finish_deletions()
        second = wait_pods(admin, namespace, 2, attempt=2)
        hostnames = [p["spec"]["hostname"] for p in job_pods(admin, namespace)]
        assert len(hostnames) == len(set(hostnames)) == 2
        for pod in second:
            kubelet.run(pod)
        status = wait_phase(admin, namespace, "Running")
        assert status["attempts"] == 2
    finally:
        kubelet.stop()


def test_exit_3_fails_at_once_and_backoff_limit_fails_after_retries(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    add_secrets(admin, namespace)
    create_job(admin, namespace, "bad-data")
    create_job(admin, namespace, "flaky", runPolicy={"backoffLimit": 1})
    for pod in wait_pods(admin, namespace, 2, name="bad-data"):
        kubelet.run(pod)
    kubelet.finish(job_pods(admin, namespace, "bad-data")[0], 3, "train.jsonl:3: not JSON")
    failed = wait_phase(admin, namespace, "Failed", "bad-data")
    assert reason_of(failed, "Failed") == "PermanentFailure" and "train.jsonl:3" in failed["message"]
    for attempt in (1, 2):
        pods = wait_pods(admin, namespace, 2, attempt=attempt, name="flaky")
        kubelet.finish(pods[0], 137, "OOMKilled")
    failed = wait_phase(admin, namespace, "Failed", "flaky")
    assert reason_of(failed, "Failed") == "BackoffLimitExceeded" and failed["attempts"] == 2


def test_deadline_suspend_and_resume(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    add_secrets(admin, namespace)
    create_job(admin, namespace, "slow", runPolicy={"activeDeadlineSeconds": 3})
    create_job(admin, namespace, "paused")
    for pod in wait_pods(admin, namespace, 2, name="paused"):
        kubelet.run(pod)
    wait_phase(admin, namespace, "Running", "paused")
    failed = wait_phase(admin, namespace, "Failed", "slow", timeout=30)
    assert reason_of(failed, "Failed") == "DeadlineExceeded"

    path = JOBS.format(ns=namespace) + "/paused"
    admin.patch(path, {"spec": {"runPolicy": {"suspend": True}}})
    wait_phase(admin, namespace, "Suspended", "paused")
    wait_for(lambda: not job_pods(admin, namespace, "paused"), what="workers of the suspended job gone")
    admin.patch(path, {"spec": {"runPolicy": {"suspend": False}}})
    for pod in wait_pods(admin, namespace, 2, attempt=2, name="paused"):
        kubelet.run(pod)
    resumed = wait_phase(admin, namespace, "Running", "paused")
    assert resumed["attempts"] == 2 and reason_of(resumed, "Suspended") == "Resumed"


def test_ttl_and_deletion_leave_the_children_to_the_real_garbage_collector(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    add_secrets(admin, namespace)
    create_job(admin, namespace, "short", runPolicy={"ttlSecondsAfterFinished": 1})
    create_job(admin, namespace, "doomed")
    for pod in wait_pods(admin, namespace, 2, name="short"):
        kubelet.finish(kubelet.run(pod), 0)
    wait_for(lambda: get_job(admin, namespace, "short") is None, 60, what="the job deleted by its TTL")
    wait_pods(admin, namespace, 2, name="doomed")
    admin.delete(JOBS.format(ns=namespace) + "/doomed")
    for name in ("short", "doomed"):
        for plural, path in CHILDREN.items():

            def collected(path: str = path, name: str = name) -> bool:
                return not admin.items(path.format(ns=namespace), labelSelector=f"kubepeft.dev/job-name={name}")

            wait_for(collected, 90, what=f"{plural} of {name} garbage-collected")


def test_the_server_rejects_spec_changes_after_creation(admin: Kube, namespace: str) -> None:
    create_job(admin, namespace)
    with pytest.raises(KubeError) as refused:
        admin.patch(JOBS.format(ns=namespace) + "/tune", {"spec": {"training": {"maxSteps": 99}}})
    assert refused.value.status == 422 and "immutable" in refused.value.message


def test_a_quota_refusal_shows_as_failed_create_and_the_job_recovers_when_lifted(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    add_secrets(admin, namespace)
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }
    admin.create(quota, namespace)
    time.sleep(1.5)  # the quota controller records usage before admission enforces it
    create_job(admin, namespace)

    def refused() -> dict[str, Any] | None:
        status = job_status(admin, namespace)
        return status if reason_of(status, "Created") == "FailedCreate" else None

    status = wait_for(refused, 60, what="FailedCreate in status")
    assert "exceeded quota" in status["message"] and "no-pods" in status["message"]
    wait_for(
        lambda: [e for e in events(admin, namespace) if e.get("reason") == "FailedCreate" and "quota" in e["message"]],
        what="a FailedCreate Event with the server's message",
    )
    admin.delete(f"/api/v1/namespaces/{namespace}/resourcequotas/no-pods")
    for pod in wait_pods(admin, namespace, 2):
        kubelet.run(pod)
    recovered = wait_phase(admin, namespace, "Running", timeout=90)
    assert reason_of(recovered, "Created") == "ChildrenCreated"


def test_a_terminating_namespace_is_left_alone(admin: Kube, namespace: str, operator: OperatorProcess) -> None:
    add_secrets(admin, namespace)
    for i in range(3):
        create_job(admin, namespace, f"job-{i}")
    wait_for(lambda: len(admin.items(CHILDREN["pods"].format(ns=namespace))) >= 2, what="pods of the first jobs")
    admin.delete(f"/api/v1/namespaces/{namespace}")
    wait_for(lambda: not admin.exists(f"/api/v1/namespaces/{namespace}"), 120, what="the namespace gone")
    log = operator.log_tail(200_000)
    assert log.count("being terminated") <= 2, log[-3000:]  # at most a refusal racing the watch
    assert operator.running


def test_the_operator_killed_twice_mid_work_duplicates_nothing(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    add_secrets(admin, namespace)
    names = [f"burst-{i:02d}" for i in range(20)]
    creator = threading.Thread(target=lambda: [create_job(admin, namespace, n) for n in names])
    creator.start()
    time.sleep(1.0)
    operator.kill()
    operator.start()
    time.sleep(1.5)
    operator.kill()
    creator.join()
    operator.start()
    for name in names:
        wait_pods(admin, namespace, 2, name=name)
    for name in names:
        status = job_status(admin, namespace, name)
        assert status.get("attempts") == 1 and status.get("phase") in ("Created", "Running"), (name, status)
    for plural, path in CHILDREN.items():
        children = admin.items(path.format(ns=namespace), labelSelector="kubepeft.dev/job-name")
        per_job: dict[str, list[str]] = {}
        for child in children:
            per_job.setdefault(child["metadata"]["labels"]["kubepeft.dev/job-name"], []).append(
                child["metadata"]["name"]
            )
        expected = {"configmaps": 2, "pods": 2}.get(plural, 1)
        for name in names:
            assert len(per_job.get(name, [])) == expected, (plural, name, per_job.get(name))


def test_a_job_deleted_and_created_again_under_its_name_waits_for_the_old_children(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator: OperatorProcess
) -> None:
    """The real garbage collector removes a deleted job's children asynchronously: a new job of
    the same name meets them (found by the operator scale benchmark). It waits; no NameConflict."""
    add_secrets(admin, namespace)
    old_uid = create_job(admin, namespace)["metadata"]["uid"]
    wait_pods(admin, namespace, 2)
    admin.delete(JOBS.format(ns=namespace) + "/tune", propagationPolicy="Background")
    wait_for(lambda: get_job(admin, namespace) is None, what="the old job gone")
    new_uid = create_job(admin, namespace)["metadata"]["uid"]
    assert new_uid != old_uid

    def owned_by_the_new_job() -> list[dict[str, Any]] | None:
        pods = [p for p in job_pods(admin, namespace) if p["metadata"]["ownerReferences"][0]["uid"] == new_uid]
        return pods if len(pods) == 2 else None

    for pod in wait_for(owned_by_the_new_job, 120, what="the new job's own pods"):
        if pod["spec"].get("nodeName"):
            kubelet.run(pod)
    status = job_status(admin, namespace)
    assert status.get("phase") != "Failed", status
    assert reason_of(status, "Failed") is None
