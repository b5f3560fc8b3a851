"""Inputs of the sweep examples on the embedded S3 server, built on first use (like ``kubepeft demo``).

The examples name ``s3://kubepeft-demo/...``: the demo's tiny model and its fine-tuning task,
and for the prompt bank three tiny tasks of the model's letter-counting language under
``data/tasks/`` (``down``: count down, ``up``: count up, ``skip``: count down by two). Only
missing objects on the embedded server are built and uploaded; any other storage is the user's.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rich.console import Console

from kubepeft.api.sweep_models import PeftSweepSpec
from kubepeft.local.storage_defaults import ResolvedStorage, bucket_of
from kubepeft.storage import open_store

DEMO_BUCKET = "kubepeft-demo"
DEMO_RECORDS = 512
TASKS = ("down", "up", "skip")


def task_records(task: str, n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt/response records of one tiny task (``"f ="`` -> the task's continuation)."""
    from kubepeft_trainer.tiny_model import LETTERS, count

    rng = random.Random(f"tiny-task-{task}-{seed}")
    records = []
    for _ in range(n):
        if task == "up":
            start = rng.choice(LETTERS[:-1])
            response = count(start, "up")
        else:
            start = rng.choice(LETTERS[2:] if task == "skip" else LETTERS[1:])
            response = count(start, "down")
            if task == "skip":
                response = "".join(" " + c for c in response.split()[1::2])
        records.append({"prompt": f"{start} =", "response": response})
    return records


def dataset_uris(spec: PeftSweepSpec) -> list[str]:
    uris = [spec.template.dataset.uri] if spec.template.dataset else []
    for parameter in spec.parameters:
        if parameter.path == "dataset.uri":
            uris += [str(v) for v in parameter.values or []]
    return list(dict.fromkeys(uris))


def _records_for(uri: str) -> list[dict[str, Any]]:
    from kubepeft_trainer.tiny_model import tiny_training_records

    name = uri.rsplit("/", 1)[-1].split(".", 1)[0]
    return task_records(name, DEMO_RECORDS) if name in TASKS else tiny_training_records(DEMO_RECORDS)


def ensure_demo_inputs(spec: PeftSweepSpec, storage: ResolvedStorage, workdir: Path, console: Console) -> None:
    """Build and upload the demo model and datasets the sweep names, if they are missing."""
    if not storage.embedded:
        return
    store = open_store(f"s3://{DEMO_BUCKET}", endpoint=storage.endpoint, credentials_dir=storage.credentials_dir)
    model_uri = spec.template.model.uri
    if bucket_of(model_uri) == DEMO_BUCKET and store.read_manifest(model_uri) is None:
        from kubepeft.local.demo_cmd import DemoPaths, ensure_model

        model_dir = ensure_model(DemoPaths(workdir / "demo"), console)
        store.upload_dir(model_dir, model_uri, metadata={"kind": "model", "source": "kubepeft demo tiny model"})
        console.print(f"model: uploaded the tiny demo model to {model_uri}", highlight=False)
    for uri in dataset_uris(spec):
        if bucket_of(uri) != DEMO_BUCKET or store.exists(uri):
            continue
        from kubepeft_trainer.tiny_model import write_dataset

        local = workdir / "demo" / "data" / uri.split(f"{DEMO_BUCKET}/", 1)[1]
        write_dataset(local, _records_for(uri), "jsonl")
        store.upload_file(local, uri)
        console.print(f"dataset: uploaded {uri}", highlight=False)


__all__ = ["TASKS", "dataset_uris", "ensure_demo_inputs", "task_records"]
