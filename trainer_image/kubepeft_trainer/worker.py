"""One training rank: ``python -m kubepeft_trainer.worker --config PATH --workdir DIR``.

Started by ``accelerate launch`` (see ``distributed.build_launch_command``), once per process on
every node. :func:`run_worker` is a short sequence of named stages, each its own function
passing typed objects on:

1. :func:`start_world` -- accelerate and the process group; the world must be the one launched;
2. :func:`load_inputs` -- fetch (once per node) the model, adapters and data; build the method's
   trainable model and the tokenized splits;
3. :func:`prepare_training` -- data plan, optimizer and schedule, ``accelerator.prepare``;
4. :func:`restore_or_evaluate_before` -- resume from the latest complete checkpoint by itself,
   else measure the loss before training;
5. :func:`train_and_evaluate` -- the loop (checkpoints in the background), the final evaluation;
6. :func:`save_adapter` and :func:`training_result` -- what the node-0 launcher exports, left in
   ``<workdir>/export/`` (:mod:`kubepeft_trainer.rank_files`).

A rank that fails writes ``<workdir>/failures/rank-<N>.json`` (class + message) so that the
launcher can tell bad input (exit 3) from anything else: ``accelerate launch`` itself only
reports that some rank failed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed

from kubepeft.api.models import PeftJobSpec, TrainingSpec
from kubepeft.contract import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE, LauncherEnv, TrainerConfig
from kubepeft.storage import Store
from kubepeft_trainer.checkpoints import CheckpointManager, TrainerState
from kubepeft_trainer.errors import PermanentTrainerError, is_permanent
from kubepeft_trainer.evaluation import base_model_only, evaluate, make_eval_batches
from kubepeft_trainer.inputs import TrainingInputs, build_training_inputs, fetch_training_inputs
from kubepeft_trainer.loop import LoopSettings, StepTimer, all_reduce_sum, train
from kubepeft_trainer.methods import get_method
from kubepeft_trainer.optimization import build_optimizer_and_schedule
from kubepeft_trainer.output_store import open_output_store
from kubepeft_trainer.progress import Reporter
from kubepeft_trainer.rank_files import RankFailure, TrainingResult, adapter_dir, write_failure, write_result
from kubepeft_trainer.sampling import DataPlan
from kubepeft_trainer.settings import TrainerSettings

log = logging.getLogger("kubepeft_trainer.worker")

EvalBatches = Sequence[tuple[dict[str, torch.Tensor], bool]]


# --- what the stages pass on --------------------------------------------------------------------


@dataclass(frozen=True)
class RankJob:
    """What every stage reads: the job's config, the process settings and this node's work folder."""

    config: TrainerConfig
    settings: TrainerSettings
    workdir: Path
    training: TrainingSpec

    @classmethod
    def of(cls, config: TrainerConfig, settings: TrainerSettings, workdir: Path) -> RankJob:
        spec = config.spec
        if spec.training is None or spec.dataset is None:
            raise PermanentTrainerError("spec.training and spec.dataset are required for a training job")
        return cls(config, settings, workdir, spec.training)

    @property
    def spec(self) -> PeftJobSpec:
        return self.config.spec

    @property
    def launcher_env(self) -> LauncherEnv:
        return self.settings.launcher_env()

    @property
    def deepspeed(self) -> bool:
        return self.spec.distributed.backend == "deepspeed"

    @property
    def zero3(self) -> bool:
        return self.deepspeed and self.spec.distributed.zero_stage == 3


@dataclass(frozen=True)
class World:
    """This rank in the launched group."""

    accelerator: Any
    cuda: bool

    @property
    def rank(self) -> int:
        return int(self.accelerator.process_index)

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def size(self) -> int:
        return int(self.accelerator.num_processes)


@dataclass(frozen=True)
class ParameterCounts:
    """Counted before accelerate/DeepSpeed wrap (and ZeRO-3 partitions) the model."""

    trainable_parameters: int
    total_parameters: int


@dataclass(frozen=True)
class Prepared:
    """The model, optimizer and schedule after ``accelerator.prepare``, and the data plan."""

    model: Any
    optimizer: Any
    scheduler: Any
    plan: DataPlan
    total_steps: int
    counts: ParameterCounts


@dataclass(frozen=True)
class Evaluation:
    """This rank's share of the validation batches and the sum over ranks."""

    batches: EvalBatches
    reduce: Callable[[torch.Tensor], torch.Tensor]

    @classmethod
    def of(cls, job: RankJob, world: World, inputs: TrainingInputs) -> Evaluation:
        batch_size = job.training.per_device_batch_size
        batches = make_eval_batches(inputs.validation, inputs.collate, batch_size, rank=world.rank, world=world.size)
        return cls(batches, all_reduce_sum(world.accelerator))

    def run(self, model: Any, world: World) -> tuple[float | None, float | None]:
        return evaluate(model, self.batches, all_reduce=self.reduce, device=world.accelerator.device)


@dataclass(frozen=True)
class Start:
    """Where this attempt starts: a restored checkpoint's state, or a fresh one."""

    state: TrainerState
    resumed_from_step: int | None


@dataclass(frozen=True)
class Outcome:
    """What training and the final evaluation gave."""

    state: TrainerState
    timer: StepTimer
    eval_loss_after: float | None
    perplexity_after: float | None


# --- the stages ---------------------------------------------------------------------------------


def run_worker(config: TrainerConfig, settings: TrainerSettings, workdir: Path) -> int:
    """Every stage of one rank, in order (the order of every random draw: do not reorder)."""
    job = RankJob.of(config, settings, workdir)
    world = start_world(job)
    reporter = Reporter.from_settings(settings, enabled=world.main)
    set_seed(job.training.seed)
    store = open_output_store(config)
    inputs = load_inputs(job, world)
    prepared = prepare_training(job, world, inputs)
    checkpoints = open_checkpoints(job, world, store)
    evaluation = Evaluation.of(job, world, inputs)
    start = restore_or_evaluate_before(job, world, prepared, checkpoints, evaluation)
    if world.main:
        report_start(reporter, start, prepared)
    outcome = train_and_evaluate(job, world, prepared, inputs, checkpoints, evaluation, start, reporter)
    save_adapter(job, world, prepared, inputs)
    checkpoints.finish()
    if world.main:
        write_result(workdir, training_result(start, prepared, outcome, checkpoints, world))
    world.accelerator.end_training()
    return EXIT_OK


def start_world(job: RankJob) -> World:
    """Accelerate and the process group; refuses a world other than the one launched."""
    cuda = torch.cuda.is_available()
    timeout = timedelta(minutes=job.settings.dist_timeout_minutes)
    # gloo on CPU: DeepSpeed and accelerate otherwise disagree on the world size (environment guide).
    # (Only for a launched group: a lone process has no process group to configure.)
    launched = os.environ.get("LOCAL_RANK") is not None
    init_kwargs = InitProcessGroupKwargs(backend="gloo" if launched and not cuda else None, timeout=timeout)
    accelerator = Accelerator(
        gradient_accumulation_steps=job.training.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[init_kwargs],
    )
    env = job.launcher_env
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if world != env.world_size or accelerator.num_processes != env.world_size:
        raise RuntimeError(
            f"world size {world} (accelerate: {accelerator.num_processes}) != "
            f"{env.num_nodes} nodes x {env.procs_per_node} processes"
        )
    return World(accelerator, cuda)


def load_inputs(job: RankJob, world: World) -> TrainingInputs:
    """Fetch the inputs (one download per node; the node's other ranks find it cached), then build
    the trainable model and the splits (every rank at once: ZeRO-3 builds the model collectively)."""
    accelerator = world.accelerator
    with accelerator.local_main_process_first():
        fetched = fetch_training_inputs(job.config, job.workdir / "inputs")
    # bitsandbytes weights are placed at load time (accelerate cannot move them afterwards).
    quantized = get_method(job.spec).quantized_base
    device_map = {"": accelerator.local_process_index} if world.cuda and quantized else None
    inputs = build_training_inputs(job.config, fetched, device_map=device_map)
    model = inputs.model
    if job.training.gradient_checkpointing and not getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return inputs


def prepare_training(job: RankJob, world: World, inputs: TrainingInputs) -> Prepared:
    """The data plan, the optimizer over the trainable parameters and its schedule, all prepared."""
    training = job.training
    plan = DataPlan(
        num_examples=len(inputs.train),
        per_device_batch_size=training.per_device_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        world_size=world.size,
        seed=training.seed,
    )
    total_steps = plan.total_steps(max_steps=training.max_steps, epochs=training.epochs)
    model = inputs.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    counts = ParameterCounts(
        trainable_parameters=sum(p.numel() for p in trainable),
        total_parameters=sum(p.numel() for p in model.parameters()),
    )
    optimizer, scheduler = build_optimizer_and_schedule(training, trainable, total_steps)
    model, optimizer, scheduler = world.accelerator.prepare(model, optimizer, scheduler)
    if job.zero3 and world.main:
        # ds_tensor is this rank's shard: smaller than the full tensor when really partitioned.
        params = [p for p in model.parameters() if hasattr(p, "ds_numel")]
        split = sum(1 for p in params if p.ds_tensor.numel() < p.ds_numel)
        log.info("ZeRO-3 partitioned %d of %d parameters across %d ranks", split, len(params), world.size)
    return Prepared(model, optimizer, scheduler, plan, total_steps, counts)


def open_checkpoints(job: RankJob, world: World, store: Store) -> CheckpointManager:
    env = job.launcher_env
    return CheckpointManager(
        world.accelerator,
        store,
        job.config.output.checkpoints,
        job.workdir,
        node_rank=env.node_rank,
        num_nodes=env.num_nodes,
        keep=job.spec.checkpointing.keep,
        deepspeed=job.deepspeed,
        part_timeout=job.settings.checkpoint_part_timeout,
    )


def restore_or_evaluate_before(
    job: RankJob, world: World, prepared: Prepared, checkpoints: CheckpointManager, evaluation: Evaluation
) -> Start:
    """The latest complete checkpoint restored into the prepared objects, else a fresh state with
    the loss before training."""
    restored = checkpoints.restore()
    if restored is not None:
        return Start(restored, restored.step)
    training = job.training
    state = TrainerState(total_steps=prepared.total_steps, world_size=prepared.plan.world_size, seed=training.seed)
    # "Before" is the base model's loss. A fresh soft prompt already changes the model, so it is
    # switched off; a fresh LoRA adapter is a no-op (B = 0) and a given starting adapter
    # (spec.adapters) is part of the model being improved, so both are evaluated as they are.
    fresh_changes_model = not get_method(job.spec).fresh_adapter_is_identity and not job.spec.adapters
    model = prepared.model
    with base_model_only(world.accelerator.unwrap_model(model)) if fresh_changes_model else contextlib.nullcontext():
        state.eval_loss_before, _ = evaluation.run(model, world)
    return Start(state, None)


def report_start(reporter: Reporter, start: Start, prepared: Prepared) -> None:
    state = start.state
    reporter.publish(
        state="Training",
        resumed_from_step=start.resumed_from_step,
        eval_loss_before=state.eval_loss_before,
        progress=state.progress() | {"total_steps": prepared.total_steps},
        trainable_parameters=prepared.counts.trainable_parameters,
        total_parameters=prepared.counts.total_parameters,
    )


def train_and_evaluate(
    job: RankJob,
    world: World,
    prepared: Prepared,
    inputs: TrainingInputs,
    checkpoints: CheckpointManager,
    evaluation: Evaluation,
    start: Start,
    reporter: Reporter,
) -> Outcome:
    """The optimisation loop from the start state to the last step, then the final evaluation."""
    training = job.training
    settings = LoopSettings(
        total_steps=prepared.total_steps,
        log_every=training.log_every_steps,
        checkpoint_every=job.spec.checkpointing.every_steps,
        eval_every=training.eval_every_steps,
        max_grad_norm=training.max_grad_norm,
        deepspeed=job.deepspeed,
    )
    timer = StepTimer()
    state = train(
        world.accelerator,
        prepared.model,
        prepared.optimizer,
        prepared.scheduler,
        prepared.plan,
        inputs.train,
        inputs.collate,
        settings,
        start.state,
        checkpoints=checkpoints,
        eval_batches=evaluation.batches,
        reporter=reporter if world.main else None,
        timer=timer,
    )
    eval_after, ppl_after = evaluation.run(prepared.model, world)
    return Outcome(state, timer, eval_after, ppl_after)


def save_adapter(job: RankJob, world: World, prepared: Prepared, inputs: TrainingInputs) -> None:
    """Rank 0 saves the adapter (PEFT layout) and tokenizer; ZeRO-3 gathers the weights on every rank."""
    accelerator = world.accelerator
    unwrapped = accelerator.unwrap_model(prepared.model)
    with _gathered([p for p in prepared.model.parameters() if p.requires_grad], job.zero3):
        if world.main:
            unwrapped.save_pretrained(str(adapter_dir(job.workdir)), safe_serialization=True)
            inputs.tokenizer.save_pretrained(str(adapter_dir(job.workdir)))
    accelerator.wait_for_everyone()


def training_result(
    start: Start, prepared: Prepared, outcome: Outcome, checkpoints: CheckpointManager, world: World
) -> TrainingResult:
    state = outcome.state
    return TrainingResult(
        total_steps=prepared.total_steps,
        final_step=state.step,
        epoch=state.epoch,
        resumed_from_step=start.resumed_from_step,
        eval_loss_before=state.eval_loss_before,
        eval_loss_after=outcome.eval_loss_after,
        perplexity_after=outcome.perplexity_after,
        loss_history=state.loss_history,
        eval_history=state.eval_history,
        tokens_seen=state.tokens_seen,
        train_seconds_this_attempt=outcome.timer.total_seconds,
        steps_this_attempt=outcome.timer.total_steps_timed,
        world_size=prepared.plan.world_size,
        committed_checkpoints=checkpoints.committed,
        trainable_parameters=prepared.counts.trainable_parameters,
        total_parameters=prepared.counts.total_parameters,
        peak_memory_bytes=peak_memory_bytes(world.cuda),
    )


# --- helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _gathered(params: Sequence[Any], deepspeed_zero3: bool) -> Iterator[None]:
    """Gather ZeRO-3 partitioned parameters on every rank (collective); a no-op otherwise."""
    if not deepspeed_zero3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(params), modifier_rank=None):
        yield


def peak_memory_bytes(cuda: bool) -> int:
    """Peak accelerator memory of this process on CUDA, else its peak resident set size."""
    if cuda:
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


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


def record_failure(workdir: Path, rank: int, exc: BaseException) -> int:
    """Leave this rank's failure for the launcher; returns the exit code it stands for."""
    code = EXIT_PERMANENT if is_permanent(exc) else EXIT_RETRYABLE
    write_failure(workdir, RankFailure(rank=rank, exit_code=code, error=type(exc).__name__, message=str(exc)))
    return code


# --- entry point --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the TrainerConfig JSON")
    parser.add_argument("--workdir", required=True, help="this node's local work folder")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubepeft_trainer.worker", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))  # set by the launch (torch's variable)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
    )
    workdir = Path(args.workdir)
    try:
        settings = TrainerSettings.load()
        if settings.launcher_pid is not None:
            exit_with_launcher(settings.launcher_pid)
        config = TrainerConfig.from_json(Path(args.config).read_text(encoding="utf-8"))
        return run_worker(config, settings, workdir)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        code = record_failure(workdir, rank, exc)
        log.error("rank %d failed (%s): %s", rank, "permanent" if code == EXIT_PERMANENT else "retryable", exc)
        if code != EXIT_PERMANENT:
            traceback.print_exc()
        return code


if __name__ == "__main__":
    sys.exit(main())
