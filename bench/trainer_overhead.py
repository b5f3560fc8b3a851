"""Trainer overhead: the kubepeft training loop vs a bare PyTorch LoRA loop, same model, same run.

Both loops train the same randomly initialised few-M-parameter Llama with the same LoRA config,
data, batch and step count on one thread. The kubepeft side is ``kubepeft_trainer.loop.train``
driven by accelerate exactly as a rank runs it (token-weighted loss, all-reduces, accumulate,
clipping, scheduler, progress bookkeeping); checkpoints and export are not part of the timed
steps (they are I/O, reported by the storage benchmark). The loops alternate twice and the best
of each is kept, to be fair on a shared machine.

Also printed: process start -> first optimizer step of ``kubepeft train`` (a real subprocess run on
the tiny model, when its building blocks are installed) vs a bare ``import torch, transformers, peft``.

Last line: ``RESULT trainer ratio=<kubepeft tok/s / bare tok/s> tokens_per_s=... bare_tokens_per_s=... peak_rss_mb=...``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubepeft.net import free_port

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainer_image"))
sys.path.insert(0, str(REPO))


def build_model(vocab: int, seed: int, max_len: int = 512) -> Any:
    """The benchmarks' LoRA model: a 4-layer Llama (hidden 256) with r=16 on every linear layer."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_len,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    base = LlamaForCausalLM(config)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def make_items(n: int, seq: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        length = int(torch.randint(seq // 2, seq + 1, (1,), generator=g))
        ids = torch.randint(3, vocab, (length,), generator=g).tolist()
        items.append({"input_ids": ids, "labels": list(ids)})
    return items


def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(x["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def bare_loop(items: list[Any], args: argparse.Namespace) -> float:
    """The reference: the shortest correct LoRA loop (HF mean loss, AdamW, clipping, cosine)."""
    from transformers import get_scheduler

    model = build_model(args.vocab, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=args.steps + args.warmup)
    model.train()
    tokens, seconds = 0, 0.0
    for step in range(args.steps + args.warmup):
        started = time.perf_counter()  # collating is part of a step, in both loops
        batch = collate(items[(step * args.batch) % len(items) :][: args.batch])
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            seconds += time.perf_counter() - started
            tokens += int(batch["attention_mask"].sum())
    return tokens / seconds


def kubepeft_loop(items: list[Any], args: argparse.Namespace) -> float:
    from accelerate import Accelerator
    from kubepeft_trainer.checkpoints import TrainerState
    from kubepeft_trainer.loop import LoopSettings, StepTimer, train
    from kubepeft_trainer.sampling import DataPlan
    from transformers import get_scheduler

    model = build_model(args.vocab, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    total = args.steps + args.warmup
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=total)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), step_scheduler_with_optimizer=False)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    plan = DataPlan(len(items), args.batch, 1, 1, args.seed)
    state = TrainerState(total_steps=total)
    settings = LoopSettings(args.warmup, 10**9, 10**9, None, 1.0, False)
    state = train(accelerator, model, optimizer, scheduler, plan, items, collate, settings, state)
    settings.total_steps = total
    timer = StepTimer()  # the loop's own clock (step time, checkpoint/eval excluded)
    train(accelerator, model, optimizer, scheduler, plan, items, collate, settings, state, timer=timer)
    return timer.tokens / timer.seconds


def import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, peft"], check=True)
    return time.perf_counter() - started


def first_step_seconds() -> float | None:
    """Start of ``kubepeft train`` -> its first optimizer step (from the progress file), tiny model."""
    try:
        from kubepeft_trainer.tiny_model import build_tiny_model

        from kubepeft.contract import build_trainer_config
        from kubepeft.tiny_task import tiny_training_records, write_dataset
    except ImportError:
        return None
    from kubepeft.api.models import PeftJobSpec

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_model(root / "model", pretrain_steps=0)
        data = write_dataset(root / "data.jsonl", tiny_training_records(32), "jsonl")
        spec = PeftJobSpec.model_validate(
            {
                "method": "lora",
                "model": {"uri": str(model_dir), "dtype": "float32"},
                "dataset": {"uri": str(data), "template": "promptResponse", "validationSplit": 0},
                "training": {"maxSteps": 2, "logEverySteps": 1, "precision": "fp32", "maxSeqLength": 32},
                "resources": {"gpusPerNode": 0},
                "output": {"uri": str(root / "out")},
            }
        )
        config_path = root / "config.json"
        config_path.write_text(build_trainer_config(spec, "bench", "startup").to_json())
        progress = root / "progress.jsonl"
        env = {**os.environ, "KUBEPEFT_PROGRESS_FILE": str(progress), "KUBEPEFT_MASTER_PORT": str(free_port())}
        started = time.time()
        cmd = [sys.executable, "-m", "kubepeft", "train", "--config", str(config_path), "--workdir", str(root / "w")]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if run.returncode != 0 or not progress.exists():
            print(f"kubepeft train failed ({run.returncode}): {run.stderr[-2000:]}", file=sys.stderr)
            return None
        for line in progress.read_text().splitlines():
            report = json.loads(line)
            if report.get("progress", {}).get("step", 0) >= 1:
                from datetime import datetime

                return datetime.strptime(report["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() - started
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-startup", action="store_true", help="skip the kubepeft train startup measurement")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    items = make_items(args.batch * (args.steps + args.warmup), args.seq, args.vocab, args.seed)
    params = sum(p.numel() for p in build_model(args.vocab, args.seed).parameters())
    print(
        f"model: {params / 1e6:.1f}M parameters (LoRA r=16 all-linear), batch {args.batch}, seq <= {args.seq}, "
        f"{args.steps} timed steps, threads {torch.get_num_threads()}"
    )
    bare, ours = [], []
    for i in range(args.rounds):
        bare.append(bare_loop(items, args))
        ours.append(kubepeft_loop(items, args))
        print(f"round {i + 1}: bare {bare[-1]:.0f} tok/s, kubepeft {ours[-1]:.0f} tok/s")
    best_bare, best_ours = max(bare), max(ours)

    if not args.skip_startup:
        imports = import_seconds()
        first = first_step_seconds()
        shown = f"{first:.1f}s" if first is not None else "n/a"
        print(
            f"startup: bare 'import torch, transformers, peft' {imports:.1f}s; "
            f"'kubepeft train' start -> first step {shown} (includes accelerate launch + rank start + model load)"
        )
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"RESULT trainer ratio={best_ours / best_bare:.3f} tokens_per_s={best_ours:.0f} "
        f"bare_tokens_per_s={best_bare:.0f} peak_rss_mb={peak_rss_mb:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
