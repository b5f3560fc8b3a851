"""The tier's kubelet stand-in: a fake Ready Node, pod binding, pod status, graceful deletions.

There is no kubelet or scheduler in the tier. The tests drive pods through their lifecycle the
way a kubelet would, through the real API (so the server validates every status update):

- ``bind`` -> ``pods/binding`` to the fake node (what the scheduler does);
- ``run`` -> status Running with a running containerStatus per container;
- ``finish`` -> Succeeded (exit 0) or Failed with a terminated state, exit code and message;
- ``finish_deletions`` -> a pod with ``deletionTimestamp`` is deleted with gracePeriodSeconds=0,
  which is what the kubelet does once the containers have stopped;
- ``run_bound`` / ``finish_running`` -> the same for every matching pod at once.

``start()`` runs bind + finish_deletions in a small background loop; the tests decide when pods
run and how they exit.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from tests.cluster.rest import Kube, KubeError

NODE_NAME = "kubepeft-fake-node"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


class FakeKubelet:
    def __init__(self, kube: Kube, node_name: str = NODE_NAME, namespace: str | None = None) -> None:
        self.kube, self.node_name, self.namespace = kube, node_name, namespace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ip = 10
        self.errors: list[str] = []

    # --- the node -------------------------------------------------------------------------

    def register_node(self) -> dict[str, Any]:
        """Create the Node (if absent) and report it Ready with some capacity."""
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": {"fake": "true"}}}
        try:
            self.kube.create(node)
        except KubeError as error:
            if error.status != 409:
                raise
        capacity = {"cpu": "64", "memory": "256Gi", "pods": "500", "nvidia.com/gpu": "8"}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "fake kubelet",
                    "lastHeartbeatTime": now(),
                    "lastTransitionTime": now(),
                }
            ],
        }
        return dict(self.kube.patch(f"/api/v1/nodes/{self.node_name}/status", {"status": status}))

    # --- one pod --------------------------------------------------------------------------

    def bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        self.kube.request("POST", pod_path(meta["namespace"], meta["name"]) + "/binding", binding)

    def _pod_ip(self) -> str:
        self._ip += 1
        return f"10.244.{self._ip // 250}.{self._ip % 250 + 2}"

    def run(self, pod: dict[str, Any]) -> dict[str, Any]:
        """Status Running: every container started and ready."""
        started = now()
        ip = self._pod_ip()
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
            for c in pod["spec"]["containers"]
        ]
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": started},
                {"type": "Ready", "status": "True", "lastTransitionTime": started},
            ],
            "containerStatuses": containers,
        }
        return self._patch_status(pod, status)

    def finish(self, pod: dict[str, Any], exit_code: int = 0, message: str | None = None) -> dict[str, Any]:
        """Every container terminated with ``exit_code``: phase Succeeded (0) or Failed."""
        finished = now()
        started = (pod.get("status") or {}).get("startTime") or finished
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": started,
            "finishedAt": finished,
        }
        if message:
            terminated["message"] = message
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
            for c in pod["spec"]["containers"]
        ]
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "startTime": started,
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished},
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": "PodCompleted",
                    "lastTransitionTime": finished,
                },
            ],
            "containerStatuses": containers,
        }
        return self._patch_status(pod, status)

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = pod["metadata"]
        return dict(self.kube.patch(pod_path(meta["namespace"], meta["name"]) + "/status", {"status": status}))

    # --- many pods ------------------------------------------------------------------------

    def pods(self, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        ns = namespace or self.namespace
        path = f"/api/v1/namespaces/{ns}/pods" if ns else "/api/v1/pods"
        return self.kube.items(path, **({"labelSelector": selector} if selector else {}))

    def run_bound(self, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        """Report Running for every bound, Pending, undeleted pod (matching ``selector``)."""
        started = []
        for pod in self.pods(namespace, selector):
            pending = (pod.get("status") or {}).get("phase", "Pending") == "Pending"
            if pod["spec"].get("nodeName") and pending and not pod["metadata"].get("deletionTimestamp"):
                started.append(self.run(pod))
        return started

    def finish_running(
        self, exit_code: int = 0, message: str | None = None, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Terminate every Running pod (matching ``selector``) with ``exit_code``."""
        return [
            self.finish(pod, exit_code, message)
            for pod in self.pods(namespace, selector)
            if (pod.get("status") or {}).get("phase") == "Running"
        ]

    def bind_pending(self, namespace: str | None = None) -> int:
        """Bind every unbound, undeleted pod (the scheduler's job). Returns how many."""
        bound = 0
        for pod in self.pods(namespace):
            if not pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp"):
                self._tolerant(self.bind, pod)
                bound += 1
        return bound

    def finish_deletions(self, namespace: str | None = None) -> int:
        """Delete for good every pod the server is deleting gracefully. Returns how many."""
        done = 0
        for pod in self.pods(namespace):
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                self._tolerant(
                    self.kube.request,
                    "DELETE",
                    pod_path(meta["namespace"], meta["name"]),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
                )
                done += 1
        return done

    def _tolerant(self, call: Any, *args: Any) -> None:
        """A pod that changed or vanished meanwhile is not an error (the next pass sees it)."""
        try:
            call(*args)
        except KubeError as error:
            if error.status not in (404, 409):
                raise

    # --- background loop ------------------------------------------------------------------

    def start(self, interval: float = 0.2, finish_deletions: bool = True) -> FakeKubelet:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.bind_pending()
                    if finish_deletions:
                        self.finish_deletions()
                except Exception as error:  # keep going; the tests read self.errors
                    self.errors.append(repr(error))

        self._thread = threading.Thread(target=loop, name="fake-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
