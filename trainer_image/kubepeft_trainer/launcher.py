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
from pathlib import Path
from types import FrameType
from typing import Any

from kubepeft.api.models import TrainingSpec
from kubepeft.contract import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, LauncherEnv, TrainerConfig
from kubepeft_trainer.distributed import build_deepspeed_config, build_launch_command, zero3_persistence_threshold
from kubepeft_trainer.progress import Reporter
from kubepeft_trainer.worker import ENV_LAUNCHER_PID, EXPORT_DIR, FAILURES_DIR, RESULT_FILE, is_permanent

log = logging.getLogger("kubepeft_trainer.launcher")

DEEPSPEED_CONFIG_FILE = "deepspeed.json"


def read_failures(workdir: Path) -> list[dict[str, Any]]:
    folder = workdir / FAILURES_DIR
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("rank-*.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def classify_exit(returncode: int, failures: list[dict[str, Any]]) -> tuple[int, str | None]:
    """Pure: this node's exit code and message from accelerate's exit code and the rank failure files."""
    permanent = [f for f in failures if f.get("exit_code") == EXIT_PERMANENT]
    if permanent:
        return EXIT_PERMANENT, str(permanent[0].get("message"))
    if returncode == 0 and not failures:
        return EXIT_OK, None
    if failures:
        first = failures[0]
        return EXIT_RETRYABLE, f"rank {first.get('rank')}: {first.get('error')}: {first.get('message')}"
    return EXIT_RETRYABLE, f"training processes exited with code {returncode}"


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def run_ranks(config: TrainerConfig, config_path: Path, env: LauncherEnv, workdir: Path) -> int:
    """Start this node's ranks through ``accelerate launch``; returns its exit code."""
    spec = config.spec
    cuda = _has_cuda()
    ds_path = None
    if spec.distributed.backend == "deepspeed":
        ds_config = build_deepspeed_config(
            spec,
            env.world_size,
            cuda=cuda,
            num_nodes=env.num_nodes,
            param_persistence_threshold=zero3_persistence_threshold(),
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
    from kubepeft_trainer.export import export_adapter, job_metadata, write_job_manifest
    from kubepeft_trainer.inputs import fetch_merge_inputs
    from kubepeft_trainer.merge import merge_weighted_adapters
    from kubepeft_trainer.output_store import open_output_store

    store = open_output_store(config)
    reporter.publish(state="Exporting", message="merging adapters")
    merged = store.read_manifest(config.output.merged)
    adapter = store.read_manifest(config.output.adapter)
    if merged is None or adapter is None:
        base_dir, adapter_dirs = fetch_merge_inputs(config, workdir / "inputs")
        local = workdir / EXPORT_DIR
        # Writes the merged model to merged/ and the combined adapter (PEFT layout) to adapter/.
        merge_weighted_adapters(
            base_dir, adapter_dirs, local / "merged", config.spec, adapter_out_dir=local / "adapter"
        )
        adapter = export_adapter(store, config, local / "adapter")
        merged = store.upload_dir(local / "merged", config.output.merged, metadata=job_metadata(config, "merged"))
    write_job_manifest(store, config, {"adapter": adapter, "merged": merged})
    return {"adapter": config.output.adapter, "merged": config.output.merged, "manifest": config.output.manifest}


def last_interval_loss(history: list[list[float]], training: TrainingSpec | None) -> float | None:
    """Mean loss of the last reporting interval: the number the progress lines showed last."""
    if not history:
        return None
    last_step = int(history[-1][0])
    every = training.log_every_steps if training else 1
    # The final interval may be shorter than logEverySteps when maxSteps is not a multiple of it.
    start = last_step - (last_step % every or every)
    window = [float(loss) for step, loss in history if step > start]
    return sum(window) / len(window)


def export_after_training(config: TrainerConfig, workdir: Path, reporter: Reporter) -> dict[str, str]:
    from kubepeft_trainer.export import export_training
    from kubepeft_trainer.inputs import fetch_base_model
    from kubepeft_trainer.output_store import open_output_store

    export_dir = workdir / EXPORT_DIR
    result = json.loads((export_dir / RESULT_FILE).read_text(encoding="utf-8"))
    reporter.publish(
        state="Exporting",
        resumed_from_step=result.get("resumed_from_step"),
        eval_loss_before=result.get("eval_loss_before"),
        eval_loss_after=result.get("eval_loss_after"),
        trainable_parameters=result.get("trainable_parameters"),
        total_parameters=result.get("total_parameters"),
        peak_memory_bytes=result.get("peak_memory_bytes"),
        progress={
            "step": result.get("final_step"),
            "total_steps": result.get("total_steps"),
            "epoch": round(float(result.get("epoch") or 0.0), 4),
            "loss": last_interval_loss(result.get("loss_history") or [], config.spec.training),
            "eval_loss": result.get("eval_loss_after"),
            "eta_seconds": 0,
        },
    )
    needs_base = config.spec.output.merge and config.spec.method in ("lora", "qlora")
    base_dir = fetch_base_model(config, workdir / "inputs") if needs_base else None
    store = open_output_store(config)
    return export_training(store, config, export_dir, base_dir, result)


def launch(config: TrainerConfig, config_path: Path, env: LauncherEnv, workdir: Path, reporter: Reporter) -> int:
    """Everything one node does for one attempt; returns the process exit code."""
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
        rc = run_ranks(config, config_path, env, workdir)
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
