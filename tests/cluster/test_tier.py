"""The tier's own parts on the real server: the fake kubelet's pod lifecycle (validated by the
server), graceful deletion, the real garbage collector and namespace controller, and the real
operator process under the chart's RBAC."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubepeft_testing.control_plane import ControlPlane

from kubepeft.api import models
from tests.cluster.identities import Identity
from tests.cluster.kubelet import FakeKubelet, pod_path
from tests.cluster.operator_process import OperatorProcess
from tests.cluster.rest import Kube, KubeError
from tests.cluster.support import wait_for
from tests.fixtures.api import REPO_ROOT

pytestmark = pytest.mark.cluster

JOBS = f"/apis/{models.GROUP}/{models.VERSION}"


def restricted_pod(name: str, grace: int = 30) -> dict[str, Any]:
    """A pod the Pod Security ``restricted`` profile admits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "probe"}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def test_pod_security_restricted_is_enforced(admin: Kube, namespace: str) -> None:
    pod = restricted_pod("escalating")
    pod["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": True}
    with pytest.raises(KubeError) as refused:
        admin.create(pod, namespace)
    assert refused.value.status == 403 and "restricted" in refused.value.message


def test_the_fake_kubelet_runs_and_finishes_pods_the_server_validates(
    admin: Kube, namespace: str, kubelet: FakeKubelet
) -> None:
    admin.create(restricted_pod("worker"), namespace)
    path = pod_path(namespace, "worker")
    bound = wait_for(lambda: admin.get(path) if admin.get(path)["spec"].get("nodeName") else None, what="bound")
    assert bound["spec"]["nodeName"] == kubelet.node_name
    running = kubelet.run(bound)
    assert running["status"]["phase"] == "Running"
    failed = kubelet.finish(running, exit_code=3, message="bad config: spec.lora.r")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert failed["status"]["phase"] == "Failed"
    assert (terminated["exitCode"], terminated["message"]) == (3, "bad config: spec.lora.r")
    with pytest.raises(KubeError) as refused:  # the server validates status: no way back from a terminal phase
        kubelet.run(failed)
    assert refused.value.status == 422
    assert not kubelet.errors


def test_the_fake_kubelet_drives_many_pods_at_once(admin: Kube, namespace: str, kubelet: FakeKubelet) -> None:
    for name in ("rank-0", "rank-1"):
        admin.create(restricted_pod(name), namespace)
    wait_for(lambda: all(p["spec"].get("nodeName") for p in kubelet.pods(selector="app=probe")), what="both bound")
    assert len(kubelet.run_bound(selector="app=probe")) == 2
    assert kubelet.run_bound(selector="app=probe") == []  # already running
    finished = kubelet.finish_running(0, selector="app=probe")
    assert sorted(p["status"]["phase"] for p in finished) == ["Succeeded", "Succeeded"]


def test_bound_pods_are_deleted_gracefully_until_the_kubelet_finishes(admin: Kube, namespace: str) -> None:
    fake = FakeKubelet(admin, namespace=namespace)
    fake.register_node()
    admin.create(restricted_pod("graceful", grace=60), namespace)
    path = pod_path(namespace, "graceful")
    fake.bind_pending()
    fake.run(admin.get(path))
    admin.delete(path)
    dying = admin.get(path)  # still there: the server waits for the kubelet
    assert dying["metadata"]["deletionTimestamp"] and dying["metadata"]["deletionGracePeriodSeconds"] == 60
    assert fake.finish_deletions() == 1
    assert not admin.exists(path)


def test_the_garbage_collector_and_namespace_controller_run(
    control_plane: ControlPlane, admin: Kube, peftjob_crd: Any
) -> None:
    if not control_plane.is_running("kube-controller-manager"):
        pytest.skip("no kube-controller-manager in KUBEBUILDER_ASSETS")
    ns = "gc-probe"
    admin.ensure_namespace(ns)
    doc = yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    job = admin.request("POST", f"{JOBS}/namespaces/{ns}/{models.PLURAL}", doc)
    owner = {"apiVersion": models.API_VERSION, "kind": models.KIND, "name": "tiny-lora", "uid": job["metadata"]["uid"]}
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [owner]}}
    admin.create(child, ns)
    admin.delete(f"{JOBS}/namespaces/{ns}/{models.PLURAL}/tiny-lora")
    wait_for(lambda: not admin.exists(f"/api/v1/namespaces/{ns}/configmaps/child"), 60, what="child collected")
    admin.delete(f"/api/v1/namespaces/{ns}")
    wait_for(lambda: not admin.exists(f"/api/v1/namespaces/{ns}"), 60, what="namespace gone")


def children_of(admin: Kube, namespace: str, uid: str) -> list[dict[str, Any]]:
    found = []
    for path in (f"/api/v1/namespaces/{namespace}/configmaps", f"/api/v1/namespaces/{namespace}/serviceaccounts"):
        for obj in admin.items(path):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref["uid"] == uid and ref.get("controller") for ref in refs):
                found.append(obj)
    return found


@pytest.mark.slow
def test_the_operator_process_works_under_the_chart_rbac_and_survives_sigkill(
    admin: Kube, namespace: str, kubelet: FakeKubelet, operator_process: OperatorProcess, operator_identity: Identity
) -> None:
    operator_process.start()
    doc = yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    job = admin.request("POST", f"{JOBS}/namespaces/{namespace}/{models.PLURAL}", doc)
    uid = job["metadata"]["uid"]
    wait_for(lambda: len(children_of(admin, namespace, uid)) >= 3, 60, what="children with controller references")
    path = f"{JOBS}/namespaces/{namespace}/{models.PLURAL}/tiny-lora"
    wait_for(lambda: (admin.get(path).get("status") or {}).get("phase"), 60, what="a phase in status")
    operator_process.kill()
    before = sorted(obj["metadata"]["name"] for obj in children_of(admin, namespace, uid))
    operator_process.start()
    after = sorted(obj["metadata"]["name"] for obj in children_of(admin, namespace, uid))
    assert after == before  # nothing duplicated or lost across the SIGKILL
    assert "system:anonymous" not in operator_process.log_tail(100_000)
