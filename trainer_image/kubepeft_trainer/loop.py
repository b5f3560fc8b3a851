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
    rank = accelerator.process_index
    device = accelerator.device
    gas = plan.gradient_accumulation_steps
    trainable = [p for p in model.parameters() if p.requires_grad]
    timer = timer or StepTimer()
    interval_losses: list[float] = []
    model.train()
    while state.step < settings.total_steps:
        started = time.perf_counter()
        items = [[train_items[i] for i in mb] for mb in plan.rank_micro_batches(state.step, rank)]
        micro = [collate(mb) for mb in items]
        counts = torch.tensor(
            [sum(count_label_tokens(b["labels"]) for b in micro), sum(count_tokens(mb) for mb in items)],
            dtype=torch.float64,
            device=device,
        )
        global_labels, global_tokens = reduce(counts).tolist()
        scale = plan.world_size * gas / max(global_labels, 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for batch in micro:
            batch = {k: v.to(device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                out = model(**model_inputs(batch))
                batch_loss = token_loss_sum(out.logits, batch["labels"])
                accelerator.backward(batch_loss * scale)
                # DeepSpeed clips inside engine.step (gradient_clipping in its config).
                if accelerator.sync_gradients and settings.max_grad_norm > 0 and not settings.deepspeed:
                    accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += batch_loss.detach().double()
        # DDP: one real scheduler step per optimizer step (step_scheduler_with_optimizer=False);
        # DeepSpeed: a no-op wrapper, the engine stepped the scheduler.
        scheduler.step()
        step_loss = float(reduce(loss_sum).item() / max(global_labels, 1.0))
        timer.add(int(global_tokens), time.perf_counter() - started)
        state.step += 1
        state.epoch = plan.epoch_at(state.step)
        state.tokens_seen += int(global_tokens)
        state.loss_history.append((state.step, step_loss))
        interval_losses.append(step_loss)

        last = state.step == settings.total_steps
        if settings.eval_every and state.step % settings.eval_every == 0 and eval_batches and not last:
            eval_loss, _ = evaluate(model, eval_batches, all_reduce=reduce, device=device)
            if eval_loss is not None:
                state.eval_history.append((state.step, eval_loss))
                if reporter:
                    reporter.update(progress={"eval_loss": eval_loss})
        if state.step % settings.log_every == 0 or last:
            if reporter:
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
            interval_losses = []
        if checkpoints is not None and (state.step % settings.checkpoint_every == 0 or last):
            checkpoints.save(state)
    return state
