"""The sweep controller against the test API server and a fake kubelet: whole sweeps of PeftJobs."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.kubelet import PodScript

from tests.fixtures.kube import wait_for
from tests.operator.scenario_support import peftsweep
from tests.operator.support import NS

pytestmark = pytest.mark.timeout(90)


def sweep_status(server: ApiServer, name: str = "ranks") -> dict[str, Any]:
    return (server.get("peftsweeps", NS, name) or {}).get("status") or {}


def trials(server: ApiServer) -> list[dict[str, Any]]:
    return [j for j in server.list("peftjobs", NS) if "kubepeft.dev/sweep" in (j["metadata"].get("labels") or {})]


class ParallelWatch:
    """Samples the trial PeftJobs in the background and records the most unfinished at once."""

    def __init__(self, server: ApiServer) -> None:
        self.server, self.most, self._stop = server, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            unfinished = [
                j for j in trials(self.server) if (j.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
            self.most = max(self.most, len(unfinished))
            self._stop.wait(0.02)

    def __enter__(self) -> ParallelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def wait_sweep(server: ApiServer, phase: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: sweep_status(server) if sweep_status(server).get("phase") == phase else None,
        timeout,
        what=f"sweep phase {phase} (last: {sweep_status(server)})",
    )


def test_four_trials_two_at_a_time_end_succeeded_with_the_best(
    cluster: ApiServer, start_operator: Any, start_trials: Any
) -> None:
    start_operator()
    kubelet = start_trials(lambda p: PodScript(exit_code=0, run_for=0.6))
    with ParallelWatch(cluster) as watch:
        cluster.create("peftsweeps", NS, peftsweep())
        wait_sweep(cluster, "Succeeded")
    done = wait_for(lambda: sweep_status(cluster) if sweep_status(cluster).get("report") else None, what="report")
    assert watch.most == 2  # two ran together, never more
    uid = cluster.get("peftsweeps", NS, "ranks")["metadata"]["uid"]  # type: ignore[index]
    jobs = trials(cluster)
    assert sorted(j["metadata"]["name"] for j in jobs) == ["ranks-t0", "ranks-t1", "ranks-t2", "ranks-t3"]
    for job in jobs:
        (ref,) = job["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] and ref["kind"] == "PeftSweep"
    assert sorted(j["spec"]["lora"]["r"] for j in jobs) == [2, 4, 8, 16]
    assert (done["trialCount"], done["succeeded"], done["failed"], done["running"]) == (4, 4, 0, 0)
    assert done["bestTrial"]["name"] == "ranks-t3" and done["bestTrial"]["parameters"] == {"lora.r": "16"}
    assert done["bestTrial"]["objective"] == pytest.approx(0.7)
    rows = {t["name"]: t for t in done["trials"]}
    assert rows["ranks-t2"]["trainableParameters"] == 4000 and rows["ranks-t2"]["evalLossBefore"] == 2.5
    assert rows["ranks-t0"]["adapter"] == f"s3://runs/out/{NS}/ranks-t0/adapter"
    assert next(c for c in done["conditions"] if c["type"] == "Succeeded")["status"] == "True"
    root = f"s3://runs/out/{NS}/ranks"
    assert done["report"] == {
        "results": f"{root}/results.json",
        "table": f"{root}/results.md",
        "tradeoff": f"{root}/tradeoff.png",
        "manifest": f"{root}/manifest.json",
    }
    # One report pod, with the output's credentials and the final status as its input.
    (pod,) = kubelet.report_pods
    assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["kubepeft", "sweep-report"] and "--credentials-dir" in command
    assert not pod["spec"]["automountServiceAccountToken"]
    report_input = json.loads(cluster.get("configmaps", NS, "ranks-report")["data"]["input.json"])  # type: ignore[index]
    assert report_input["status"]["bestTrial"]["name"] == "ranks-t3" and report_input["status"]["phase"] == "Succeeded"
    reasons = [e.get("reason") for e in cluster.list("events", NS)]
    wait_for(lambda: reasons.count("TrialCreated") == 4 or None, what="events")
    assert "SweepSucceeded" in [e.get("reason") for e in cluster.list("events", NS)]


def test_operator_restart_mid_sweep_creates_no_duplicate_trials(
    cluster: ApiServer, start_operator: Any, start_trials: Any
) -> None:
    first = start_operator()
    start_trials(lambda p: PodScript(exit_code=0, run_for=1.5))
    cluster.create("peftsweeps", NS, peftsweep())
    wait_for(lambda: len(trials(cluster)) == 2 or None, what="two trials")
    first.stop()
    with ParallelWatch(cluster) as watch:
        start_operator()
        done = wait_sweep(cluster, "Succeeded")
    assert watch.most <= 2
    names = sorted(j["metadata"]["name"] for j in trials(cluster))
    assert names == ["ranks-t0", "ranks-t1", "ranks-t2", "ranks-t3"]
    assert done["trialCount"] == 4 and [t["index"] for t in done["trials"]] == [0, 1, 2, 3]


def test_failed_trials_beyond_the_limit_fail_the_sweep(
    cluster: ApiServer, start_operator: Any, start_trials: Any
) -> None:
    start_operator()
    start_trials(lambda p: PodScript(exit_code=3, message="bad data", run_for=0.2))
    cluster.create("peftsweeps", NS, peftsweep(maxFailedTrials=1))
    done = wait_sweep(cluster, "Failed")
    assert done["failed"] >= 2 and "maxFailedTrials" in done["message"]


def test_suspend_propagates_to_trials_and_deleting_the_sweep_deletes_them(
    cluster: ApiServer, start_operator: Any, start_trials: Any
) -> None:
    start_operator()
    start_trials(lambda p: PodScript(exit_code=None))  # run until stopped
    cluster.create("peftsweeps", NS, peftsweep())
    wait_for(lambda: len(trials(cluster)) == 2 or None, what="two trials")
    cluster.call(
        cluster.store.patch,
        cluster.rtype("peftsweeps"),
        NS,
        "ranks",
        {"spec": {"suspend": True}},
        "application/merge-patch+json",
        None,
    )
    wait_for(
        lambda: all(j["spec"].get("runPolicy", {}).get("suspend") for j in trials(cluster)) or None,
        what="trials suspended",
    )
    wait_sweep(cluster, "Suspended")
    assert len(trials(cluster)) == 2  # nothing new while suspended
    cluster.delete("peftsweeps", NS, "ranks")
    wait_for(lambda: not trials(cluster) or None, what="trials garbage-collected")
