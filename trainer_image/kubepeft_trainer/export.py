"""The export pipeline, run by the node-0 launcher after the ranks have exited.

Order (each set gets its own manifest when its files are stored; the job manifest goes LAST):

1. ``<root>/adapter/``  -- the adapter the ranks saved (PEFT layout, loads with
   ``PeftModel.from_pretrained``) plus the tokenizer; its config and model card name the job's
   model, not the node's download folder, in canonical bytes (``adapter_metadata``);
2. ``<root>/merged/``   -- LoRA/QLoRA with ``output.merge``: base + adapter merged in a separate,
   NON-distributed step (never merge a ZeRO-3-partitioned model: it saves empty tensors),
   sharded safetensors in ``output.mergedDtype`` plus the tokenizer;
3. ``<root>/report/``   -- ``metrics.json`` (eval loss and perplexity before/after, train loss,
   steps, tokens) and ``loss_curve.png``;
4. ``<root>/manifest.json`` -- every file of 1-3 with its sha256, relative to the job root.

Re-running after a crash skips what is stored: ``upload_dir`` skips files already present with
the same sha256, and a merged set whose manifest exists is not merged again.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft.contract import TrainerConfig
from kubepeft.storage import FileEntry, Manifest, Store, write_manifest
from kubepeft_trainer.rank_files import ADAPTER_DIR, TrainingResult

log = logging.getLogger(__name__)

REPORT_DIR = "report"
METRICS_FILE = "metrics.json"
LOSS_CURVE_FILE = "loss_curve.png"


def _perplexity(loss: float | None) -> float | None:
    return None if loss is None else math.exp(min(loss, 50.0))


def build_metrics(result: TrainingResult) -> dict[str, Any]:
    """Pure: ``metrics.json`` from the ranks' ``training_result.json``."""
    losses = result.loss_history
    tail = [loss for _, loss in losses[-10:]]
    return {
        "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
        "perplexity_before": _perplexity(result.eval_loss_before),
        "perplexity_after": _perplexity(result.eval_loss_after),
        "train_loss_first": losses[0][1] if losses else None,
        "train_loss_last10_mean": sum(tail) / len(tail) if tail else None,
        "steps": result.final_step,
        "epochs": result.epoch,
        "tokens_seen": result.tokens_seen,
        "world_size": result.world_size,
        "resumed_from_step": result.resumed_from_step,
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
        "peak_memory_bytes": result.peak_memory_bytes,
    }


def exports_merged(spec: PeftJobSpec) -> bool:
    """Whether a training job's export includes ``merged/``: asked for (``output.merge``) and
    possible for the method (the methods registry's ``supports_merge``)."""
    from kubepeft_trainer.methods import get_method

    return spec.output.merge and get_method(spec).supports_merge


def job_metadata(config: TrainerConfig, kind: str) -> dict[str, Any]:
    spec = config.spec
    return {
        "kind": kind,
        "job": f"{config.job.namespace}/{config.job.name}",
        "uid": config.job.uid,
        "method": spec.method,
        "base_model": spec.model.uri,
    }


def export_report(store: Store, config: TrainerConfig, local: Path, result: TrainingResult) -> Manifest:
    from kubepeft_trainer.loss_curve import plot_loss_curve

    local.mkdir(parents=True, exist_ok=True)
    (local / METRICS_FILE).write_text(json.dumps(build_metrics(result), indent=2) + "\n", encoding="utf-8")
    plot_loss_curve(
        local / LOSS_CURVE_FILE,
        list(result.loss_history),
        list(result.eval_history),
        title=f"{config.job.name}: {config.spec.method}",
    )
    return store.upload_dir(local, config.output.child(REPORT_DIR), metadata=job_metadata(config, "report"))


def export_merged(store: Store, config: TrainerConfig, base_dir: Path, adapter_dir: Path, local: Path) -> Manifest:
    """Merge (once: an existing merged manifest is reused) and upload ``<root>/merged/``."""
    existing = store.read_manifest(config.output.merged)
    if existing is not None:
        log.info("merged model already stored at %s; not merging again", config.output.merged)
        return existing
    from kubepeft_trainer.merge import MergeOptions, merge_adapter_into_base

    merge_adapter_into_base(base_dir, adapter_dir, local, MergeOptions.from_spec(config.spec))
    return store.upload_dir(local, config.output.merged, metadata=job_metadata(config, "merged"))


def write_job_manifest(store: Store, config: TrainerConfig, sets: dict[str, Manifest]) -> Manifest:
    """The job manifest (LAST): every file of every set, paths relative to the job root."""
    entries: list[FileEntry] = []
    for prefix, manifest in sets.items():
        entries.extend(manifest.prefixed(prefix))
    metadata = job_metadata(config, "job") | {"sets": sorted(sets)}
    return write_manifest(store, config.output.root, entries, metadata)


def export_adapter(store: Store, config: TrainerConfig, adapter_dir: Path) -> Manifest:
    """Make the adapter name the job's model (stable bytes), then upload ``<root>/adapter/``."""
    from kubepeft_trainer.adapter_metadata import describe_job_model

    describe_job_model(adapter_dir, config.spec.model)
    return store.upload_dir(adapter_dir, config.output.adapter, metadata=job_metadata(config, "adapter"))


def export_training(
    store: Store, config: TrainerConfig, export_dir: Path, base_dir: Path | None, result: TrainingResult
) -> dict[str, str]:
    """Steps 1-4 for a training job; returns the artifact URIs for the report."""
    adapter_dir = export_dir / ADAPTER_DIR
    sets: dict[str, Manifest] = {"adapter": export_adapter(store, config, adapter_dir)}
    artifacts = {"adapter": config.output.adapter}
    if exports_merged(config.spec):
        if base_dir is None:
            raise ValueError("merging needs the base model folder")
        sets["merged"] = export_merged(store, config, base_dir, adapter_dir, export_dir / "merged")
        artifacts["merged"] = config.output.merged
    sets[REPORT_DIR] = export_report(store, config, export_dir / REPORT_DIR, result)
    artifacts["loss_curve"] = config.output.child(f"{REPORT_DIR}/{LOSS_CURVE_FILE}")
    write_job_manifest(store, config, sets)
    artifacts["manifest"] = config.output.manifest
    return reported(config, artifacts)


def reported(config: TrainerConfig, locations: dict[str, str]) -> dict[str, str]:
    """Artifact locations as the report names them: the job's own URIs (``pvc://`` for an output on
    a claim), wherever the trainer found the output."""
    return {name: config.output.public(location) for name, location in locations.items()}
