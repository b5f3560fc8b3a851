"""Inputs from anywhere, for real: `kubepeft run` reads the model from a folder standing for a
PersistentVolumeClaim and the dataset from a second S3 server with its own keys, and writes the
output to a third place (the suite's S3 server, with the run's default keys)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubepeft.storage import open_store, read_credentials_dir
from kubepeft.storage.seaweed import EmbeddedS3


def job_document(data_endpoint: str, output: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubepeft.dev/v1alpha1",
        "kind": "PeftJob",
        "metadata": {"name": "from-anywhere"},
        "spec": {
            "method": "lora",
            "model": {"uri": "pvc://models/tiny", "dtype": "float32"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"]},
            "dataset": {
                "uri": "s3://datasets/train/data.jsonl",
                "endpoint": data_endpoint,
                "template": "promptResponse",
                "validationSplit": 0.1,
            },
            "training": {"maxSteps": 4, "perDeviceBatchSize": 8, "maxSeqLength": 64, "precision": "fp32"},
            "resources": {"nodes": 1, "gpusPerNode": 0},
            "volumes": [{"claimName": "models"}],
            "output": {"uri": output},
            "checkpointing": {"everySteps": 4, "keep": 1},
        },
    }


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_model_from_a_volume_dataset_from_a_second_s3_endpoint(
    tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path, s3_server: EmbeddedS3, s3_bucket: str
) -> None:
    volume = tmp_path / "volume-models"
    shutil.copytree(tiny_model_dir, volume / "tiny")
    with EmbeddedS3(tmp_path / "data-s3") as data_server:
        # Its own keys: the output's could not read the dataset.
        data_keys = read_credentials_dir(data_server.credentials_dir)
        assert data_keys.access_key_id != read_credentials_dir(s3_server.credentials_dir).access_key_id
        data_server.create_bucket("datasets")
        data_store = open_store(
            "s3://datasets", endpoint=data_server.endpoint, credentials_dir=data_server.credentials_dir
        )
        data_store.upload_file(tiny_dataset, "s3://datasets/train/data.jsonl")
        output = f"s3://{s3_bucket}/runs"
        job = tmp_path / "job.yaml"
        job.write_text(yaml.safe_dump(job_document(data_server.endpoint, output)))
        command = [
            *("run", str(job), "--workdir", str(tmp_path / "wd")),
            *("--endpoint", s3_server.endpoint, "--credentials-dir", str(s3_server.credentials_dir)),
            *("--volume", f"models={volume}", "--credentials", f"dataset={data_server.credentials_dir}"),
        ]
        done = subprocess.run(
            [sys.executable, "-m", "kubepeft", *command],
            cwd=tmp_path,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=400,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    config = json.loads((tmp_path / "wd" / "runs" / "default" / "from-anywhere" / "config.json").read_text())
    assert config["credentials_dirs"] == {
        "dataset": str(data_server.credentials_dir),
        "output": str(s3_server.credentials_dir),
    }
    assert config["volume_dirs"] == {"models": str(volume)}
    root = f"{output}/default/from-anywhere"
    store = open_store(root, endpoint=s3_server.endpoint, credentials_dir=s3_server.credentials_dir)
    manifest = store.verify(root)
    assert any(entry.path.startswith("adapter/") for entry in manifest.files)
    adapter_config = json.loads(store.get_bytes(f"{root}/adapter/adapter_config.json"))
    assert adapter_config["base_model_name_or_path"] == "pvc://models/tiny"  # the job's model, not a node path
    assert not (tmp_path / "wd" / "s3").exists()  # every source had its endpoint: no embedded server
