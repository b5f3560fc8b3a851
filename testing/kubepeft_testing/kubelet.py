"""A fake kubelet: it watches pods through the API and drives their phases like a node would.

Pending -> Running -> Succeeded/Failed, with ``containerStatuses`` (``terminated.exitCode`` and
``message``: the termination message). Pods with ``schedulingGates`` stay Pending until the
gates are removed (that is what Kueue does to a queued gang).

Extending it: pass ``behavior`` (pod -> :class:`PodScript` or ``None`` to leave the pod alone
and drive it by hand with :meth:`FakeKubelet.run` / :meth:`FakeKubelet.terminate`), or subclass
and override :meth:`FakeKubelet.start_pod` and :meth:`FakeKubelet.stop_pod` (e.g. to start a real
process per pod and report its exit code).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import aiohttp

Pod = dict[str, Any]


@dataclass(frozen=True)
class PodScript:
    """What a pod does: start after ``start_after`` s, then exit with ``exit_code`` after ``run_for`` s."""

    exit_code: int | None = 0
    """``None``: keep running until terminated by hand."""
    message: str = ""
    start_after: float = 0.0
    run_for: float = 0.0


Behavior = Callable[[Pod], PodScript | None]


def succeed(pod: Pod) -> PodScript:
    return PodScript(exit_code=0)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(pod: Pod) -> tuple[str, str]:
    return pod["metadata"]["namespace"], pod["metadata"]["name"]


class FakeKubelet:
    def __init__(
        self,
        server_url: str,
        behavior: Behavior = succeed,
        label_selector: str = "",
        container_name: str | None = None,
    ) -> None:
        self.url = server_url.rstrip("/")
        self.behavior = behavior
        self.label_selector = label_selector
        self.container_name = container_name
        self.seen: dict[tuple[str, str], Pod] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-kubelet", daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._watcher: concurrent.futures.Future[None] | None = None
        self._started = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        self._watcher = asyncio.run_coroutine_threadsafe(self._watch_forever(), self._loop)
        if not self._started.wait(10):
            raise RuntimeError("the fake kubelet could not list pods")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            for task in list(self._tasks.values()):
                task.cancel()
            if self._session is not None:
                await self._session.close()

        if self._watcher is not None:
            self._watcher.cancel()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- thread-safe manual control ----------------------------------------------------------

    def run(self, namespace: str, name: str) -> None:
        """Mark a pod Running (from any thread)."""
        asyncio.run_coroutine_threadsafe(self.set_running(namespace, name), self._loop).result(10)

    def terminate(self, namespace: str, name: str, exit_code: int, message: str = "") -> None:
        """Terminate a pod's container with ``exit_code`` (from any thread)."""
        asyncio.run_coroutine_threadsafe(self.set_terminated(namespace, name, exit_code, message), self._loop).result(
            10
        )

    # --- status writes (what a kubelet reports) ----------------------------------------------

    def _container(self, pod: Pod) -> str:
        return self.container_name or pod["spec"]["containers"][0]["name"]

    async def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        assert self._session is not None
        url = f"{self.url}/api/v1/namespaces/{namespace}/pods/{name}/status"
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self._session.patch(url, data=json.dumps({"status": status}), headers=headers) as response:
            if response.status not in (200, 404):
                raise RuntimeError(f"status patch of {namespace}/{name}: {response.status} {await response.text()}")

    async def api_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A merge patch through the API (e.g. a fake trainer's progress report)."""
        assert self._session is not None
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self._session.patch(f"{self.url}{path}", data=json.dumps(body), headers=headers) as response:
            answer: dict[str, Any] = await response.json()
            if response.status != 200:
                raise RuntimeError(f"PATCH {path}: {response.status} {answer}")
            return answer

    async def set_running(self, namespace: str, name: str) -> None:
        pod = self.seen.get((namespace, name)) or {"spec": {"containers": [{"name": "main"}]}}
        started = _now()
        await self._patch_status(
            namespace,
            name,
            {
                "phase": "Running",
                "startTime": started,
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                "containerStatuses": [
                    {
                        "name": self._container(pod),
                        "ready": True,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )

    async def set_terminated(self, namespace: str, name: str, exit_code: int, message: str = "") -> None:
        pod = self.seen.get((namespace, name)) or {"spec": {"containers": [{"name": "main"}]}}
        finished = _now()
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": finished,
            "finishedAt": finished,
        }
        if message:
            terminated["message"] = message
        await self._patch_status(
            namespace,
            name,
            {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": finished}],
                "containerStatuses": [
                    {
                        "name": self._container(pod),
                        "ready": False,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )

    # --- extension points --------------------------------------------------------------------

    async def start_pod(self, pod: Pod) -> None:
        """A new, schedulable pod: run its script (override to run something real)."""
        script = self.behavior(pod)
        if script is None:
            return
        namespace, name = _key(pod)
        await asyncio.sleep(script.start_after)
        await self.set_running(namespace, name)
        if script.exit_code is None:
            return
        await asyncio.sleep(script.run_for)
        await self.set_terminated(namespace, name, script.exit_code, script.message)

    async def stop_pod(self, pod: Pod) -> None:
        """The pod was deleted: stop whatever runs it (the default script task is cancelled)."""

    # --- the watch ---------------------------------------------------------------------------

    def _schedulable(self, pod: Pod) -> bool:
        return not pod["spec"].get("schedulingGates") and (pod.get("status") or {}).get("phase", "Pending") == "Pending"

    def _on_event(self, type_: str, pod: Pod) -> None:
        key = _key(pod)
        if type_ == "DELETED":
            self.seen.pop(key, None)
            if (task := self._tasks.pop(key, None)) is not None:
                task.cancel()
            asyncio.get_running_loop().create_task(self.stop_pod(pod))
            return
        self.seen[key] = pod
        if key not in self._tasks and self._schedulable(pod):
            self._tasks[key] = asyncio.get_running_loop().create_task(self._guarded_start(pod))

    async def _guarded_start(self, pod: Pod) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.start_pod(pod)

    async def _watch_forever(self) -> None:
        self._session = aiohttp.ClientSession()
        params = {"labelSelector": self.label_selector} if self.label_selector else {}
        async with self._session.get(f"{self.url}/api/v1/pods", params=params) as response:
            listing = await response.json()
        for pod in listing["items"]:
            self._on_event("ADDED", pod)
        version = listing["metadata"]["resourceVersion"]
        self._started.set()
        while True:
            query = {**params, "watch": "true", "resourceVersion": version, "timeoutSeconds": "60"}
            try:
                async with self._session.get(f"{self.url}/api/v1/pods", params=query, timeout=None) as response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            version = event["object"]["metadata"]["resourceVersion"]
                            self._on_event(event["type"], event["object"])
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.1)
