"""LoRA (and DoRA): low-rank updates on the chosen linear layers; mergeable into the base."""

from __future__ import annotations

from typing import Any

from kubepeft.api.models import LoraSpec, PeftJobSpec
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.methods.base import PeftMethod

ALL_LINEAR = "all-linear"


def lora_config(lora: LoraSpec) -> Any:
    """peft's LoraConfig for a causal LM. ``all-linear`` adapts every linear layer but the output head."""
    from peft import LoraConfig

    targets: str | list[str] = list(lora.target_modules)
    if ALL_LINEAR in targets:
        if len(targets) > 1:
            raise PermanentTrainerError(f"spec.lora.targetModules: {ALL_LINEAR!r} cannot be combined with module names")
        targets = ALL_LINEAR
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        use_dora=lora.use_dora,
    )


class Lora(PeftMethod):
    name = "lora"
    supports_merge = True
    peft_type = "LORA"

    def peft_config(self, model: Any, tokenizer: Any, spec: PeftJobSpec) -> Any:
        return lora_config(spec.effective_lora())


METHOD = Lora()
