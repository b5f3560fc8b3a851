"""The optimisation loop, identical on every rank (DDP or DeepSpeed through accelerate).

Per optimizer step: every rank collates its micro-batches (``sampling.DataPlan``), the ranks
all-reduce their label-token counts, and each micro-batch's loss is
``sum of token losses * world_size * grad_accum / global token count``: DDP/DeepSpeed average
gradients over ranks and accelerate/DeepSpeed divide by ``grad_accum``, which this undoes, so
the gradient is the true token mean over the whole global batch -- the same on 1 or N ranks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kubepeft_trainer.checkpoints import CheckpointManager, TrainerState
from kubepeft_trainer.data.batches import count_tokens, model_inputs
from kubepeft_trainer.evaluation import count_label_tokens, evaluate, token_loss_sum
from kubepeft_trainer.progress import Reporter
from kubepeft_trainer.sampling import DataPlan

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    total_steps: int
    log_every: int
    checkpoint_every: int
    eval_every: int | None
    max_grad_norm: float
    deepspeed: bool


@dataclass
class StepTimer:
    """Throughput over the last reporting interval; checkpoint and eval time excluded."""

    tokens: int = 0
    seconds: float = 0.0
    total_seconds: float = 0.0
    total_steps_timed: int = 0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds
        self.total_seconds += seconds
        self.total_steps_timed += 1

    def take_rate(self) -> float | None:
        rate = self.tokens / self.seconds if self.seconds > 0 else None
        self.tokens, self.seconds = 0, 0.0
        return rate

    def eta(self, remaining_steps: int) -> int | None:
        if not self.total_steps_timed:
            return None
        return round(remaining_steps * self.total_seconds / self.total_steps_timed)


def all_reduce_sum(accelerator: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def reduce(tensor: torch.Tensor) -> torch.Tensor:
        if accelerator.num_processes > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    return reduce


def train(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    plan: DataPlan,
    train_items: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    settings: LoopSettings,
    state: TrainerState,
    *,
    checkpoints: CheckpointManager | None = None,
    eval_batches: Sequence[tuple[dict[str, torch.Tensor], bool]] = (),
    reporter: Reporter | None = None,
    timer: StepTimer | None = None,
) -> TrainerState:
    """Run optimizer steps ``state.step + 1 .. settings.total_steps``; returns the final state."""
    reduce = all_reduce_sum(accelerator)
    trainable = [p for p in model.parameters() if p.requires_grad]
    timer = timer or StepTimer()
    interval_losses: list[float] = []
    model.train()
    while state.step < settings.total_steps:
        started = time.perf_counter()
        step = collate_step(accelerator, plan, state.step, train_items, collate, reduce)
        loss_sum = optimizer_step(accelerator, model, optimizer, step, settings, trainable)
        # DDP: one real scheduler step per optimizer step (step_scheduler_with_optimizer=False);
        # DeepSpeed: a no-op wrapper, the engine stepped the scheduler.
        scheduler.step()
        step_loss = float(reduce(loss_sum).item() / max(step.global_labels, 1.0))
        timer.add(int(step.global_tokens), time.perf_counter() - started)
        state.step += 1
        state.epoch = plan.epoch_at(state.step)
        state.tokens_seen += int(step.global_tokens)
        state.loss_history.append((state.step, step_loss))
        interval_losses.append(step_loss)
        last = state.step == settings.total_steps
        if settings.eval_every and state.step % settings.eval_every == 0 and eval_batches and not last:
            evaluate_during_training(accelerator, model, eval_batches, reduce, state, reporter)
        if state.step % settings.log_every == 0 or last:
            if reporter:
                report_interval(reporter, state, settings, scheduler, timer, interval_losses)
            interval_losses = []
        if checkpoints is not None and (state.step % settings.checkpoint_every == 0 or last):
            checkpoints.save(state)
    return state


@dataclass(frozen=True)
class StepBatches:
    """One optimizer step's micro-batches on this rank and the token counts of the whole global batch."""

    micro: list[dict[str, torch.Tensor]]
    global_labels: float
    global_tokens: float
    scale: float
    """The loss factor ``world_size * grad_accum / global label tokens`` (see the module's doc)."""


def collate_step(
    accelerator: Any,
    plan: DataPlan,
    step: int,
    train_items: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> StepBatches:
    """This rank's micro-batches of optimizer step ``step + 1`` and the all-reduced token counts."""
    items = [[train_items[i] for i in mb] for mb in plan.rank_micro_batches(step, accelerator.process_index)]
    micro = [collate(mb) for mb in items]
    counts = torch.tensor(
        [sum(count_label_tokens(b["labels"]) for b in micro), sum(count_tokens(mb) for mb in items)],
        dtype=torch.float64,
        device=accelerator.device,
    )
    global_labels, global_tokens = reduce(counts).tolist()
    scale = plan.world_size * plan.gradient_accumulation_steps / max(global_labels, 1.0)
    return StepBatches(micro, global_labels, global_tokens, scale)


def optimizer_step(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: Any,
    step: StepBatches,
    settings: LoopSettings,
    trainable: list[torch.nn.Parameter],
) -> torch.Tensor:
    """Forward and backward every micro-batch (the optimizer steps with the last); returns this
    rank's summed token loss."""
    device = accelerator.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in step.micro:
        batch = {k: v.to(device) for k, v in batch.items()}
        with accelerator.accumulate(model):
            out = model(**model_inputs(batch))
            batch_loss = token_loss_sum(out.logits, batch["labels"])
            accelerator.backward(batch_loss * step.scale)
            # DeepSpeed clips inside engine.step (gradient_clipping in its config).
            if accelerator.sync_gradients and settings.max_grad_norm > 0 and not settings.deepspeed:
                accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += batch_loss.detach().double()
    return loss_sum


def evaluate_during_training(
    accelerator: Any,
    model: torch.nn.Module,
    eval_batches: Sequence[tuple[dict[str, torch.Tensor], bool]],
    reduce: Callable[[torch.Tensor], torch.Tensor],
    state: TrainerState,
    reporter: Reporter | None,
) -> None:
    eval_loss, _ = evaluate(model, eval_batches, all_reduce=reduce, device=accelerator.device)
    if eval_loss is not None:
        state.eval_history.append((state.step, eval_loss))
        if reporter:
            reporter.update(progress={"eval_loss": eval_loss})


def report_interval(
    reporter: Reporter,
    state: TrainerState,
    settings: LoopSettings,
    scheduler: Any,
    timer: StepTimer,
    interval_losses: list[float],
) -> None:
    """The progress line and report of a logged step: the mean loss since the last one."""
    reporter.publish(
        line=True,
        state="Training",
        progress={
            "step": state.step,
            "total_steps": settings.total_steps,
            "epoch": round(state.epoch, 4),
            "loss": sum(interval_losses) / len(interval_losses),
            "learning_rate": float(scheduler.get_last_lr()[0]),
            "tokens_per_second": timer.take_rate(),
            "eta_seconds": timer.eta(settings.total_steps - state.step),
        },
    )
