"""Full stack, end to end: PeftJob -> kopf operator -> worker pods run as real `kubepeft train`
processes -> real SeaweedFS -> status. The CI-run equivalent of the kind e2e.

Runs are shared between assertions (module-scoped fixtures) and run in two waves of
concurrent jobs (a single tiny job leaves one of the two cores mostly idle):

* first wave: ``reference`` -- 1 node; the operator is restarted while it trains (no duplicate
  pods); also the uninterrupted baseline for the resume test and the subject of the peer checks;
  ``killed`` -- the reference spec, its worker SIGKILLed after its first checkpoint;
  ``corrupt`` -- a dataset with a broken line;
* second wave: ``two_nodes`` -- 2 nodes, one DDP group over gloo across two pods; ``faulty`` --
  the trainer talks to S3 through a fault-injecting proxy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from kubepeft.storage import Manifest, latest_checkpoint, sha256_file
from tests.fixtures.e2e import NAMESPACE, E2ECluster, E2EInputs, tiny_job_manifest
from tests.storage.faulty_proxy import FaultyProxy

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(420)]

STEPS = 48
RESUMABLE = {
    "training": {"maxSteps": STEPS, "logEverySteps": 4, "evalEverySteps": 24},
    "checkpointing": {"everySteps": 12, "keep": 2},
}
AWS = str(Path(sys.executable).parent / "aws")
FAULT_RATE = 0.05


def _succeeded(cluster: E2ECluster, name: str, status: dict[str, Any]) -> None:
    assert status.get("phase") == "Succeeded", f"{name}: {status}\n{cluster.pod_logs(name)}"


def job_pods_started(cluster: E2ECluster, name: str) -> list[str]:
    return [pod for _, pod in cluster.kubelet.started_pods if pod.startswith(f"{name}-a")]


def _running_pod(cluster: E2ECluster, name: str, rank: int = 0) -> str | None:
    pods = [pod for (_, pod) in cluster.kubelet.processes if pod.startswith(f"{name}-a") and pod.endswith(f"-{rank}")]
    return sorted(pods)[-1] if pods else None


@pytest.fixture(scope="module")
def first_wave(e2e_cluster: E2ECluster) -> dict[str, dict[str, Any]]:
    """Three jobs at once (a 2-core machine trains two while a third waits on I/O):

    * ``reference`` -- 1 node; the operator is restarted while its worker trains;
    * ``killed`` -- the same spec; its worker's processes are SIGKILLed right after the first
      complete checkpoint;
    * ``corrupt`` -- a dataset with a broken line.
    """
    cluster, inputs = e2e_cluster, e2e_cluster.inputs
    cluster.submit(tiny_job_manifest("reference", inputs, **RESUMABLE))
    cluster.submit(tiny_job_manifest("killed", inputs, **RESUMABLE))
    cluster.submit(tiny_job_manifest("corrupt", inputs, dataset={"uri": inputs.corrupt_dataset_uri}))
    store, root = cluster.output_store("killed")
    killed_after: int | None = None
    restarted = False
    deadline = time.monotonic() + 240
    while killed_after is None or not restarted:
        assert time.monotonic() < deadline, f"stuck: killed={killed_after} restarted={restarted}"
        if killed_after is None and (found := latest_checkpoint(store, f"{root}/checkpoints")) is not None:
            pod = _running_pod(cluster, "killed")
            assert pod is not None and cluster.status("killed").get("phase") == "Running", "finished too early"
            cluster.kubelet.kill(NAMESPACE, pod)
            killed_after = found[0]
        if not restarted and cluster.status("reference").get("phase") == "Running":
            assert _running_pod(cluster, "reference") is not None
            cluster.restart_operator()
            restarted = True
        time.sleep(0.1)
    statuses = {name: cluster.wait_finished(name) for name in ("reference", "killed", "corrupt")}
    statuses["killed"]["killed_after_step"] = killed_after
    return statuses


@pytest.fixture(scope="module")
def second_wave(e2e_cluster: E2ECluster) -> dict[str, Any]:
    """Two at once: a 2-node job, and a job whose S3 traffic goes through a fault-injecting proxy."""
    cluster, inputs = e2e_cluster, e2e_cluster.inputs
    assert inputs.server.port is not None
    with FaultyProxy(inputs.server.port, fault_rate=FAULT_RATE, seed=7) as proxy:
        cluster.submit(tiny_job_manifest("two-nodes", inputs, resources={"nodes": 2, "gpusPerNode": 0}))
        cluster.submit(tiny_job_manifest("faulty", inputs, output={"endpoint": proxy.endpoint}))
        statuses: dict[str, Any] = {name: cluster.wait_finished(name) for name in ("two-nodes", "faulty")}
    statuses["proxy"] = proxy
    return statuses


@pytest.fixture(scope="module")
def reference(first_wave: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return first_wave["reference"]


@pytest.fixture(scope="module")
def killed(first_wave: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return first_wave["killed"]


@pytest.fixture(scope="module")
def corrupt(first_wave: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return first_wave["corrupt"]


@pytest.fixture(scope="module")
def two_nodes(second_wave: dict[str, Any]) -> dict[str, Any]:
    return dict(second_wave["two-nodes"])


@pytest.fixture(scope="module")
def faulty(second_wave: dict[str, Any]) -> tuple[dict[str, Any], FaultyProxy]:
    return second_wave["faulty"], second_wave["proxy"]


# --- the 1-node run ----------------------------------------------------------------------------


def test_one_node_job_succeeds_with_artifacts_and_progress(e2e_cluster: E2ECluster, reference: dict[str, Any]) -> None:
    _succeeded(e2e_cluster, "reference", reference)
    store, root = e2e_cluster.output_store("reference")
    progress = reference["progress"]
    assert progress["step"] == STEPS and progress["totalSteps"] == STEPS
    assert progress.get("display") == f"{STEPS}/{STEPS}"
    assert isinstance(progress.get("loss"), float) and 0.0 < progress["loss"] < 20.0  # the final report carries it
    assert isinstance(progress.get("evalLoss"), float)
    artifacts = reference["artifacts"]
    assert artifacts["manifest"] == f"{root}/manifest.json"
    assert artifacts["adapter"] == f"{root}/adapter" and artifacts["merged"] == f"{root}/merged"
    assert reference.get("evalLossBefore") is not None
    manifest = store.verify(root)  # every file re-hashed from the stored bytes
    paths = {entry.path for entry in manifest.files}
    assert "adapter/adapter_model.safetensors" in paths and "adapter/adapter_config.json" in paths
    assert any(p.startswith("merged/") and p.endswith(".safetensors") for p in paths)


def test_operator_restart_mid_job_makes_no_duplicates(e2e_cluster: E2ECluster, reference: dict[str, Any]) -> None:
    _succeeded(e2e_cluster, "reference", reference)
    assert e2e_cluster.operator_starts >= 2  # restarted while the worker ran
    assert job_pods_started(e2e_cluster, "reference") == ["reference-a1-0"]
    assert reference["attempts"] == 1
    assert [p["metadata"]["name"] for p in e2e_cluster.pods("reference")] in ([], ["reference-a1-0"])


def _aws_env(inputs: E2EInputs) -> dict[str, str]:
    creds = inputs.server.credentials_dir
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": (creds / "AWS_ACCESS_KEY_ID").read_text().strip(),
        "AWS_SECRET_ACCESS_KEY": (creds / "AWS_SECRET_ACCESS_KEY").read_text().strip(),
        "AWS_DEFAULT_REGION": inputs.server.region,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


def _aws(inputs: E2EInputs, *args: str) -> str:
    done = subprocess.run(
        [AWS, "--endpoint-url", inputs.server.endpoint, *args],
        env=_aws_env(inputs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"aws {args[:2]} failed: {done.stderr[-2000:]}"
    return done.stdout


PEER_LOAD = textwrap.dedent(
    """
    import json, sys, torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base_dir, adapter_dir, merged_dir = sys.argv[1:4]
    ids = torch.tensor([[5, 17, 33, 9, 41, 12, 7, 3]])
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        plain = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter_dir).eval()
        adapted = tuned(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()(ids).logits
    print(json.dumps({
        "merged_vs_adapter": (merged - adapted).abs().max().item(),
        "adapter_vs_base": (adapted - plain).abs().max().item(),
    }))
    """
)


def test_peer_clients_verify_and_load_the_artifacts(
    e2e_cluster: E2ECluster, reference: dict[str, Any], tmp_path: Path
) -> None:
    """awscli fetches the files (not our storage code); plain peft/transformers load them."""
    _succeeded(e2e_cluster, "reference", reference)
    inputs = e2e_cluster.inputs
    _, root = e2e_cluster.output_store("reference")
    key_prefix = root.removeprefix(f"s3://{inputs.bucket}/")
    listing = json.loads(_aws(inputs, "s3api", "list-objects-v2", "--bucket", inputs.bucket, "--prefix", key_prefix))
    keys = {obj["Key"].removeprefix(key_prefix + "/") for obj in listing.get("Contents", [])}
    local = tmp_path / "job"
    _aws(inputs, "s3", "cp", "--recursive", "--only-show-errors", root, str(local))
    manifest = Manifest.from_json((local / "manifest.json").read_text())
    assert manifest.files
    for entry in manifest.files:
        assert entry.path in keys, f"{entry.path} listed in the manifest but not stored"
        path = local / entry.path
        assert path.stat().st_size == entry.size and sha256_file(path) == entry.sha256, entry.path
    base = tmp_path / "base"
    _aws(inputs, "s3", "cp", "--recursive", "--only-show-errors", inputs.model_uri, str(base))
    done = subprocess.run(
        [sys.executable, "-c", PEER_LOAD, str(base), str(local / "adapter"), str(local / "merged")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    diffs = json.loads(done.stdout.strip().splitlines()[-1])
    assert diffs["adapter_vs_base"] > 1e-3  # the adapter learned something
    assert diffs["merged_vs_adapter"] < 1e-4  # merged == base + adapter


# --- two nodes ----------------------------------------------------------------------------------


def test_two_node_job_succeeds(e2e_cluster: E2ECluster, two_nodes: dict[str, Any]) -> None:
    _succeeded(e2e_cluster, "two-nodes", two_nodes)
    assert sorted(job_pods_started(e2e_cluster, "two-nodes")) == ["two-nodes-a1-0", "two-nodes-a1-1"]
    assert two_nodes["attempts"] == 1
    store, root = e2e_cluster.output_store("two-nodes")
    store.verify(root)
    assert two_nodes["progress"]["step"] == 12


# --- a lost worker ------------------------------------------------------------------------------


def _adapter_tensors(cluster: E2ECluster, name: str, folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    store, root = cluster.output_store(name)
    store.download_dir(f"{root}/adapter", folder)
    return dict(load_file(str(folder / "adapter_model.safetensors")))


def test_killed_worker_resumes_and_matches_an_uninterrupted_run(
    e2e_cluster: E2ECluster, killed: dict[str, Any], reference: dict[str, Any], tmp_path: Path
) -> None:
    _succeeded(e2e_cluster, "killed", killed)
    assert killed["attempts"] == 2, f"{killed}\n{e2e_cluster.pod_logs('killed', 60)}"
    assert job_pods_started(e2e_cluster, "killed") == ["killed-a1-0", "killed-a2-0"]
    assert e2e_cluster.kubelet.exits[(NAMESPACE, "killed-a1-0")] == 137
    progress_map = e2e_cluster.api.get("configmaps", NAMESPACE, "killed-progress")
    assert progress_map is not None
    report = json.loads(progress_map["data"]["report.json"])
    assert report["attempt"] == 2
    assert report.get("resumed_from_step", 0) >= killed["killed_after_step"] > 0
    _succeeded(e2e_cluster, "reference", reference)
    resumed = _adapter_tensors(e2e_cluster, "killed", tmp_path / "killed")
    uninterrupted = _adapter_tensors(e2e_cluster, "reference", tmp_path / "reference")
    assert resumed.keys() == uninterrupted.keys() and resumed
    worst = max((resumed[k] - uninterrupted[k]).abs().max().item() for k in resumed)
    assert worst <= 1e-6, f"resumed adapter differs from the uninterrupted one by {worst}"


# --- storage faults -----------------------------------------------------------------------------


def test_storage_faults_never_leave_a_bad_manifest(
    e2e_cluster: E2ECluster, faulty: tuple[dict[str, Any], FaultyProxy]
) -> None:
    status, proxy = faulty
    assert proxy.counts.errors_500 + proxy.counts.resets > 0, "no fault was injected"
    store, root = e2e_cluster.output_store("faulty")  # straight to the server, not through the proxy
    if status.get("phase") == "Succeeded":
        store.verify(root)
    else:
        assert status.get("message"), status  # a clear reason
        if store.read_manifest(root) is not None:
            store.verify(root)  # a manifest, if any, must point at exactly the stored bytes


# --- bad input ----------------------------------------------------------------------------------


def test_corrupt_dataset_fails_once_with_file_and_line(e2e_cluster: E2ECluster, corrupt: dict[str, Any]) -> None:
    assert corrupt.get("phase") == "Failed", corrupt
    assert corrupt["attempts"] == 1  # permanent: no retry
    line = e2e_cluster.inputs.corrupt_line
    assert re.search(rf"corrupt\.jsonl(:| line ){line}\b", corrupt.get("message", "")), corrupt
    failed = next(c for c in corrupt["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "PermanentFailure"
    assert job_pods_started(e2e_cluster, "corrupt") == ["corrupt-a1-0"]
