"""The process-backed kubelet: volumes, environment, cluster DNS, exit codes, termination
messages and deletion, proven with small scripted containers (no training, fast)."""

from __future__ import annotations

import base64
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubepeft_testing.apiserver import ApiServer
from kubepeft_testing.process_kubelet import ProcessKubelet, field_ref, rewrite_json_paths, rewrite_path

from tests.fixtures.kube import wait_for

pytestmark = pytest.mark.timeout(60)
NS = "default"

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    config = json.load(open(os.environ["KUBEPEFT_CONFIG"]))
    creds = config["credentials_dirs"]["output"]
    out = {
        "namespace": os.environ["KUBEPEFT_NAMESPACE"],
        "pod": os.environ["POD_NAME"],
        "label": os.environ["RANK_LABEL"],
        "master": os.environ["KUBEPEFT_MASTER_ADDR"] + ":" + os.environ["KUBEPEFT_MASTER_PORT"],
        "key": open(os.path.join(creds, "AWS_ACCESS_KEY_ID")).read(),
        "token_dir_exists": os.path.isdir(os.environ["OPTIONAL_DIR"]),
        "home": os.environ["HOME"],
        "kubeconfig": bool(os.environ.get("KUBECONFIG")),
        "inherited": "SECRET_OF_THE_TEST" in os.environ,
    }
    print(json.dumps(out), flush=True)
    mode = sys.argv[1]
    if mode == "report":
        with open(os.environ["KUBEPEFT_PROGRESS_FILE"], "a") as f:
            f.write(json.dumps({"state": "Failed", "failure_class": "permanent",
                                "message": "data.jsonl line 3: not JSON"}) + "\\n")
        sys.exit(3)
    if mode == "crash":
        print("Traceback: boom", flush=True)
        sys.exit(1)
    time.sleep(120)
    """
)


def worker_pod(name: str, mode: str, rank: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubepeft.dev/rank": str(rank)}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "trainer",
                    "image": "trainer",
                    "command": ["python", "-c", SCRIPT],
                    "args": [mode],
                    "env": [
                        {"name": "KUBEPEFT_CONFIG", "value": "/etc/kubepeft/config.json"},
                        {"name": "KUBEPEFT_MASTER_ADDR", "value": "job-0.job.default.svc"},
                        {"name": "KUBEPEFT_MASTER_PORT", "value": "29500"},
                        {"name": "KUBEPEFT_ATTEMPT", "value": "0"},
                        {"name": "HOME", "value": "/tmp"},
                        {"name": "OPTIONAL_DIR", "value": "/var/run/secrets/kubepeft/model"},
                        {"name": "KUBEPEFT_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {
                            "name": "RANK_LABEL",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['kubepeft.dev/rank']"}},
                        },
                    ],
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/kubepeft", "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "credentials-output", "mountPath": "/var/run/secrets/kubepeft/output"},
                        {"name": "credentials-model", "mountPath": "/var/run/secrets/kubepeft/model"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "config",
                    "configMap": {"name": "job-config", "items": [{"key": "config.json", "path": "config.json"}]},
                },
                {"name": "tmp", "emptyDir": {}},
                {
                    "name": "credentials-output",
                    "projected": {
                        "sources": [
                            {
                                "secret": {
                                    "name": "s3",
                                    "items": [{"key": "AWS_ACCESS_KEY_ID", "path": "AWS_ACCESS_KEY_ID"}],
                                }
                            }
                        ]
                    },
                },
                {
                    "name": "credentials-model",
                    "projected": {"sources": [{"secret": {"name": "absent", "optional": True}}]},
                },
            ],
        },
    }


@pytest.fixture
def kubelet(apiserver: ApiServer, kubeconfig: Path, tmp_path: Path) -> Iterator[ProcessKubelet]:
    config = {"credentials_dirs": {"output": "/var/run/secrets/kubepeft/output"}}
    apiserver.create(
        "configmaps", NS, {"metadata": {"name": "job-config"}, "data": {"config.json": json.dumps(config)}}
    )
    apiserver.create(
        "secrets", NS, {"metadata": {"name": "s3"}, "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"AKID").decode()}}
    )
    with ProcessKubelet(apiserver.url, root=tmp_path / "pods", kubeconfig=kubeconfig) as running:
        yield running


def terminated(apiserver: ApiServer, name: str) -> dict[str, Any]:
    pod = apiserver.get("pods", NS, name)
    statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
    return dict(statuses[0]["state"].get("terminated") or {}) if statuses else {}


def first_line(kubelet: ProcessKubelet, name: str) -> dict[str, Any]:
    wait_for(lambda: (NS, name) in kubelet.processes, timeout=20, what=f"{name} started")
    log = kubelet.processes[(NS, name)].log_path
    wait_for(lambda: log.read_text().strip(), timeout=20, what=f"{name} output")
    return dict(json.loads(log.read_text().splitlines()[0]))


def test_pod_runs_with_volumes_env_and_report_message(
    apiserver: ApiServer, kubelet: ProcessKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_OF_THE_TEST", "1")
    apiserver.create("pods", NS, worker_pod("job-a0-0", "report", rank=0))
    apiserver.create("pods", NS, worker_pod("job-a0-1", "crash", rank=1))
    state = wait_for(lambda: terminated(apiserver, "job-a0-0"), timeout=30, what="pod 0 terminated")
    seen = first_line(kubelet, "job-a0-0")
    assert seen["namespace"] == NS and seen["pod"] == "job-a0-0" and seen["label"] == "0"
    assert seen["key"] == "AKID"  # the projected Secret, found through the rewritten config path
    assert seen["token_dir_exists"]  # a missing optional Secret is an empty folder
    assert seen["home"].startswith(str(kubelet.root)) and seen["kubeconfig"]
    assert not seen["inherited"]  # a pod does not inherit the test's environment
    host, port = seen["master"].split(":")
    assert host == "127.0.0.1" and port != "29500"
    assert state["exitCode"] == 3 and state["reason"] == "Error"
    assert json.loads(state["message"])["message"] == "data.jsonl line 3: not JSON"
    assert apiserver.get("pods", NS, "job-a0-0")["status"]["phase"] == "Failed"  # type: ignore[index]
    # Same job and attempt: the same local rendezvous port. Without a report: the log tail.
    crash = wait_for(lambda: terminated(apiserver, "job-a0-1"), timeout=30, what="pod 1 terminated")
    assert first_line(kubelet, "job-a0-1")["master"] == seen["master"]
    assert crash["exitCode"] == 1 and "Traceback: boom" in crash["message"]


def test_deleting_a_pod_stops_its_process(apiserver: ApiServer, kubelet: ProcessKubelet) -> None:
    apiserver.create("pods", NS, worker_pod("job-a1-0", "sleep"))
    first_line(kubelet, "job-a1-0")
    process = kubelet.processes[(NS, "job-a1-0")].process
    assert apiserver.get("pods", NS, "job-a1-0")["status"]["phase"] == "Running"  # type: ignore[index]
    apiserver.delete("pods", NS, "job-a1-0")
    wait_for(lambda: process.poll() is not None, timeout=20, what="process stopped")
    assert process.returncode == -15  # SIGTERM within the grace period
    assert kubelet.started_pods == [(NS, "job-a1-0")]


def test_kill_reports_137(apiserver: ApiServer, kubelet: ProcessKubelet) -> None:
    apiserver.create("pods", NS, worker_pod("job-a2-0", "sleep"))
    first_line(kubelet, "job-a2-0")
    kubelet.kill(NS, "job-a2-0")
    state = wait_for(lambda: terminated(apiserver, "job-a2-0"), timeout=20, what="killed pod terminated")
    assert state["exitCode"] == 137


def test_pure_helpers(tmp_path: Path) -> None:
    mounts = {"/etc/kubepeft": tmp_path / "cfg", "/tmp": tmp_path / "tmp", "/tmp/deep": tmp_path / "deep"}
    assert rewrite_path("/etc/kubepeft/config.json", mounts) == str(tmp_path / "cfg" / "config.json")
    assert rewrite_path("/tmp/deep/x", mounts) == str(tmp_path / "deep" / "x")  # longest mount wins
    assert rewrite_path("/tmpfoo", mounts) == "/tmpfoo"
    assert rewrite_json_paths({"a": ["/tmp"], "n": 1}, mounts) == {"a": [str(tmp_path / "tmp")], "n": 1}
    pod = {"metadata": {"name": "p", "namespace": "ns", "annotations": {"a/b": "c"}}}
    assert field_ref(pod, "metadata.annotations['a/b']") == "c"
    with pytest.raises(ValueError):
        field_ref(pod, "spec.bogus")
    assert sys.executable  # the pods run this interpreter's bin folder first on PATH
