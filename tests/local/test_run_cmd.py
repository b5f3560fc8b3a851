"""`kubepeft run` and `kubepeft demo --prepare-only` for real: the trainer, the embedded S3 server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.cli import main
from kubepeft.storage import latest_checkpoint, open_store
from kubepeft.storage.seaweed import EmbeddedS3

STEPS = 48


def write_job(path: Path, model: Path, dataset: Path, output: str, **training: Any) -> Path:
    job = {
        "apiVersion": "kubepeft.dev/v1alpha1",
        "kind": "PeftJob",
        "metadata": {"name": "local-tiny"},
        "spec": {
            "method": "lora",
            "model": {"uri": str(model), "dtype": "float32"},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"]},
            "dataset": {"uri": str(dataset), "template": "promptResponse", "validationSplit": 0.1},
            "training": {
                "maxSteps": 12,
                "learningRate": 3.0e-3,
                "perDeviceBatchSize": 8,
                "maxSeqLength": 64,
                "precision": "fp32",
                "logEverySteps": 4,
                "evalEverySteps": 12,
                **training,
            },
            "resources": {"nodes": 1, "gpusPerNode": 0},
            "output": {"uri": output, "merge": True, "mergedDtype": "float32"},
            "checkpointing": {"everySteps": 12, "keep": 2},
        },
    }
    path.write_text(yaml.safe_dump(job))
    return path


def kubepeft(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kubepeft", *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def test_invalid_job_file_exits_2_with_file_field_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_job(tmp_path / "bad.yaml", tmp_path / "m", tmp_path / "d.jsonl", "/out", maxSteps=0)
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: spec.training.maxSteps: must be >= 1, got 0" in err
    assert not (tmp_path / "wd").exists()  # nothing started


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_to_a_local_path(tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_model_dir, tiny_dataset, str(output))
    code, out = finish(kubepeft("run", str(job), "--workdir", str(tmp_path / "wd"), cwd=tmp_path))
    assert code == 0, out
    root = output / "default" / "local-tiny"
    assert re.search(rf"manifest\s+{re.escape(str(root / 'manifest.json'))}", out), out
    assert re.search(r"final loss\s+\d+\.\d{4}", out), out
    assert re.search(r"eval loss\s+\d+\.\d{4} before -> \d+\.\d{4} after", out), out
    manifest = open_store(str(root)).verify(str(root))
    assert any(entry.path.startswith("adapter/") for entry in manifest.files)
    assert not (tmp_path / "wd" / "s3").exists()  # a local output needs no server


def _node_processes(marker: str) -> list[int]:
    """PIDs whose command line mentions ``marker`` (the run's config path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_embedded_s3_ctrl_c_then_rerun_resumes(tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    job = write_job(tmp_path / "job.yaml", tiny_model_dir, tiny_dataset, "s3://local-runs/jobs", maxSteps=STEPS)
    args = ("run", str(job), "--workdir", str(workdir))
    first = kubepeft(*args, cwd=tmp_path)
    # The run starts the embedded server with its data under the workdir: follow its checkpoints there.
    creds = workdir / "s3" / "credentials"
    config_path = workdir / "runs" / "default" / "local-tiny" / "config.json"
    deadline = time.monotonic() + 180
    while not config_path.exists():
        assert first.poll() is None and time.monotonic() < deadline, finish(first)[1]
        time.sleep(0.2)
    endpoint = yaml.safe_load(config_path.read_text())["output"]["endpoint"]
    root = "s3://local-runs/jobs/default/local-tiny"
    store = open_store(root, endpoint=endpoint, credentials_dir=creds)
    while latest_checkpoint(store, f"{root}/checkpoints") is None:
        assert first.poll() is None and time.monotonic() < deadline, finish(first)[1]
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    code, out = finish(first, timeout=60)
    assert code == 130, out
    assert "Interrupted" in out and f"kubepeft run {job}" in out, out
    assert _node_processes(str(config_path)) == []  # the nodes were stopped, none left behind

    code, out = finish(kubepeft(*args, cwd=tmp_path))
    assert code == 0, out
    assert re.search(r"resumed\s+from the checkpoint at step \d+", out), out
    assert f"manifest      {root}/manifest.json" in out or f"{root}/manifest.json" in out, out
    # The data outlives the server: a new server on the same folder still has the verified result.
    with EmbeddedS3(workdir / "s3") as server:
        again = open_store(root, endpoint=server.endpoint, credentials_dir=server.credentials_dir)
        manifest = again.verify(root)
    assert manifest.metadata  # what produced it
    assert (workdir / "runs" / "default" / "local-tiny" / "attempts").read_text().strip() == "2"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_prepare_only_uploads_the_example_inputs(tiny_model_dir: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    shutil.copytree(tiny_model_dir, workdir / "demo" / "model")  # reuse the session's build
    repo = Path(__file__).resolve().parents[2]
    example = yaml.safe_load((repo / "examples" / "tiny-lora.yaml").read_text())["spec"]
    code, out = finish(kubepeft("demo", "--prepare-only", "--workdir", str(workdir), cwd=repo), timeout=200)
    assert code == 0, out
    assert "credentials dir: " + str(workdir / "s3" / "credentials") in out, out
    assert "AWS_SECRET_ACCESS_KEY" not in out and (workdir / "s3" / "credentials").is_dir()
    secret = (workdir / "s3" / "credentials" / "AWS_SECRET_ACCESS_KEY").read_text().strip()
    assert secret not in out
    with EmbeddedS3(workdir / "s3") as server:
        store = open_store(example["model"]["uri"], endpoint=server.endpoint, credentials_dir=server.credentials_dir)
        assert store.verify(example["model"]["uri"]).files  # the model is a manifest'ed prefix
        assert store.exists(example["dataset"]["uri"])
    # Idempotent: a second prepare uploads nothing new.
    code, out = finish(kubepeft("demo", "--prepare-only", "--workdir", str(workdir), cwd=repo), timeout=200)
    assert code == 0 and "0 uploaded" in out, out
