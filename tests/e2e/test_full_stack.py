"""Full stack, end to end: PeftJob -> kopf operator -> worker pods run as real `kubepeft train`
processes -> real SeaweedFS -> status. The CI-run equivalent of the kind e2e.

Runs are shared between assertions (module-scoped fixtures); each run is one job:

* ``reference`` -- 1 node; the operator is restarted while it trains (no duplicate pods);
  also the uninterrupted baseline for the resume test and the subject of the peer checks;
* ``two_nodes`` -- 2 nodes, one DDP group over gloo across two pods;
* ``killed`` -- the reference spec; the worker is SIGKILLed after its first checkpoint;
* ``faulty`` -- the trainer talks to S3 through a fault-injecting proxy;
* ``corrupt`` -- a dataset with a broken line.
"""

from __future__ import annotations

import json
import os
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


def _succeeded(cluster: E2ECluster, name: str, status: dict[str, Any]) -> None:
    assert status.get("phase") == "Succeeded", f"{name}: {status}\n{cluster.pod_logs(name)}"


def job_pods_started(cluster: E2ECluster, name: str) -> list[str]:
    return [pod for _, pod in cluster.kubelet.started_pods if pod.startswith(f"{name}-a")]


@pytest.fixture(scope="module")
def reference(e2e_cluster: E2ECluster) -> dict[str, Any]:
    """A 1-node job; the operator is restarted once its worker runs."""
    name = e2e_cluster.submit(tiny_job_manifest("reference", e2e_cluster.inputs, **RESUMABLE))
    e2e_cluster.wait(name, lambda s: s.get("phase") == "Running", 120, "Running")
    e2e_cluster.restart_operator()
    return e2e_cluster.wait_finished(name)


@pytest.fixture(scope="module")
def two_nodes(e2e_cluster: E2ECluster) -> dict[str, Any]:
    manifest = tiny_job_manifest("two-nodes", e2e_cluster.inputs, resources={"nodes": 2, "gpusPerNode": 0})
    return e2e_cluster.wait_finished(e2e_cluster.submit(manifest))


@pytest.fixture(scope="module")
def killed(e2e_cluster: E2ECluster) -> dict[str, Any]:
    """The reference spec; SIGKILL the worker's processes right after the first complete checkpoint."""
    name = e2e_cluster.submit(tiny_job_manifest("killed", e2e_cluster.inputs, **RESUMABLE))
    store, root = e2e_cluster.output_store(name)
    deadline = time.monotonic() + 180
    while (found := latest_checkpoint(store, f"{root}/checkpoints")) is None:
        assert time.monotonic() < deadline, f"no checkpoint appeared\n{e2e_cluster.pod_logs(name)}"
        assert e2e_cluster.status(name).get("phase") != "Succeeded", "finished before it could be killed"
        time.sleep(0.1)
    e2e_cluster.kubelet.kill(NAMESPACE, f"{name}-a0-0")
    status = e2e_cluster.wait_finished(name)
    status["killed_after_step"] = found[0]
    return status


@pytest.fixture(scope="module")
def faulty(e2e_cluster: E2ECluster) -> tuple[dict[str, Any], FaultyProxy]:
    server = e2e_cluster.inputs.server
    assert server.port is not None
    with FaultyProxy(server.port, fault_rate=0.15, seed=7) as proxy:
        manifest = tiny_job_manifest("faulty", e2e_cluster.inputs, output={"endpoint": proxy.endpoint})
        status = e2e_cluster.wait_finished(e2e_cluster.submit(manifest))
    return status, proxy


@pytest.fixture(scope="module")
def corrupt(e2e_cluster: E2ECluster) -> dict[str, Any]:
    inputs = e2e_cluster.inputs
    manifest = tiny_job_manifest("corrupt", inputs, dataset={"uri": inputs.corrupt_dataset_uri})
    return e2e_cluster.wait_finished(e2e_cluster.submit(manifest), timeout=120)


# --- the 1-node run ----------------------------------------------------------------------------


def test_one_node_job_succeeds_with_artifacts_and_progress(e2e_cluster: E2ECluster, reference: dict[str, Any]) -> None:
    _succeeded(e2e_cluster, "reference", reference)
    store, root = e2e_cluster.output_store("reference")
    progress = reference["progress"]
    assert progress["step"] == STEPS and progress["totalSteps"] == STEPS
    assert progress.get("display") == f"{STEPS}/{STEPS}"
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
    assert job_pods_started(e2e_cluster, "reference") == ["reference-a0-0"]
    assert reference["attempts"] == 1
    assert [p["metadata"]["name"] for p in e2e_cluster.pods("reference")] in ([], ["reference-a0-0"])


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
    assert sorted(job_pods_started(e2e_cluster, "two-nodes")) == ["two-nodes-a0-0", "two-nodes-a0-1"]
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
    assert killed["attempts"] == 2, killed
    assert job_pods_started(e2e_cluster, "killed") == ["killed-a0-0", "killed-a1-0"]
    assert e2e_cluster.kubelet.exits[(NAMESPACE, "killed-a0-0")] == 137
    progress_map = e2e_cluster.api.get("configmaps", NAMESPACE, "killed-progress")
    assert progress_map is not None
    report = json.loads(progress_map["data"]["report.json"])
    assert report["attempt"] == 1
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
    text = json.dumps(corrupt)
    assert "corrupt.jsonl" in text and f"line {e2e_cluster.inputs.corrupt_line}" in text, text
    assert job_pods_started(e2e_cluster, "corrupt") == ["corrupt-a0-0"]
