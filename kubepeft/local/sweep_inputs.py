"""Inputs of the sweep examples on the embedded S3 server, built on first use (like ``kubepeft demo``).

The examples name ``s3://kubepeft-demo/...``: the demo's tiny model and its fine-tuning task,
and for the prompt bank three tiny tasks of the model's letter-counting language under
``data/tasks/`` (``down``: count down, ``up``: count up, ``skip``: count down by two; see
:mod:`kubepeft.tiny_task`). The model is built by ``kubepeft tiny-model`` in a child process
(:mod:`kubepeft.local.demo_inputs`). Only missing objects on the embedded server are built and
uploaded; any other storage is the user's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from kubepeft.api.sweep_models import PeftSweepSpec
from kubepeft.local.demo_inputs import DEMO_RECORDS, DemoPaths, ensure_model
from kubepeft.local.storage_defaults import ResolvedStorage, bucket_of
from kubepeft.storage import open_store
from kubepeft.tiny_task import TASKS, task_records, tiny_training_records, write_dataset

DEMO_BUCKET = "kubepeft-demo"


def dataset_uris(spec: PeftSweepSpec) -> list[str]:
    uris = [spec.template.dataset.uri] if spec.template.dataset else []
    for parameter in spec.parameters:
        if parameter.path == "dataset.uri":
            uris += [str(v) for v in parameter.values or []]
    return list(dict.fromkeys(uris))


def _records_for(uri: str) -> list[dict[str, Any]]:
    name = uri.rsplit("/", 1)[-1].split(".", 1)[0]
    return task_records(name, DEMO_RECORDS) if name in TASKS else tiny_training_records(DEMO_RECORDS)


def ensure_demo_inputs(spec: PeftSweepSpec, storage: ResolvedStorage, workdir: Path, console: Console) -> None:
    """Build and upload the demo model and datasets the sweep names, if they are missing."""
    if not storage.embedded:
        return
    store = open_store(f"s3://{DEMO_BUCKET}", endpoint=storage.endpoint, credentials_dir=storage.credentials_dir)
    model_uri = spec.template.model.uri
    if bucket_of(model_uri) == DEMO_BUCKET and store.read_manifest(model_uri) is None:
        model_dir = ensure_model(DemoPaths(workdir / "demo"), console)
        store.upload_dir(model_dir, model_uri, metadata={"kind": "model", "source": "kubepeft demo tiny model"})
        console.print(f"model: uploaded the tiny demo model to {model_uri}", highlight=False)
    for uri in dataset_uris(spec):
        if bucket_of(uri) != DEMO_BUCKET or store.exists(uri):
            continue
        local = workdir / "demo" / "data" / uri.split(f"{DEMO_BUCKET}/", 1)[1]
        write_dataset(local, _records_for(uri), "jsonl")
        store.upload_file(local, uri)
        console.print(f"dataset: uploaded {uri}", highlight=False)


__all__ = ["dataset_uris", "ensure_demo_inputs"]
