"""Prompt-bank task switching vs reloading base + adapter per task, same tasks, same prompts.

Builds a small random Llama (34M parameters by default, saved as safetensors) and three prompt-tuning
adapters (one per task), then answers the same prompts task after task, two ways:

* switch: :class:`kubepeft_trainer.prompt_bank.PromptBank` -- the base loaded once, every adapter
  loaded once with peft's ``load_adapter``, each task selected with ``set_adapter``;
* reload: for every answer, load the base and that task's adapter from disk, then answer
  (what a deployment without a bank does when the task changes).

Every answer of the switching bank is checked equal to the fresh load's (greedy decoding). Timed
per answer: the time until the task's model is ready (``set_adapter`` vs loading base + adapter),
which is what a bank saves, and, for context, the whole answer including a short greedy generation
(identical work both ways, so that ratio shrinks as generations get longer). Best of two passes.

Last line: ``RESULT task_switch ratio=<reload ready / switch ready> switch_ms=... reload_ms=... end_to_end_ratio=...``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

warnings.filterwarnings("ignore", message="Position ids are not supported")  # peft, on every prompt-tuning generate

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


def parameter_count(base: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(base / "model.safetensors").values())


def plan(rounds: int) -> list[tuple[str, str]]:
    return [(task, PROMPTS[i % len(PROMPTS)]) for i in range(rounds) for task in TASKS]


def time_switch(base: Path, adapters: dict[str, Path], answers: list[tuple[str, str]], tokens: int) -> Timing:
    from kubepeft_trainer.prompt_bank import PromptBank, greedy

    bank = PromptBank(base, adapters)  # loaded once, outside the timed answers (that is the point)
    bank.generate(TASKS[0], PROMPTS[0], tokens)  # warm-up
    ready = answer = 0.0
    out = []
    for task, prompt in answers:
        start = time.perf_counter()
        bank.use(task)
        ready += time.perf_counter() - start
        start = time.perf_counter()
        out.append(greedy(bank.model, bank.tokenizer, prompt, tokens))
        answer += time.perf_counter() - start
    return Timing(ready / len(answers), (ready + answer) / len(answers), out)


def time_reload(base: Path, adapters: dict[str, Path], answers: list[tuple[str, str]], tokens: int) -> Timing:
    from kubepeft_trainer.prompt_bank import greedy, load_base
    from peft import PeftModel

    ready = answer = 0.0
    out = []
    for task, prompt in answers:
        start = time.perf_counter()
        tokenizer, model = load_base(base)
        model = PeftModel.from_pretrained(model, str(adapters[task]))
        model.eval()
        ready += time.perf_counter() - start
        start = time.perf_counter()
        out.append(greedy(model, tokenizer, prompt, tokens))
        answer += time.perf_counter() - start
    return Timing(ready / len(answers), (ready + answer) / len(answers), out)


@dataclass(frozen=True)
class Timing:
    ready_s: float
    """Seconds per answer until the task's model is ready (switch, or load base + adapter)."""
    total_s: float
    """Seconds per answer including the greedy generation (identical work both ways)."""
    answers: list[str]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="passes over the tasks per measurement")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=8, help="greedy tokens per answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp), args.hidden, args.layers)
        adapters = build_adapters(base, Path(tmp) / "adapters")
        answers = plan(args.rounds)
        switch = min((time_switch(base, adapters, answers, args.tokens) for _ in range(2)), key=lambda t: t.ready_s)
        reload = min((time_reload(base, adapters, answers, args.tokens) for _ in range(2)), key=lambda t: t.ready_s)
        params = parameter_count(base)
    if switch.answers != reload.answers:
        mismatched = [i for i, (a, b) in enumerate(zip(switch.answers, reload.answers, strict=True)) if a != b]
        print(f"MISMATCH: answers {mismatched} differ between switching and fresh loads")
        return 1
    distinct = len({(task, out) for (task, _), out in zip(answers, switch.answers, strict=True)})
    print(f"base: {params / 1e6:.1f}M parameters; {len(TASKS)} prompt adapters of 8 virtual tokens")
    print(f"{len(answers)} answers equal to fresh loads ({distinct} distinct task/answer pairs)")
    print(
        f"ready for a task: switch {switch.ready_s * 1000:.3f} ms, reload base + adapter {reload.ready_s * 1000:.1f} ms"
    )
    print(
        f"per answer incl. {args.tokens} greedy tokens: switch {switch.total_s * 1000:.1f} ms, "
        f"reload {reload.total_s * 1000:.1f} ms (ratio {reload.total_s / switch.total_s:.1f})"
    )
    ratio = reload.ready_s / switch.ready_s
    print(
        f"RESULT task_switch ratio={ratio:.1f} switch_ms={switch.ready_s * 1000:.3f} "
        f"reload_ms={reload.ready_s * 1000:.1f} end_to_end_ratio={reload.total_s / switch.total_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
