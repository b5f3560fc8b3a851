"""The operator's read model: what the watch streams said, plus our own writes (an informer cache).

Reconciles read jobs, their pods and their progress ConfigMaps from here, never from the API
server: a reconcile costs no GET, and so does the periodic resync.

Two rules keep it from going stale in a way that matters:

- At start-up one LIST of pods and ConfigMaps fills it before kopf starts its watches, so no
  reconcile ever sees a job without its pods; kopf's event handlers keep it current.
- The reconciler writes through what the API server answers to its own writes (a status patch,
  a created pod), so a reconcile that runs before the watch delivers that write still sees it.
  A body replaces another only when its resourceVersion is newer, and a deleted object leaves a
  tombstone for a while, so a late answer never resurrects it.

Pods are kept slim (the fields :class:`~kubepeft_operator.lifecycle.PodView` reads): a cluster
with thousands of worker pods must not cost the operator their whole specs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from kubepeft.api.models import GROUP, KIND

Key = tuple[str, str]
Body = dict[str, Any]
TOMBSTONE_SECONDS = 300.0


def resource_version(body: Body) -> int | None:
    """The resourceVersion as a number (etcd revisions are), or ``None`` where it is not one."""
    value = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def controller_job(body: Body) -> str | None:
    """The name of the PeftJob that controls this object, from its ownerReferences."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(f"{GROUP}/") and ref.get("controller"):
            return str(ref.get("name"))
    return None


def controller_uid(body: Body) -> str | None:
    """The uid of the object's controller, whatever its kind."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def slim_pod(body: Body) -> Body:
    """The parts of a pod the lifecycle decision reads."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    containers = [{"name": c.get("name"), "state": c.get("state") or {}} for c in status.get("containerStatuses") or []]
    return {
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "labels", "ownerReferences", "deletionTimestamp", "resourceVersion")
            if key in meta
        },
        "spec": {"schedulingGates": spec["schedulingGates"]} if spec.get("schedulingGates") else {},
        "status": {
            "phase": status.get("phase"),
            "reason": status.get("reason"),
            "message": status.get("message"),
            "containerStatuses": containers,
        },
    }


def slim_config_map(body: Body) -> Body:
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion")
            if key in meta
        },
        "data": dict(body.get("data") or {}),
    }


class _Store:
    """Objects of one kind by (namespace, name), newest resourceVersion wins, with tombstones."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.objects: dict[Key, Body] = {}
        self._tombstones: dict[Key, tuple[int | None, float]] = {}
        self._clock = clock

    def put(self, key: Key, body: Body) -> bool:
        """Store ``body`` unless what is stored (or was deleted) is newer. ``True`` if stored."""
        new = resource_version(body)
        if (tomb := self._tombstones.get(key)) is not None:
            deleted_at, _when = tomb
            if new is None or deleted_at is None or new <= deleted_at:
                return False
            del self._tombstones[key]  # a newer object of the same name: created again
        old = self.objects.get(key)
        if old is not None:
            previous = resource_version(old)
            if new is not None and previous is not None and new < previous:
                return False
        self.objects[key] = body
        return True

    def remove(self, key: Key, body: Body | None = None) -> Body | None:
        now = self._clock()
        self._tombstones[key] = (resource_version(body) if body else None, now)
        if len(self._tombstones) > 1024:
            self._tombstones = {k: v for k, v in self._tombstones.items() if now - v[1] < TOMBSTONE_SECONDS}
        return self.objects.pop(key, None)


class WatchCache:
    """PeftJobs, their worker pods and their ConfigMaps, as last seen or written."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._jobs = _Store(clock)
        self._pods = _Store(clock)
        self._config_maps = _Store(clock)
        self._pods_by_job: dict[Key, set[str]] = {}
        self._terminating_namespaces: set[str] = set()

    # --- feeding (watch events and our own writes) --------------------------------------------

    def observe_job(self, event_type: str | None, body: Body) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self._jobs.remove(key, body)
        else:
            self._jobs.put(key, body)

    def observe_pod(self, event_type: str | None, body: Body) -> None:
        key = _key(body)
        job = controller_job(body)
        if event_type == "DELETED":
            self._pods.remove(key, body)
            if job is not None:
                self._pods_by_job.get((key[0], job), set()).discard(key[1])
            return
        if self._pods.put(key, slim_pod(body)) and job is not None:
            self._pods_by_job.setdefault((key[0], job), set()).add(key[1])

    def observe_config_map(self, event_type: str | None, body: Body) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self._config_maps.remove(key, body)
        else:
            self._config_maps.put(key, slim_config_map(body))

    def observe_namespace(self, event_type: str | None, body: Body) -> None:
        """Namespaces being deleted: nothing can be created in them any more."""
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        phase = (body.get("status") or {}).get("phase")
        if event_type != "DELETED" and (meta.get("deletionTimestamp") or phase == "Terminating"):
            self._terminating_namespaces.add(name)
        else:
            self._terminating_namespaces.discard(name)

    def namespace_terminating(self, namespace: str) -> bool:
        return namespace in self._terminating_namespaces

    def mark_terminating(self, namespace: str, name: str, when: str) -> None:
        """A pod we asked to delete: terminating until the watch says it is gone."""
        pod = self._pods.objects.get((namespace, name))
        if pod is not None and not pod["metadata"].get("deletionTimestamp"):
            pod["metadata"]["deletionTimestamp"] = when

    # --- reading -----------------------------------------------------------------------------

    def job(self, namespace: str, name: str) -> Body | None:
        return self._jobs.objects.get((namespace, name))

    def job_keys(self) -> Iterable[Key]:
        return list(self._jobs.objects)

    def pods_of(self, namespace: str, job: str) -> list[Body]:
        names = sorted(self._pods_by_job.get((namespace, job), ()))
        return [pod for name in names if (pod := self._pods.objects.get((namespace, name))) is not None]

    def pod(self, namespace: str, name: str) -> Body | None:
        return self._pods.objects.get((namespace, name))

    def config_map(self, namespace: str, name: str) -> Body | None:
        return self._config_maps.objects.get((namespace, name))

    def sizes(self) -> dict[str, int]:
        return {
            "jobs": len(self._jobs.objects),
            "pods": len(self._pods.objects),
            "configmaps": len(self._config_maps.objects),
        }


def _key(body: Body) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
