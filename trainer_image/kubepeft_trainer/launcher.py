"""The per-node launcher: what ``kubepeft train`` does in every worker pod (and every local node).

1. Training job: write the DeepSpeed JSON if needed, start this node's ranks with
   ``accelerate launch`` (``distributed.build_launch_command``) and wait.
2. Classify the outcome: a rank that failed on bad input left ``failures/rank-N.json`` with exit
   code 3 -> this node exits 3 (permanent); any other failure -> 1 (retryable: the next attempt
   resumes from the latest complete checkpoint).
3. Node 0 only: export (adapter, merged model, report, job manifest LAST) and report Succeeded.

Merge-only jobs train nothing: node 0 merges the adapters (non-distributed) and exports; the
other nodes exit 0 at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from kubepeft.api.models import TrainingSpec
from kubepeft.contract import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, TrainerConfig
from kubepeft_trainer.distributed import build_deepspeed_config, build_launch_command
from kubepeft_trainer.errors import is_permanent
from kubepeft_trainer.progress import Reporter
from kubepeft_trainer.rank_files import (
    ADAPTER_DIR,
    EXPORT_DIR,
    FAILURES_DIR,
    RankFailure,
    TrainingResult,
    read_failures,
    read_result,
)
from kubepeft_trainer.settings import ENV_LAUNCHER_PID, TrainerSettings

log = logging.getLogger("kubepeft_trainer.launcher")

DEEPSPEED_CONFIG_FILE = "deepspeed.json"


def classify_exit(returncode: int, failures: Sequence[RankFailure]) -> tuple[int, str | None]:
    """Pure: this node's exit code and message from accelerate's exit code and the rank failure files."""
    permanent = [f for f in failures if f.exit_code == EXIT_PERMANENT]
    if permanent:
        return EXIT_PERMANENT, permanent[0].message
    if returncode == 0 and not failures:
        return EXIT_OK, None
    if failures:
        first = failures[0]
        return EXIT_RETRYABLE, f"rank {first.rank}: {first.error}: {first.message}"
    return EXIT_RETRYABLE, f"training processes exited with code {returncode}"


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def run_ranks(config: TrainerConfig, config_path: Path, settings: TrainerSettings, workdir: Path) -> int:
    """Start this node's ranks through ``accelerate launch``; returns its exit code."""
    spec = config.spec
    env = settings.launcher_env()
    cuda = _has_cuda()
    ds_path = None
    if spec.distributed.backend == "deepspeed":
        ds_config = build_deepspeed_config(
            spec,
            env.world_size,
            cuda=cuda,
            num_nodes=env.num_nodes,
            param_persistence_threshold=settings.zero3_persistence_threshold,
        )
        ds_path = workdir / DEEPSPEED_CONFIG_FILE
        ds_path.write_text(json.dumps(ds_config, indent=2), encoding="utf-8")
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // env.procs_per_node))
    plan = build_launch_command(
        spec,
        env,
        config_path=str(config_path),
        workdir=str(workdir),
        cuda=cuda,
        deepspeed_config_path=str(ds_path) if ds_path else None,
        threads_per_process=threads,
    )
    log.info("node %d: starting %d rank(s): %s", env.node_rank, env.procs_per_node, " ".join(plan.argv))
    child_env = {**os.environ, **plan.env, ENV_LAUNCHER_PID: str(os.getpid())}
    # DeepSpeed JIT-compiles an op on first use: keep the build cache next to the work folder.
    child_env.setdefault("TORCH_EXTENSIONS_DIR", str(workdir / "torch_extensions"))
    process = subprocess.Popen(plan.argv, env=child_env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_merge_only(config: TrainerConfig, workdir: Path, reporter: Reporter) -> dict[str, str]:
    from kubepeft_trainer.export import export_adapter, job_metadata, reported, write_job_manifest
    from kubepeft_trainer.inputs import fetch_merge_inputs
    from kubepeft_trainer.merge import merge_job_adapters
    from kubepeft_trainer.output_store import open_output_store

    store = open_output_store(config)
    reporter.publish(state="Exporting", message="merging adapters")
    merged = store.read_manifest(config.output.merged)
    adapter = store.read_manifest(config.output.adapter)
    if merged is None or adapter is None:
        base_dir, adapter_dirs = fetch_merge_inputs(config, workdir / "inputs")
        local = workdir / EXPORT_DIR
        # Writes the merged model to merged/ and the combined adapter (PEFT layout) to adapter/.
        merge_job_adapters(base_dir, adapter_dirs, config.spec, local / "merged", local / ADAPTER_DIR)
        adapter = export_adapter(store, config, local / ADAPTER_DIR)
        merged = store.upload_dir(local / "merged", config.output.merged, metadata=job_metadata(config, "merged"))
    write_job_manifest(store, config, {"adapter": adapter, "merged": merged})
    return reported(
        config, {"adapter": config.output.adapter, "merged": config.output.merged, "manifest": config.output.manifest}
    )


def last_interval_loss(history: Sequence[tuple[int, float]], training: TrainingSpec | None) -> float | None:
    """Mean loss of the last reporting interval: the number the progress lines showed last."""
    if not history:
        return None
    last_step = int(history[-1][0])
    every = training.log_every_steps if training else 1
    # The final interval may be shorter than logEverySteps when maxSteps is not a multiple of it.
    start = last_step - (last_step % every or every)
    window = [float(loss) for step, loss in history if step > start]
    return sum(window) / len(window)


def exporting_report(result: TrainingResult, training: TrainingSpec | None) -> dict[str, Any]:
    """Pure: the report fields of the Exporting state, from what the ranks achieved."""
    return {
        "resumed_from_step": result.resumed_from_step,
        "eval_loss_before": result.eval_loss_before,
        "eval_loss_after": result.eval_loss_after,
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
        "peak_memory_bytes": result.peak_memory_bytes,
        "progress": {
            "step": result.final_step,
            "total_steps": result.total_steps,
            "epoch": round(result.epoch, 4),
            "loss": last_interval_loss(result.loss_history, training),
            "eval_loss": result.eval_loss_after,
            "eta_seconds": 0,
        },
    }


def export_after_training(config: TrainerConfig, workdir: Path, reporter: Reporter) -> dict[str, str]:
    from kubepeft_trainer.export import export_training, exports_merged
    from kubepeft_trainer.inputs import fetch_base_model
    from kubepeft_trainer.output_store import open_output_store

    result = read_result(workdir)
    reporter.publish(state="Exporting", **exporting_report(result, config.spec.training))
    base_dir = fetch_base_model(config, workdir / "inputs") if exports_merged(config.spec) else None
    store = open_output_store(config)
    return export_training(store, config, workdir / EXPORT_DIR, base_dir, result)


def launch(
    config: TrainerConfig, config_path: Path, settings: TrainerSettings, workdir: Path, reporter: Reporter
) -> int:
    """Everything one node does for one attempt; returns the process exit code."""
    env = settings.launcher_env()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in (FAILURES_DIR, EXPORT_DIR):  # a reused work folder must not leak a previous attempt
        shutil.rmtree(workdir / stale, ignore_errors=True)
    from kubepeft_trainer.output_store import abort_uploads_after_failure, preflight_output

    try:
        if config.spec.is_merge_only():
            if env.node_rank != 0:
                return EXIT_OK
            preflight_output(config, env.node_rank)
            artifacts = run_merge_only(config, workdir, reporter)
            reporter.publish(state="Succeeded", artifacts=artifacts, message="adapters merged")
            return EXIT_OK
        from kubepeft_trainer.inputs import preflight_dataset

        preflight_output(config, env.node_rank)
        preflight_dataset(config, workdir / "inputs")
        rc = run_ranks(config, config_path, settings, workdir)
        code, message = classify_exit(rc, read_failures(workdir))
        if code != EXIT_OK:
            if env.node_rank == 0:
                abort_uploads_after_failure(config)
            reporter.publish(
                state="Failed",
                failure_class="permanent" if code == EXIT_PERMANENT else "retryable",
                message=message,
            )
            return code
        if env.node_rank != 0:
            return EXIT_OK
        artifacts = export_after_training(config, workdir, reporter)
        reporter.publish(state="Succeeded", artifacts=artifacts, message="training and export complete")
        return EXIT_OK
    except Exception as exc:
        permanent = is_permanent(exc)
        if permanent:  # bad input: the message says it all, a traceback is noise
            log.error("node %d failed permanently: %s", env.node_rank, exc)
        else:
            log.exception("node %d failed", env.node_rank)
        if env.node_rank == 0:
            abort_uploads_after_failure(config)
        reporter.publish(state="Failed", failure_class="permanent" if permanent else "retryable", message=str(exc))
        return EXIT_PERMANENT if permanent else EXIT_RETRYABLE
