"""The chart grants the operator exactly the verbs its requests use (plus what RBAC itself requires).

The operator is run through every code path that talks to the API server (success with TTL
deletion, a gang restart that re-ensures existing children, a missing Secret, a missing
PersistentVolumeClaim, a name conflict,
a two-trial PeftSweep with its report pod);
the test API server records each request as RBAC sees it (verb, group, resource). Those made by
the operator's own client and by kopf are compared with the ClusterRole the chart renders.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubepeft_operator.kube import USER_AGENT
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.kubelet import Pod, PodScript

from tests.deploy.support import of_kind, render, rule_triples
from tests.fixtures.kube import wait_for
from tests.operator.scenario_support import TrialKubelet, attempt_of, peftsweep, rank_of, wait_phase
from tests.operator.support import NS, peftjob

pytestmark = pytest.mark.timeout(90)

# Granted but never requested, each for a reason RBAC imposes (see the chart's comments).
REQUIRED_NOT_CALLED = {
    ("kubepeft.dev", "peftjobs/finalizers", "update"),  # blockOwnerDeletion under OwnerReferencesPermissionEnforcement
    ("kubepeft.dev", "peftsweeps/finalizers", "update"),  # the same, for a sweep's trials
    ("", "configmaps", "get"),  # delegated to the trainer's Role (RBAC escalation check)
    ("", "configmaps", "patch"),  # delegated to the trainer's Role
}
# Requested only in a race this test cannot force: a status write that conflicts (409).
RARELY_CALLED = {("kubepeft.dev", "peftjobs", "get")}
# Cluster-scoped discovery (kopf's, and the namespaces watch that tells terminating namespaces)
# and peering: granted by their own rules, in both modes.
KOPF_CLUSTER_SCOPE = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings", "kopfpeerings"}


def is_sweep_pod(pod: Pod) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return (
        labels.get("kubepeft.dev/job-name", "").startswith("sweepy")
        or labels.get("kubepeft.dev/component") == "sweep-report"
    )


def operator_requests(server: ApiServer) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for agent, verb, group, resource in server.store.audit
        if agent.startswith((USER_AGENT, "kopf/"))
    }


def chart_cluster_role() -> set[tuple[str, str, str]]:
    role = next(r for r in of_kind(render({}), "ClusterRole") if r["metadata"]["name"] == "kubepeft")
    return rule_triples(role["rules"])


def test_the_chart_grants_exactly_the_verbs_the_operator_uses(
    cluster: ApiServer, start_operator: Any, start_trainers: Any
) -> None:
    start_operator()

    def script(pod: Pod) -> PodScript:
        if attempt_of(pod) == 1 and rank_of(pod) == 1:
            return PodScript(exit_code=1, message="node lost", run_for=0.1)
        return PodScript(exit_code=0, run_for=0.2)

    def sweep_pods(pod: Pod) -> PodScript | None:
        return PodScript(exit_code=0, run_for=0.1) if is_sweep_pod(pod) else None

    start_trainers(lambda pod: None if is_sweep_pod(pod) else script(pod))
    trials = TrialKubelet(cluster.url, sweep_pods).start()
    cluster.create("peftsweeps", NS, peftsweep("sweepy", parameters=[{"path": "lora.r", "values": [2, 4]}]))
    cluster.create("peftjobs", NS, peftjob(runPolicy={"ttlSecondsAfterFinished": 1}))
    cluster.create("configmaps", NS, {"metadata": {"name": "clash-config"}, "data": {}})
    cluster.create("peftjobs", NS, peftjob("clash"))
    cluster.create(
        "peftjobs", NS, peftjob("nosecret", model={"uri": "s3://models/x", "credentialsSecretRef": {"name": "x"}})
    )
    cluster.create(
        "peftjobs",
        NS,
        peftjob("noclaim", model={"uri": "pvc://models/tiny"}, volumes=[{"claimName": "models"}]),
    )
    wait_phase(cluster, "Failed", name="clash")
    wait_phase(cluster, "Failed", name="nosecret")
    wait_phase(cluster, "Failed", name="noclaim")
    wait_for(lambda: cluster.get("peftjobs", NS, "tune") is None, timeout=30, what="the job deleted by its TTL")
    wait_for(
        lambda: ((cluster.get("peftsweeps", NS, "sweepy") or {}).get("status") or {}).get("phase") == "Succeeded",
        timeout=60,
        what="the sweep finished with its report",
    )
    trials.stop()

    used = operator_requests(cluster)
    everything = chart_cluster_role()
    assert used - everything == set(), "the operator makes requests the chart does not allow"
    granted = {t for t in everything if t[1] not in KOPF_CLUSTER_SCOPE}
    unused = granted - used - REQUIRED_NOT_CALLED - RARELY_CALLED
    assert unused == set(), "the chart grants verbs the operator never uses"
    # What the old chart granted and the operator does not need stays out.
    for needless in [
        ("", "pods", "patch"),
        ("", "services", "delete"),
        ("", "configmaps", "delete"),
        ("rbac.authorization.k8s.io", "roles", "list"),
        ("kubepeft.dev", "peftjobs/status", "get"),
    ]:
        assert needless not in granted, needless
