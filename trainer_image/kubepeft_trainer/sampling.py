"""Deterministic data order: which examples every rank sees at every optimizer step.

The examples form one endless stream: epoch ``e`` is a permutation of the training set seeded
with ``seed + e``, epochs follow each other. Optimizer step ``s`` consumes the global batch
``stream[s*G : (s+1)*G]`` with ``G = per_device_batch * grad_accum * world_size``; rank ``r``
takes every ``world_size``-th example of it (as DistributedSampler does) and cuts that into
``grad_accum`` micro-batches.

Consequences:
* the data position is the step number alone: resume restores it exactly;
* a global batch is the same set of examples whatever the world size, so N ranks compute the
  same gradient as one rank with an N-times larger batch (with the token-weighted loss);
* no partial batches: every rank always has work, so collectives never wait on an idle rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class DataPlan:
    num_examples: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    world_size: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * self.world_size

    def epoch_at(self, step: int) -> float:
        """Fractional epochs consumed after ``step`` optimizer steps."""
        return step * self.global_batch / self.num_examples

    def total_steps(self, *, max_steps: int | None, epochs: float | None) -> int:
        if max_steps is not None:
            return max_steps
        if epochs is None:
            raise ValueError("one of max_steps and epochs is required")
        return max(1, math.ceil(epochs * self.num_examples / self.global_batch))

    def global_indices(self, step: int) -> list[int]:
        """Example indices of the global batch of optimizer step ``step`` (0-based)."""
        start = step * self.global_batch
        out: list[int] = []
        position = start
        while len(out) < self.global_batch:
            epoch, offset = divmod(position, self.num_examples)
            perm = _permutation(self.num_examples, self.seed + epoch)
            take = min(self.global_batch - len(out), self.num_examples - offset)
            out.extend(perm[offset : offset + take])
            position += take
        return out

    def rank_micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """The ``gradient_accumulation_steps`` micro-batches (example indices) of ``rank`` at ``step``."""
        mine = self.global_indices(step)[rank :: self.world_size]
        b = self.per_device_batch_size
        return [mine[i * b : (i + 1) * b] for i in range(self.gradient_accumulation_steps)]


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randperm(n, generator=generator).tolist())
