"""A prompt bank in memory: one frozen base model, every task's prompt adapter, switched by name.

``bank.json`` (written by a prompt-tuning sweep over datasets) maps task -> adapter URI + sha256 of
its weights + eval loss. :func:`fetch_bank` downloads the base model and every adapter, each
verified against its manifest, and checks each adapter's weights against the bank's sha256;
:class:`PromptBank` loads the base once, adds every adapter with peft's ``load_adapter`` and
switches with ``set_adapter`` -- no reload per task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepeft.storage import Store, sha256_file

BANK_FORMAT = "kubepeft.dev/prompt-bank/v1"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class BankError(ValueError):
    """The bank is malformed, names an unknown task, or an adapter does not match its sha256."""


@dataclass(frozen=True)
class LocalBank:
    base_dir: Path
    adapters: dict[str, Path]
    eval_loss: dict[str, float | None]


def parse_bank(text: str, source: str) -> dict[str, Any]:
    try:
        bank = json.loads(text)
    except ValueError as error:
        raise BankError(f"{source}: not JSON: {error}") from None
    if not isinstance(bank, dict) or bank.get("format") != BANK_FORMAT or not isinstance(bank.get("tasks"), dict):
        raise BankError(f"{source}: not a prompt bank ({BANK_FORMAT})")
    if not bank["tasks"]:
        raise BankError(f"{source}: the bank has no tasks")
    return bank


def fetch_bank(store: Store, bank_uri: str, local: Path) -> LocalBank:
    """Download and verify the base model and every adapter of the bank into ``local``."""
    bank = parse_bank(store.get_bytes(bank_uri).decode("utf-8"), bank_uri)
    base_dir = local / "base"
    store.download_dir(bank["baseModel"], base_dir, verify=True)
    adapters: dict[str, Path] = {}
    for task, entry in sorted(bank["tasks"].items()):
        target = local / "adapters" / task
        store.download_dir(entry["adapter"], target, verify=True)
        digest = sha256_file(target / ADAPTER_WEIGHTS)
        if digest != entry["sha256"]:
            raise BankError(f"{bank_uri}: task {task}: adapter sha256 {digest} != bank's {entry['sha256']}")
        adapters[task] = target
    return LocalBank(base_dir, adapters, {t: e.get("evalLoss") for t, e in bank["tasks"].items()})


def load_base(base_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.eval()
    return tokenizer, model


def greedy(model: Any, tokenizer: Any, prompt: str | list[dict[str, str]], max_new_tokens: int) -> str:
    """Greedy continuation of ``prompt``, text or chat messages (deterministic: the outputs are
    compared across loads)."""
    import torch

    encoded: Any
    if isinstance(prompt, str):
        encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    else:
        encoded = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    input_ids = encoded["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return str(tokenizer.decode(out[0, input_ids.shape[1] :], skip_special_tokens=True))


class PromptBank:
    """The base model loaded once with every task's prompt adapter; ``generate`` switches by name."""

    def __init__(self, base_dir: Path, adapters: dict[str, Path]) -> None:
        from peft import PeftModel

        if not adapters:
            raise BankError("a prompt bank needs at least one adapter")
        self.tokenizer, base = load_base(base_dir)
        first, *rest = sorted(adapters)
        self.model = PeftModel.from_pretrained(base, str(adapters[first]), adapter_name=first)
        for task in rest:
            self.model.load_adapter(str(adapters[task]), adapter_name=task)
        self.model.eval()
        self.tasks = sorted(adapters)

    def use(self, task: str) -> None:
        if task not in self.tasks:
            raise BankError(f"unknown task {task!r}; the bank has: {', '.join(self.tasks)}")
        self.model.set_adapter(task)

    def generate(self, task: str, prompt: str, max_new_tokens: int = 32) -> str:
        self.use(task)
        return greedy(self.model, self.tokenizer, prompt, max_new_tokens)


def fresh_generate(base_dir: Path, adapter_dir: Path, prompt: str, max_new_tokens: int = 32) -> str:
    """The reference: base + one adapter loaded from scratch, then the same greedy decoding."""
    from peft import PeftModel

    tokenizer, base = load_base(base_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return greedy(model, tokenizer, prompt, max_new_tokens)
