"""Token-weighted loss and evaluation (loss + perplexity on the validation split, all ranks).

The loss of a batch is the SUM of per-token cross entropies; callers divide by the global token
count so that every token weighs the same whatever rank or micro-batch it landed in (the plain
per-rank mean does not: a 2-rank run then drifts from the 1-rank run, see the environment guide).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from kubepeft_trainer.bnb_cpu import no_cpu_weight_repacking
from kubepeft_trainer.data.batches import model_inputs

IGNORE_INDEX = -100


def count_label_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry loss in a causal LM batch (labels are shifted by one)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum().item())


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross entropies over the labelled positions.

    Prompt tuning prepends virtual tokens: the logits are then longer than the labels and the
    extra leading positions are sliced off.
    """
    logits = logits[:, -labels.shape[1] :, :]
    # Shift the labels, not the logits: one ignored label appended spares a copy of the whole
    # (batch, seq, vocab) logits tensor every micro-step (as transformers' own causal-LM loss does).
    shift_labels = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


@contextlib.contextmanager
def base_model_only(model: torch.nn.Module) -> Iterator[None]:
    """Forwards go through the base model alone: LoRA deltas and soft prompts switched off.

    The "eval loss before" of a fresh adapter is the base model's: a prompt-tuning model with its
    initialised virtual tokens is already a different model. ``model`` is the unwrapped PeftModel
    (peft swaps its ``forward``, which a DDP or DeepSpeed wrapper then calls)."""
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        yield
        return
    with disable():
        yield


def evaluate(
    model: torch.nn.Module,
    batches: Sequence[tuple[dict[str, torch.Tensor], bool]],
    *,
    all_reduce: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
) -> tuple[float | None, float | None]:
    """(mean token loss, perplexity) over every rank's batches; (None, None) without tokens.

    Every rank must call this with the same number of batches (it all-reduces, and ZeRO-3
    gathers parameters collectively in every forward); batches flagged False are padding.
    """
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad(), no_cpu_weight_repacking(model):
        for batch, counts in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**model_inputs(batch))
            if counts:
                totals[0] += token_loss_sum(out.logits, batch["labels"]).double()
                totals[1] += count_label_tokens(batch["labels"])
    totals = all_reduce(totals)
    if was_training:
        model.train()
    if totals[1].item() == 0:
        return None, None
    loss = float(totals[0].item() / totals[1].item())
    return loss, float(math.exp(min(loss, 50.0)))


def make_eval_batches(
    items: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, torch.Tensor]],
    batch_size: int,
    *,
    rank: int,
    world: int,
) -> list[tuple[dict[str, torch.Tensor], bool]]:
    """This rank's share of ``items`` (every ``world``-th) in batches, padded with non-counting
    batches so that every rank runs the same number of forwards."""
    if not items:
        return []
    per_rank = math.ceil(len(items) / world)
    steps = math.ceil(per_rank / batch_size)
    mine = list(items)[rank::world]
    out = [(collate(mine[i : i + batch_size]), True) for i in range(0, len(mine), batch_size)]
    while len(out) < steps:
        out.append((collate([items[0]]), False))
    return out
