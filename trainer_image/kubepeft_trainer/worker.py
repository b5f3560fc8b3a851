"""One training rank: ``python -m kubepeft_trainer.worker --config PATH --workdir DIR``.

Started by ``accelerate launch`` (see ``distributed.build_launch_command``), once per process on
every node. It builds the model and data, resumes from the latest complete checkpoint by itself,
trains, evaluates, and leaves for the node-0 launcher in ``<workdir>/export/``:

* ``adapter/`` -- the trained adapter in PEFT's layout (gathered collectively under ZeRO-3),
* ``training_result.json`` -- losses, eval losses, step counts, throughput.

A rank that fails writes ``<workdir>/failures/rank-<N>.json`` (class + message) so that the
launcher can tell bad input (exit 3) from anything else: ``accelerate launch`` itself only
reports that some rank failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from kubepeft.contract import ENV_ATTEMPT, EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, LauncherEnv, TrainerConfig

EXPORT_DIR = "export"
ADAPTER_DIR = "adapter"
RESULT_FILE = "training_result.json"
FAILURES_DIR = "failures"
ENV_DIST_TIMEOUT_MIN = "KUBEPEFT_DIST_TIMEOUT_MINUTES"
ENV_LAUNCHER_PID = "KUBEPEFT_LAUNCHER_PID"

log = logging.getLogger("kubepeft_trainer.worker")


def exit_with_launcher(launcher_pid: int, interval: float = 1.0) -> None:
    """Exit when the node launcher is gone (SIGKILLed, OOM-killed): torch's elastic agent starts
    ranks in their own session, so killing the launcher's process group would leave them
    training -- and writing checkpoints -- next to the attempt that replaces it."""

    def watch() -> None:
        while True:
            time.sleep(interval)
            try:
                os.kill(launcher_pid, 0)
            except ProcessLookupError:
                os._exit(EXIT_RETRYABLE)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="kubepeft-launcher-watch", daemon=True).start()


def is_permanent(exc: BaseException) -> bool:
    """Bad input: our own PermanentTrainerError, config validation, a missing/corrupt input object."""
    from pydantic import ValidationError

    from kubepeft.storage import PermanentStorageError
    from kubepeft_trainer.errors import PermanentTrainerError

    return isinstance(exc, PermanentTrainerError | ValidationError | PermanentStorageError)


def write_failure(workdir: Path, rank: int, exc: BaseException) -> int:
    code = EXIT_PERMANENT if is_permanent(exc) else EXIT_RETRYABLE
    folder = workdir / FAILURES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "exit_code": code, "error": type(exc).__name__, "message": str(exc)}
    (folder / f"rank-{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    return code


@contextlib.contextmanager
def _gathered(params: Sequence[Any], deepspeed_zero3: bool) -> Iterator[None]:
    """Gather ZeRO-3 partitioned parameters on every rank (collective); a no-op otherwise."""
    if not deepspeed_zero3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params), modifier_rank=None):
        yield


def build_optimizer(name: str, params: list[Any], lr: float, weight_decay: float) -> Any:
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        # Plain SGD barely moves LoRA weights at adapter learning rates; momentum is the usual default.
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


SCHEDULER_NAMES = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant",
    "constantWithWarmup": "constant_with_warmup",
}


def run_worker(config: TrainerConfig, launcher_env: LauncherEnv, workdir: Path) -> int:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, set_seed
    from transformers import get_scheduler

    from kubepeft_trainer.checkpoints import CheckpointManager, TrainerState
    from kubepeft_trainer.errors import PermanentTrainerError
    from kubepeft_trainer.evaluation import base_model_only, evaluate, make_eval_batches
    from kubepeft_trainer.inputs import build_training_inputs, fetch_training_inputs
    from kubepeft_trainer.loop import LoopSettings, StepTimer, all_reduce_sum, train
    from kubepeft_trainer.output_store import open_output_store
    from kubepeft_trainer.progress import Reporter
    from kubepeft_trainer.sampling import DataPlan

    spec = config.spec
    training = spec.training
    if training is None or spec.dataset is None:
        raise PermanentTrainerError("spec.training and spec.dataset are required for a training job")
    cuda = torch.cuda.is_available()
    deepspeed = spec.distributed.backend == "deepspeed"
    timeout = timedelta(minutes=int(os.environ.get(ENV_DIST_TIMEOUT_MIN, "30")))
    # gloo on CPU: DeepSpeed and accelerate otherwise disagree on the world size (environment guide).
    # (Only for a launched group: a lone process has no process group to configure.)
    launched = os.environ.get("LOCAL_RANK") is not None
    init_kwargs = InitProcessGroupKwargs(backend="gloo" if launched and not cuda else None, timeout=timeout)
    accelerator = Accelerator(
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[init_kwargs],
    )
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if world != launcher_env.world_size or accelerator.num_processes != launcher_env.world_size:
        raise RuntimeError(
            f"world size {world} (accelerate: {accelerator.num_processes}) != "
            f"{launcher_env.num_nodes} nodes x {launcher_env.procs_per_node} processes"
        )
    rank = accelerator.process_index
    main = accelerator.is_main_process
    reporter = Reporter.from_env(attempt=int(os.environ.get(ENV_ATTEMPT, "0")), enabled=main)
    set_seed(training.seed)

    store = open_output_store(config)
    with accelerator.local_main_process_first():  # one download per node; the others find it cached
        fetched = fetch_training_inputs(config, workdir / "inputs")
    # bitsandbytes weights are placed at load time (accelerate cannot move them afterwards).
    device_map = {"": accelerator.local_process_index} if cuda and spec.method == "qlora" else None
    inputs = build_training_inputs(config, fetched, device_map=device_map)
    model = inputs.model
    if training.gradient_checkpointing and not getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    plan = DataPlan(
        num_examples=len(inputs.train),
        per_device_batch_size=training.per_device_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        world_size=accelerator.num_processes,
        seed=training.seed,
    )
    total_steps = plan.total_steps(max_steps=training.max_steps, epochs=training.epochs)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Counted before accelerate/DeepSpeed wrap (and ZeRO-3 partitions) the model.
    parameter_counts = {
        "trainable_parameters": sum(p.numel() for p in trainable),
        "total_parameters": sum(p.numel() for p in model.parameters()),
    }
    optimizer = build_optimizer(training.optimizer, trainable, training.learning_rate, training.weight_decay)
    scheduler = get_scheduler(
        SCHEDULER_NAMES[training.lr_scheduler],
        optimizer,
        num_warmup_steps=training.warmup_steps,
        num_training_steps=total_steps,
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    zero3 = deepspeed and spec.distributed.zero_stage == 3
    if zero3 and main:
        # ds_tensor is this rank's shard: smaller than the full tensor when really partitioned.
        params = [p for p in model.parameters() if hasattr(p, "ds_numel")]
        split = sum(1 for p in params if p.ds_tensor.numel() < p.ds_numel)
        log.info("ZeRO-3 partitioned %d of %d parameters across %d ranks", split, len(params), world)

    checkpoints = CheckpointManager(
        accelerator,
        store,
        config.output.checkpoints,
        workdir,
        node_rank=launcher_env.node_rank,
        num_nodes=launcher_env.num_nodes,
        keep=spec.checkpointing.keep,
        deepspeed=deepspeed,
    )
    eval_batches = make_eval_batches(
        inputs.validation, inputs.collate, training.per_device_batch_size, rank=rank, world=accelerator.num_processes
    )
    reduce = all_reduce_sum(accelerator)
    restored = checkpoints.restore()
    resumed_from = restored.step if restored else None
    if restored is None:
        state = TrainerState(total_steps=total_steps, world_size=plan.world_size, seed=training.seed)
        # "Before" is the base model's loss. A fresh soft prompt already changes the model, so it
        # is switched off; a fresh LoRA adapter is a no-op (B = 0) and a given starting adapter
        # (spec.adapters) is part of the model being improved, so both are evaluated as they are.
        fresh_prompt = spec.method == "promptTuning" and not spec.adapters
        with base_model_only(accelerator.unwrap_model(model)) if fresh_prompt else contextlib.nullcontext():
            state.eval_loss_before, _ = evaluate(model, eval_batches, all_reduce=reduce, device=accelerator.device)
    else:
        state = restored
    if main:
        reporter.publish(
            state="Training",
            resumed_from_step=resumed_from,
            eval_loss_before=state.eval_loss_before,
            progress=state.progress() | {"total_steps": total_steps},
            **parameter_counts,
        )
    settings = LoopSettings(
        total_steps=total_steps,
        log_every=training.log_every_steps,
        checkpoint_every=spec.checkpointing.every_steps,
        eval_every=training.eval_every_steps,
        max_grad_norm=training.max_grad_norm,
        deepspeed=deepspeed,
    )
    timer = StepTimer()
    state = train(
        accelerator,
        model,
        optimizer,
        scheduler,
        plan,
        inputs.train,
        inputs.collate,
        settings,
        state,
        checkpoints=checkpoints,
        eval_batches=eval_batches,
        reporter=reporter if main else None,
        timer=timer,
    )
    eval_after, ppl_after = evaluate(model, eval_batches, all_reduce=reduce, device=accelerator.device)

    export = workdir / EXPORT_DIR
    unwrapped = accelerator.unwrap_model(model)
    with _gathered([p for p in model.parameters() if p.requires_grad], zero3):
        if main:
            unwrapped.save_pretrained(str(export / ADAPTER_DIR), safe_serialization=True)
            inputs.tokenizer.save_pretrained(str(export / ADAPTER_DIR))
    accelerator.wait_for_everyone()
    checkpoints.finish()
    if main:
        result = {
            "total_steps": total_steps,
            "final_step": state.step,
            "epoch": state.epoch,
            "resumed_from_step": resumed_from,
            "eval_loss_before": state.eval_loss_before,
            "eval_loss_after": eval_after,
            "perplexity_after": ppl_after,
            "loss_history": state.loss_history,
            "eval_history": state.eval_history,
            "tokens_seen": state.tokens_seen,
            "train_seconds_this_attempt": timer.total_seconds,
            "steps_this_attempt": timer.total_steps_timed,
            "world_size": plan.world_size,
            "committed_checkpoints": checkpoints.committed,
            **parameter_counts,
            "peak_memory_bytes": peak_memory_bytes(cuda),
        }
        (export / RESULT_FILE).write_text(json.dumps(result, indent=1), encoding="utf-8")
    accelerator.end_training()
    return EXIT_OK


def peak_memory_bytes(cuda: bool) -> int:
    """Peak accelerator memory of this process on CUDA, else its peak resident set size."""
    if cuda:
        import torch

        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the TrainerConfig JSON")
    parser.add_argument("--workdir", required=True, help="this node's local work folder")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubepeft_trainer.worker", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
    )
    workdir = Path(args.workdir)
    if os.environ.get(ENV_LAUNCHER_PID):
        exit_with_launcher(int(os.environ[ENV_LAUNCHER_PID]))
    try:
        config = TrainerConfig.from_json(Path(args.config).read_text(encoding="utf-8"))
        return run_worker(config, LauncherEnv.from_env(), workdir)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        code = write_failure(workdir, rank, exc)
        log.error("rank %d failed (%s): %s", rank, "permanent" if code == EXIT_PERMANENT else "retryable", exc)
        if code != EXIT_PERMANENT:
            traceback.print_exc()
        return code


if __name__ == "__main__":
    sys.exit(main())
