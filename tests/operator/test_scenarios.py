"""The operator against the test API server and the fake kubelet: whole job lifecycles."""

from __future__ import annotations

from typing import Any

import pytest
from kubepeft_operator import naming
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.kubelet import Pod, PodScript

from tests.fixtures.kube import wait_for
from tests.operator.scenario_support import (
    LABEL,
    attempt_of,
    condition,
    event_reasons,
    pods,
    rank_of,
    status,
    wait_phase,
)
from tests.operator.support import NS, peftjob, secret

pytestmark = pytest.mark.timeout(60)


def test_job_runs_to_success_with_progress_artifacts_and_consistent_rendezvous(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    operator = start_operator()
    start_trainers(lambda p: PodScript(exit_code=0, run_for=0.5))
    cluster.create("peftjobs", NS, peftjob())
    running = wait_phase(cluster, "Running")
    assert running["attempts"] == 1 and condition(running, "Running")["status"] == "True"
    wait_for(lambda: (status(cluster).get("progress") or {}).get("step") == 5, what="progress from the report")
    done = wait_phase(cluster, "Succeeded")
    assert done["progress"]["step"] == 10 and done["progress"]["display"] == "10/10"
    assert done["progress"]["evalLoss"] == 0.7 and done["evalLossBefore"] == 2.5
    assert done["artifacts"]["manifest"] == "s3://runs/out/team-a/tune/manifest.json"
    assert done["completionTime"] and done["startTime"] and done["observedGeneration"] == 1
    assert condition(done, "Succeeded")["status"] == "True" and condition(done, "Running")["status"] == "False"
    # The children, exactly once each, owned by the job.
    uid = cluster.get("peftjobs", NS, "tune")["metadata"]["uid"]  # type: ignore[index]
    names = {
        p: sorted(o["metadata"]["name"] for o in cluster.list(p, NS, LABEL))
        for p in ("configmaps", "services", "serviceaccounts", "roles", "rolebindings", "pods")
    }
    assert names == {
        "configmaps": ["tune-config", "tune-progress"],
        "services": ["tune"],
        "serviceaccounts": ["tune-trainer"],
        "roles": ["tune-trainer"],
        "rolebindings": ["tune-trainer"],
        "pods": ["tune-a1-0", "tune-a1-1"],
    }
    for pod in pods(cluster):
        assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
    # 2 nodes: one rendezvous, ranks 0..n-1.
    envs = [{e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]} for p in pods(cluster)]
    assert sorted(e["KUBEPEFT_NODE_RANK"] for e in envs) == ["0", "1"]
    for key in ("KUBEPEFT_MASTER_ADDR", "KUBEPEFT_MASTER_PORT", "KUBEPEFT_NUM_NODES"):
        assert len({e[key] for e in envs}) == 1
    assert envs[0]["KUBEPEFT_MASTER_ADDR"] == f"tune-0.tune.{NS}.svc" and envs[0]["KUBEPEFT_NUM_NODES"] == "2"
    wait_for(lambda: {"Created", "Running", "Succeeded"} <= set(event_reasons(cluster)), what="events")
    # No finalizer (children go by garbage collection); status stays typed.
    assert not cluster.get("peftjobs", NS, "tune")["metadata"].get("finalizers")  # type: ignore[index]
    assert set(done) <= {
        "phase",
        "conditions",
        "observedGeneration",
        "startTime",
        "completionTime",
        "attempts",
        "progress",
        "artifacts",
        "evalLossBefore",
        "message",
    }
    assert operator.metrics.jobs.labels("Succeeded")._value.get() == 1
    assert operator.metrics.attempts._value.get() == 1


def test_a_failed_worker_restarts_the_gang_and_the_next_attempt_succeeds(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    start_operator()

    def script(pod: Pod) -> PodScript:
        if attempt_of(pod) == 1 and rank_of(pod) == 1:
            return PodScript(exit_code=1, message="connection reset by peer", run_for=0.2)
        return PodScript(exit_code=0, run_for=0.3 if attempt_of(pod) > 1 else 5)

    start_trainers(script)
    cluster.create("peftjobs", NS, peftjob())
    done = wait_phase(cluster, "Succeeded")
    assert done["attempts"] == 2
    assert condition(done, "Restarting")["status"] == "False"
    job = cluster.get("peftjobs", NS, "tune")
    assert job is not None and job["metadata"]["annotations"][naming.ANNOTATION_FAILED_ATTEMPTS] == "1"
    wait_for(lambda: all(attempt_of(p) == 2 for p in pods(cluster)), what="attempt-1 pods deleted")
    assert len(pods(cluster)) == 2
    wait_for(lambda: "Restarting" in event_reasons(cluster), what="a Restarting Event")


def test_backoff_limit_exhausted_fails_the_job(cluster: ApiServer, start_operator: Any, start_trainers: Any) -> None:
    start_operator()
    start_trainers(lambda p: PodScript(exit_code=1 if rank_of(p) == 0 else None, message="OOM", run_for=0.1))
    cluster.create("peftjobs", NS, peftjob(runPolicy={"backoffLimit": 1}))
    failed = wait_phase(cluster, "Failed")
    assert failed["attempts"] == 2
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    assert "OOM" in failed["message"]
    wait_for(lambda: not [p for p in pods(cluster) if p["status"]["phase"] == "Running"], what="running pods deleted")


def test_permanent_failure_fails_at_once_with_the_trainers_message(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    start_operator()
    message = "s3://data/train.jsonl:12: record has no field 'text'"
    start_trainers(lambda p: PodScript(exit_code=3 if rank_of(p) == 0 else None, message=message, run_for=0.1))
    cluster.create("peftjobs", NS, peftjob())
    failed = wait_phase(cluster, "Failed")
    assert failed["attempts"] == 1 and condition(failed, "Failed")["reason"] == "PermanentFailure"
    assert "train.jsonl:12" in failed["message"] and "train.jsonl:12" in condition(failed, "Failed")["message"]
    wait_for(lambda: [p["metadata"]["name"] for p in pods(cluster)] == ["tune-a1-0"], what="rank 1 deleted")


def test_deadline_exceeded(cluster: ApiServer, start_operator: Any, start_trainers: Any) -> None:
    start_operator()
    start_trainers(lambda p: PodScript(exit_code=None))  # run forever
    cluster.create("peftjobs", NS, peftjob(runPolicy={"activeDeadlineSeconds": 2}))
    wait_phase(cluster, "Running")
    failed = wait_phase(cluster, "Failed", timeout=10)
    assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"
    wait_for(lambda: not pods(cluster), what="workers deleted")


def test_suspend_then_resume(cluster: ApiServer, start_operator: Any, start_trainers: Any) -> None:
    start_operator()
    kubelet = start_trainers(lambda p: PodScript(exit_code=None))
    cluster.create("peftjobs", NS, peftjob())
    wait_phase(cluster, "Running")
    patch = {"spec": {"runPolicy": {"suspend": True}}}
    cluster.call(
        cluster.store.patch, cluster.rtype("peftjobs"), NS, "tune", patch, "application/merge-patch+json", None
    )
    suspended = wait_phase(cluster, "Suspended")
    assert condition(suspended, "Suspended")["status"] == "True"
    wait_for(lambda: not pods(cluster), what="workers deleted")
    patch = {"spec": {"runPolicy": {"suspend": False}}}
    cluster.call(
        cluster.store.patch, cluster.rtype("peftjobs"), NS, "tune", patch, "application/merge-patch+json", None
    )
    running = wait_phase(cluster, "Running")
    assert running["attempts"] == 2 and condition(running, "Suspended")["reason"] == "Resumed"
    job = cluster.get("peftjobs", NS, "tune")
    assert job is not None and naming.ANNOTATION_FAILED_ATTEMPTS not in (job["metadata"].get("annotations") or {})
    for pod in pods(cluster):
        kubelet.terminate(NS, pod["metadata"]["name"], 0)
    assert wait_phase(cluster, "Succeeded")["observedGeneration"] == 3


def test_ttl_deletes_the_finished_job_and_its_children(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    start_operator()
    start_trainers(lambda p: PodScript(exit_code=0))
    cluster.create("peftjobs", NS, peftjob(runPolicy={"ttlSecondsAfterFinished": 1}))
    wait_phase(cluster, "Succeeded")
    wait_for(lambda: cluster.get("peftjobs", NS, "tune") is None, what="the job deleted by TTL")
    for plural in ("pods", "configmaps", "services", "serviceaccounts", "roles", "rolebindings"):
        assert cluster.list(plural, NS, LABEL) == [], plural


def test_deleting_the_job_collects_its_children(cluster: ApiServer, start_operator: Any, start_trainers: Any) -> None:
    start_operator()
    start_trainers(lambda p: PodScript(exit_code=None))
    cluster.create("peftjobs", NS, peftjob())
    wait_phase(cluster, "Running")
    cluster.delete("peftjobs", NS, "tune")
    for plural in ("pods", "configmaps", "services", "serviceaccounts", "roles", "rolebindings"):
        assert cluster.list(plural, NS, LABEL) == [], plural
    assert cluster.list("secrets", NS)  # not ours: untouched


def test_operator_restarted_mid_job_loses_no_transition_and_duplicates_nothing(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    first = start_operator()
    kubelet = start_trainers(lambda p: PodScript(exit_code=None))
    cluster.create("peftjobs", NS, peftjob())
    wait_phase(cluster, "Running")
    first.stop()
    # While the operator is away, the workers finish (and one extra event: the report).
    for pod in pods(cluster):
        kubelet.terminate(NS, pod["metadata"]["name"], 0)
    second = start_operator()
    done = wait_phase(cluster, "Succeeded")
    assert done["attempts"] == 1
    assert sorted(p["metadata"]["name"] for p in pods(cluster)) == ["tune-a1-0", "tune-a1-1"]
    assert len(cluster.list("configmaps", NS, LABEL)) == 2 and len(cluster.list("services", NS, LABEL)) == 1
    assert second.metrics.attempts._value.get() == 0  # nothing was started again


def test_restart_between_status_write_and_pod_creation_creates_the_pods(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    """The state a crash after the status write leaves: attempt 1 recorded, no pods yet."""
    start_trainers(lambda p: PodScript(exit_code=0))
    cluster.create("peftjobs", NS, peftjob())
    cluster.patch_status(
        "peftjobs", NS, "tune", {"phase": "Created", "attempts": 1, "startTime": "2026-01-01T00:00:00Z"}
    )
    start_operator()
    done = wait_phase(cluster, "Succeeded")
    assert done["attempts"] == 1 and len(pods(cluster)) == 2


def test_missing_secret_fails_the_job_without_workers(apiserver: ApiServer, start_operator: Any) -> None:
    start_operator()
    apiserver.create("secrets", NS, secret("model-creds", "AWS_ACCESS_KEY_ID"))  # a key is missing
    apiserver.create("peftjobs", NS, peftjob())
    failed = wait_phase(apiserver, "Failed")
    assert condition(failed, "Failed")["reason"] == "SecretKeyNotFound"
    assert "AWS_SECRET_ACCESS_KEY" in failed["message"] and "eA==" not in str(failed)
    apiserver.create(
        "peftjobs", NS, peftjob("other", output={"uri": "s3://runs/out", "credentialsSecretRef": {"name": "nope"}})
    )
    other = wait_phase(apiserver, "Failed", name="other")
    assert condition(other, "Failed")["reason"] in ("SecretNotFound", "SecretKeyNotFound")
    assert apiserver.list("pods", NS) == []


def claim(name: str, *modes: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": "1Gi"}}},
    }


def test_declared_claims_are_checked_then_mounted(cluster: ApiServer, start_operator: Any, start_trainers: Any) -> None:
    start_operator()
    start_trainers(lambda p: PodScript(exit_code=0, run_for=0.2))
    volumes = [{"claimName": "models"}, {"claimName": "runs"}]
    on_claims = {"model": {"uri": "pvc://models/tiny"}, "volumes": volumes, "output": {"uri": "pvc://runs/out"}}
    cluster.create("peftjobs", NS, peftjob("missing", **on_claims))
    failed = wait_phase(cluster, "Failed", name="missing")
    assert condition(failed, "Failed")["reason"] == "PersistentVolumeClaimNotFound"
    assert '"models"' in failed["message"] and not pods(cluster)
    cluster.create("persistentvolumeclaims", NS, claim("models", "ReadWriteOncePod"))
    cluster.create("persistentvolumeclaims", NS, claim("runs", "ReadWriteMany"))
    cluster.create("peftjobs", NS, peftjob("single", **on_claims))
    refused = wait_phase(cluster, "Failed", name="single")
    assert condition(refused, "Failed")["reason"] == "PersistentVolumeClaimAccessMode"
    cluster.delete("persistentvolumeclaims", NS, "models")
    cluster.create("persistentvolumeclaims", NS, claim("models", "ReadOnlyMany"))
    cluster.create("peftjobs", NS, peftjob("tune", **on_claims))
    wait_phase(cluster, "Succeeded")
    claims = [
        {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"].get("readOnly", False)}
        for pod in pods(cluster)
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [{"models": True}, {"runs": False}] * 2


def test_pods_the_api_server_refuses_fail_the_job_instead_of_retrying(cluster: ApiServer, start_operator: Any) -> None:
    """A spec that passes the CRD but renders a pod the API server rejects (422) cannot run."""
    start_operator()
    unmatchable: dict[str, Any] = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}
    }
    resources = {"nodes": 2, "gpusPerNode": 0, "cpu": "2", "memory": "4Gi", "affinity": unmatchable}
    cluster.create("peftjobs", NS, peftjob(resources=resources))
    failed = wait_phase(cluster, "Failed")
    assert failed["attempts"] == 1 and condition(failed, "Failed")["reason"] == "InvalidSpec"
    assert "at least one node selector term" in failed["message"]
    wait_for(lambda: "InvalidSpec" in event_reasons(cluster), what="an InvalidSpec Event")
    assert pods(cluster) == []


def test_dropped_watch_streams_do_not_lose_events(cluster: ApiServer, start_operator: Any, start_trainers: Any) -> None:
    start_operator()
    kubelet = start_trainers(lambda p: PodScript(exit_code=None))
    cluster.create("peftjobs", NS, peftjob())
    wait_phase(cluster, "Running")
    assert cluster.drop_watches() >= 3
    for pod in pods(cluster):
        kubelet.terminate(NS, pod["metadata"]["name"], 0)
    wait_phase(cluster, "Succeeded")


def test_a_precreated_child_name_is_never_adopted(cluster: ApiServer, start_operator: Any) -> None:
    """Anyone who may create ConfigMaps could create ``<job>-config`` first (pointing the job's
    pods, with the job's Secret, at another output): the job fails instead of using it."""
    start_operator()
    planted = {"metadata": {"name": "tune-config", "labels": {"planted": "yes"}}, "data": {"config.json": "{}"}}
    cluster.create("configmaps", NS, planted)
    cluster.create("peftjobs", NS, peftjob())
    failed = wait_phase(cluster, "Failed")
    assert condition(failed, "Failed")["reason"] == "NameConflict"
    assert 'ConfigMap "tune-config"' in failed["message"]
    assert pods(cluster) == []
    untouched = cluster.get("configmaps", NS, "tune-config")
    assert untouched is not None and untouched["data"] == {"config.json": "{}"}
    assert not untouched["metadata"].get("ownerReferences")
    wait_for(lambda: "NameConflict" in event_reasons(cluster), what="a NameConflict Event")


def test_a_job_named_to_collide_with_another_jobs_children_cannot_take_them_over(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    """A 63-character victim name is cut with a hash; a second job named exactly like the cut
    prefix has the same child names. The first to create them owns them; the other fails."""
    victim = "v" * 63
    attacker = naming.config_map_name(victim).removesuffix("-config")
    assert attacker != victim and naming.config_map_name(attacker) == naming.config_map_name(victim)
    start_trainers(lambda p: PodScript(exit_code=None))
    start_operator()
    cluster.create("peftjobs", NS, peftjob(victim))
    wait_phase(cluster, "Running", name=victim)
    cluster.create("peftjobs", NS, peftjob(attacker, output={"uri": "s3://evil/out"}))
    failed = wait_phase(cluster, "Failed", name=attacker)
    assert condition(failed, "Failed")["reason"] == "NameConflict"
    config = cluster.get("configmaps", NS, naming.config_map_name(victim))
    victim_uid = cluster.get("peftjobs", NS, victim)["metadata"]["uid"]  # type: ignore[index]
    assert config is not None and config["metadata"]["ownerReferences"][0]["uid"] == victim_uid
    assert "s3://evil" not in str(config["data"])
    assert status(cluster, victim)["phase"] == "Running"
