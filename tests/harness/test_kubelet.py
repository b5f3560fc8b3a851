"""The fake kubelet drives pods through the API like a node: phases, exit codes, gates, deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.kubelet import FakeKubelet, PodScript

from tests.fixtures.kube import wait_for

pytestmark = pytest.mark.timeout(30)
NS = "default"


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "trainer", "image": "x"}], **spec}}


def phase(apiserver: ApiServer, name: str) -> str | None:
    found = apiserver.get("pods", NS, name)
    return found["status"].get("phase") if found else None


def test_scripted_pods_run_and_exit(apiserver: ApiServer, start_kubelet: Callable[..., FakeKubelet]) -> None:
    scripts = {"ok": PodScript(exit_code=0, run_for=0.2), "bad": PodScript(exit_code=3, message="data.jsonl:7: bad")}
    start_kubelet(lambda p: scripts[p["metadata"]["name"]])
    apiserver.create("pods", NS, pod("ok"))
    wait_for(lambda: phase(apiserver, "ok") == "Running", what="ok running")
    apiserver.create("pods", NS, pod("bad"))
    wait_for(lambda: phase(apiserver, "ok") == "Succeeded", what="ok succeeded")
    wait_for(lambda: phase(apiserver, "bad") == "Failed", what="bad failed")
    bad = apiserver.get("pods", NS, "bad")
    assert bad is not None
    terminated = bad["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3 and terminated["message"] == "data.jsonl:7: bad"
    assert bad["status"]["containerStatuses"][0]["name"] == "trainer"


def test_manual_control_and_scheduling_gates(apiserver: ApiServer, start_kubelet: Callable[..., FakeKubelet]) -> None:
    started: list[str] = []

    def record(p: dict[str, Any]) -> None:
        started.append(p["metadata"]["name"])

    kubelet = start_kubelet(record)  # behaviour None: pods wait for manual control
    apiserver.create("pods", NS, pod("gated", schedulingGates=[{"name": "kueue.x-k8s.io/admission"}]))
    apiserver.create("pods", NS, pod("free"))
    wait_for(lambda: started == ["free"], what="the ungated pod to start")
    kubelet.run(NS, "free")
    assert phase(apiserver, "free") == "Running"
    kubelet.terminate(NS, "free", 137, "OOMKilled")
    assert phase(apiserver, "free") == "Failed"
    assert phase(apiserver, "gated") == "Pending" and "gated" not in started
    patch = {"spec": {"schedulingGates": None}}
    apiserver.call(
        apiserver.store.patch, apiserver.rtype("pods"), NS, "gated", patch, "application/merge-patch+json", None
    )
    wait_for(lambda: "gated" in started, what="the pod to start once ungated")


def test_deleted_pods_stop(apiserver: ApiServer, start_kubelet: Callable[..., FakeKubelet]) -> None:
    kubelet = start_kubelet(lambda p: PodScript(exit_code=0, start_after=0.0, run_for=30))
    apiserver.create("pods", NS, pod("long"))
    wait_for(lambda: phase(apiserver, "long") == "Running", what="running")
    apiserver.delete("pods", NS, "long")
    wait_for(lambda: ("default", "long") not in kubelet.seen, what="the kubelet to forget the pod")
    assert not kubelet._tasks
