"""Prompt tuning: trainable virtual-token embeddings prepended to every input; the base is untouched.

The model's logits include the virtual-token positions: callers comparing logits slice off the
first ``num_virtual_tokens`` positions. Not mergeable (there are no weight deltas).
"""

from __future__ import annotations

from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft_trainer.methods.base import PeftMethod


class PromptTuning(PeftMethod):
    name = "promptTuning"
    supports_merge = False
    peft_type = "PROMPT_TUNING"
    # Even initialised virtual tokens change every forward.
    fresh_adapter_is_identity = False

    def peft_config(self, model: Any, tokenizer: Any, spec: PeftJobSpec) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        settings = spec.effective_prompt_tuning()
        if settings.init == "text":
            # peft tokenizes the init text itself, loading the tokenizer from this path.
            return PromptTuningConfig(
                task_type="CAUSAL_LM",
                num_virtual_tokens=settings.num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.TEXT,
                prompt_tuning_init_text=settings.init_text,
                tokenizer_name_or_path=str(tokenizer.name_or_path),
            )
        return PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=settings.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )

    def config_field(self) -> str:
        return "promptTuning"


METHOD = PromptTuning()
