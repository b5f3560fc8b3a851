"""Prompt-bank task switching vs reloading base + adapter per task, same tasks, same prompts.

Builds a small random Llama (a few M parameters, saved as safetensors) and three prompt-tuning
adapters (one per task), then answers the same prompts task after task, two ways:

* switch: :class:`kubepeft_trainer.prompt_bank.PromptBank` -- the base loaded once, every adapter
  loaded once with peft's ``load_adapter``, each task selected with ``set_adapter``;
* reload: for every answer, load the base and that task's adapter from disk, then answer
  (what a deployment without a bank does when the task changes).

Every answer of the switching bank is checked equal to the fresh load's (greedy decoding). Timed
per answer (load/switch + a short greedy generation), best of two passes each on a shared machine.

Last line: ``RESULT task_switch ratio=<reload s per answer / switch s per answer> switch_ms=... reload_ms=...``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainer_image"))
sys.path.insert(0, str(REPO))

TASKS = ("down", "up", "skip")
PROMPTS = ("f =", "k =", "q =")


def build_base(out: Path, hidden: int, layers: int) -> Path:
    """The tiny model's tokenizer with a bigger random Llama (the load cost is what is measured)."""
    import torch
    from kubepeft_trainer.tiny_model import build_tiny_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tiny = build_tiny_model(out / "tiny", pretrain_steps=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    base = out / "base"
    LlamaForCausalLM(config).save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    return base


def build_adapters(base: Path, out: Path) -> dict[str, Path]:
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    adapters = {}
    for seed, task in enumerate(TASKS):
        torch.manual_seed(100 + seed)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=8))
        with torch.no_grad():  # distinct prompts per task, so the answers differ
            for param in peft_model.parameters():
                if param.requires_grad:
                    param.normal_(0, 1.0)
        adapters[task] = out / task
        peft_model.save_pretrained(adapters[task], safe_serialization=True)
    return adapters


def plan(rounds: int) -> list[tuple[str, str]]:
    return [(task, PROMPTS[i % len(PROMPTS)]) for i in range(rounds) for task in TASKS]


def time_switch(
    base: Path, adapters: dict[str, Path], answers: list[tuple[str, str]], tokens: int
) -> tuple[float, list[str]]:
    from kubepeft_trainer.prompt_bank import PromptBank

    bank = PromptBank(base, adapters)  # loaded once, outside the timed answers (that is the point)
    bank.generate(TASKS[0], PROMPTS[0], tokens)  # warm-up
    start = time.perf_counter()
    out = [bank.generate(task, prompt, tokens) for task, prompt in answers]
    return (time.perf_counter() - start) / len(answers), out


def time_reload(
    base: Path, adapters: dict[str, Path], answers: list[tuple[str, str]], tokens: int
) -> tuple[float, list[str]]:
    from kubepeft_trainer.prompt_bank import fresh_generate

    start = time.perf_counter()
    out = [fresh_generate(base, adapters[task], prompt, tokens) for task, prompt in answers]
    return (time.perf_counter() - start) / len(answers), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="passes over the tasks per measurement")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=8, help="greedy tokens per answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp), args.hidden, args.layers)
        adapters = build_adapters(base, Path(tmp) / "adapters")
        answers = plan(args.rounds)
        switch: list[Any] = []
        reload: list[Any] = []
        for _ in range(2):  # alternate, keep the best of each
            switch.append(time_switch(base, adapters, answers, args.tokens))
            reload.append(time_reload(base, adapters, answers, args.tokens))
        switch_s, switch_out = min(switch, key=lambda r: r[0])
        reload_s, reload_out = min(reload, key=lambda r: r[0])
    if switch_out != reload_out:
        mismatched = [i for i, (a, b) in enumerate(zip(switch_out, reload_out, strict=True)) if a != b]
        print(f"MISMATCH: answers {mismatched} differ between switching and fresh loads")
        return 1
    distinct = len({(task, out) for (task, _), out in zip(answers, switch_out, strict=True)})
    print(
        f"{len(answers)} answers over {len(TASKS)} tasks equal to fresh loads ({distinct} distinct task/answer pairs)"
    )
    print(f"switch: {switch_s * 1000:.1f} ms per answer; reload base + adapter: {reload_s * 1000:.1f} ms per answer")
    ratio = reload_s / switch_s
    print(f"RESULT task_switch ratio={ratio:.1f} switch_ms={switch_s * 1000:.2f} reload_ms={reload_s * 1000:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
