"""The optimizer and learning-rate schedule a job names (``training.optimizer``, ``training.lrScheduler``)."""

from __future__ import annotations

from typing import Any

from kubepeft.api.models import TrainingSpec

SCHEDULER_NAMES = {
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant",
    "constantWithWarmup": "constant_with_warmup",
}
"""The API's scheduler names -> transformers' ``get_scheduler`` names."""


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


def build_optimizer_and_schedule(training: TrainingSpec, params: list[Any], total_steps: int) -> tuple[Any, Any]:
    """The job's optimizer over ``params`` and its scheduler over ``total_steps`` optimizer steps."""
    from transformers import get_scheduler

    optimizer = build_optimizer(training.optimizer, params, training.learning_rate, training.weight_decay)
    scheduler = get_scheduler(
        SCHEDULER_NAMES[training.lr_scheduler],
        optimizer,
        num_warmup_steps=training.warmup_steps,
        num_training_steps=total_steps,
    )
    return optimizer, scheduler
