"""The watch cache: newest resourceVersion wins, deletions leave tombstones, pods are indexed by job."""

from __future__ import annotations

from typing import Any

from kubepeft_operator.cache import WatchCache, controller_uid, slim_pod

from tests.operator.support import NS, UID


def pod(name: str, rv: int, job: str = "tune", phase: str = "Running", uid: str = UID) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": str(rv),
            "labels": {"kubepeft.dev/job-name": job},
            "ownerReferences": [
                {"apiVersion": "kubepeft.dev/v1alpha1", "kind": "PeftJob", "name": job, "uid": uid, "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "trainer", "image": "x" * 1000}]},
        "status": {"phase": phase},
    }


def job(rv: int, phase: str = "Created") -> dict[str, Any]:
    return {"metadata": {"name": "tune", "namespace": NS, "resourceVersion": str(rv)}, "status": {"phase": phase}}


def test_an_older_answer_never_replaces_a_newer_event() -> None:
    cache = WatchCache()
    cache.observe_job("MODIFIED", job(5, "Running"))
    cache.observe_job("MODIFIED", job(4, "Created"))  # our write's answer, processed late
    assert cache.job(NS, "tune")["status"]["phase"] == "Running"  # type: ignore[index]
    cache.observe_job("MODIFIED", job(6, "Succeeded"))
    assert cache.job(NS, "tune")["status"]["phase"] == "Succeeded"  # type: ignore[index]


def test_a_deleted_object_is_not_resurrected_by_a_late_answer() -> None:
    cache = WatchCache()
    cache.observe_pod("ADDED", pod("tune-a1-0", 7))
    cache.observe_pod("DELETED", pod("tune-a1-0", 9))
    cache.observe_pod("ADDED", pod("tune-a1-0", 7))  # the create's answer arrives after the deletion
    assert cache.pod(NS, "tune-a1-0") is None and cache.pods_of(NS, "tune") == []
    cache.observe_pod("ADDED", pod("tune-a1-0", 12))  # created again, later: a new object
    assert [p["metadata"]["name"] for p in cache.pods_of(NS, "tune")] == ["tune-a1-0"]


def test_pods_are_indexed_by_their_controlling_job_and_kept_slim() -> None:
    cache = WatchCache()
    cache.observe_pod("ADDED", pod("tune-a1-1", 3))
    cache.observe_pod("ADDED", pod("tune-a1-0", 2))
    cache.observe_pod("ADDED", pod("other-a1-0", 4, job="other"))
    pods = cache.pods_of(NS, "tune")
    assert [p["metadata"]["name"] for p in pods] == ["tune-a1-0", "tune-a1-1"]
    assert "containers" not in pods[0]["spec"] and controller_uid(pods[0]) == UID
    assert slim_pod(pod("x", 1))["status"]["phase"] == "Running"


def test_a_pod_asked_to_go_is_terminating_until_the_watch_says_it_is_gone() -> None:
    cache = WatchCache()
    cache.observe_pod("ADDED", pod("tune-a1-0", 2))
    cache.mark_terminating(NS, "tune-a1-0", "2026-01-01T00:00:00Z")
    assert cache.pod(NS, "tune-a1-0")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    cache.observe_pod("DELETED", pod("tune-a1-0", 3))
    assert cache.pods_of(NS, "tune") == []
