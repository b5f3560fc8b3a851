"""Packing benchmark: real (non-padding) tokens per second with padding-free packing vs right-padding.

One chat-style dataset (user + assistant turns through the tiny tokenizer's chat template, loss on
the assistant turn) with lengths spread uniformly from 10% to 100% of ``maxSeqLength`` goes
through the trainer's own data stage twice -- ``training.packing`` off and on -- and then through
``kubepeft_trainer.loop.train`` (the loop a rank runs: token-weighted loss, accelerate,
clipping, scheduler) with the same randomly initialised Llama + LoRA, one thread, SDPA. Each side
takes exactly one pass over the same examples, in micro-batches of ``--batch`` sequences (padded)
or ``--batch`` packed rows, so both train on the same number of real tokens. On CPU the rate is
real tokens per CPU-second of this (single-threaded) process -- the same as per wall-second on an
idle machine, and unaffected by other processes on a shared one; the loop's own wall clock is
printed beside it (and is the rate on CUDA). The sides alternate ``--rounds`` times and the best
of each is kept.

Last line: ``RESULT packing ratio=<packed / padded real tok/s> packed_tokens_per_s=... padded_tokens_per_s=...``
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainer_image"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from trainer_overhead import build_model  # noqa: E402  (the same benchmark model)

Example = dict[str, list[int]]


def chat_records(n: int, max_len: int, seed: int) -> list[dict[str, Any]]:
    """Conversations whose rendered length is spread uniformly over 10%..100% of ``max_len`` tokens
    (one letter word is one token of the tiny tokenizer; the template adds about 8)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    records = []
    for _ in range(n):
        words = max(2, rng.randint(max_len // 10, max_len) - 8)
        prompt = max(1, int(words * rng.uniform(0.2, 0.5)))
        text = [rng.choice(letters) for _ in range(words)]
        user, assistant = " ".join(text[:prompt]), " " + " ".join(text[prompt:])
        records.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})
    return records


def datasets(tokenizer: Any, records: list[dict[str, Any]], max_len: int) -> tuple[list[Example], list[Example]]:
    """(plain examples, packed rows) through the trainer's data stage."""
    from kubepeft_trainer.data import build_datasets

    from kubepeft.api.models import DatasetSpec, TrainingSpec

    ds = DatasetSpec.model_validate({"uri": "/bench.jsonl", "template": "chat", "validationSplit": 0.0})
    out = []
    for packing in (False, True):
        training = TrainingSpec.model_validate({"maxSteps": 1, "maxSeqLength": max_len, "packing": packing})
        train, _ = build_datasets(ds, training, tokenizer, records, seed=0)
        out.append(list(train))
    return out[0], out[1]


def micro_batches(items: list[Example], batch: int, seed: int) -> list[dict[str, Any]]:
    """One pass over ``items`` in seeded order, ``batch`` per micro-batch (the last one may be short),
    each wrapped as one loop item: ``input_ids`` (all of the batch's, for the loop's token count) and
    the sequences themselves."""
    order = list(items)
    random.Random(seed).shuffle(order)
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    return [{"input_ids": [t for e in c for t in e["input_ids"]], "sequences": c} for c in chunks]


@dataclass(frozen=True)
class Rate:
    tokens: int
    wall_seconds: float  # the loop's own step clock
    cpu_seconds: float  # this process's CPU time over the same pass

    def per_second(self, *, cpu: bool) -> float:
        return self.tokens / (self.cpu_seconds if cpu else self.wall_seconds)


def loop_rate(batches: list[dict[str, Any]], pad_token_id: int, args: argparse.Namespace) -> Rate:
    """Real tokens and seconds of one timed pass through ``kubepeft_trainer.loop.train`` (after warmup)."""
    from accelerate import Accelerator
    from kubepeft_trainer.checkpoints import TrainerState
    from kubepeft_trainer.data import collate
    from kubepeft_trainer.loop import LoopSettings, StepTimer, train
    from kubepeft_trainer.sampling import DataPlan
    from transformers import get_scheduler

    batcher = partial(collate, pad_token_id=pad_token_id)

    def collate_one(wrapped: list[Any]) -> dict[str, torch.Tensor]:
        return batcher(wrapped[0]["sequences"])

    model = build_model(args.vocab, args.seed, args.max_len)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    total = args.warmup + len(batches)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=total)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    warm = DataPlan(len(batches), 1, 1, 1, args.seed + 1)
    warm_settings = LoopSettings(args.warmup, 10**9, 10**9, None, 1.0, False)
    train(accelerator, model, optimizer, scheduler, warm, batches, collate_one, warm_settings, TrainerState())
    # Steps 0 .. n-1 of a plan over the n micro-batches are its epoch 0: every micro-batch once.
    plan = DataPlan(len(batches), 1, 1, 1, args.seed)
    settings = LoopSettings(len(batches), 10**9, 10**9, None, 1.0, False)
    timer = StepTimer()
    cpu_started = time.process_time()
    train(accelerator, model, optimizer, scheduler, plan, batches, collate_one, settings, TrainerState(), timer=timer)
    cpu_seconds = time.process_time() - cpu_started
    return Rate(timer.tokens, timer.seconds, cpu_seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=384)
    parser.add_argument("--max-len", type=int, default=256, help="maxSeqLength")
    parser.add_argument("--batch", type=int, default=8, help="sequences (padded) or rows (packed) per micro-batch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    from kubepeft_trainer.tiny_model import build_tiny_model
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:  # only the tiny tokenizer (and its chat template) is used
        tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(Path(tmp), pretrain_steps=0))
    args.vocab = len(tokenizer)
    plain, rows = datasets(tokenizer, chat_records(args.examples, args.max_len, args.seed), args.max_len)
    real = sum(len(e["input_ids"]) for e in plain)
    padded_width = sum(
        len(b["sequences"]) * max(len(e["input_ids"]) for e in b["sequences"])
        for b in micro_batches(plain, args.batch, args.seed)
    )
    lengths = sorted(len(e["input_ids"]) for e in plain)
    print(
        f"{len(plain)} chat examples, {lengths[0]}..{lengths[-1]} tokens (maxSeqLength {args.max_len}), "
        f"{real} real tokens; padded batches of {args.batch}: {real / padded_width:.2f} real; "
        f"{len(rows)} packed rows, {real / (len(rows) * args.max_len):.2f} full; threads {torch.get_num_threads()}"
    )
    # One thread on CPU: CPU seconds equal wall seconds on an idle machine and, unlike them, do not
    # count the time other processes on a shared machine take. On CUDA: the loop's wall clock.
    cpu = not torch.cuda.is_available()
    clock = "CPU" if cpu else "wall"
    padded: list[Rate] = []
    packed: list[Rate] = []
    for i in range(args.rounds):
        padded.append(loop_rate(micro_batches(plain, args.batch, args.seed), tokenizer.pad_token_id, args))
        packed.append(loop_rate(micro_batches(rows, args.batch, args.seed), tokenizer.pad_token_id, args))
        assert padded[-1].tokens == packed[-1].tokens == real, (padded[-1], packed[-1], real)
        print(
            f"round {i + 1} ({real} real tokens each): padded {padded[-1].per_second(cpu=cpu):.0f} tok/{clock}-s "
            f"({padded[-1].per_second(cpu=False):.0f} tok/wall-s), packed {packed[-1].per_second(cpu=cpu):.0f} "
            f"tok/{clock}-s ({packed[-1].per_second(cpu=False):.0f} tok/wall-s)"
        )
    best_padded = max(r.per_second(cpu=cpu) for r in padded)
    best_packed = max(r.per_second(cpu=cpu) for r in packed)
    print(
        f"RESULT packing ratio={best_packed / best_padded:.3f} packed_tokens_per_s={best_packed:.0f} "
        f"padded_tokens_per_s={best_padded:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
