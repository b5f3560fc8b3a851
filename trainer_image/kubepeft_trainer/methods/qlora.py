"""QLoRA: LoRA on a bitsandbytes 4-bit (NF4/FP4) or 8-bit frozen base.

The base arrives quantized from :func:`~kubepeft_trainer.model_loading.load_base_model`. Merging
never touches the quantized weights: the adapter is merged into a full-precision copy of the base
in a separate step (:mod:`kubepeft_trainer.merge`).
"""

from __future__ import annotations

from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft_trainer.bnb_cpu import disable_cpu_inference_repack
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.methods.lora import Lora


def is_quantized(model: Any) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


class QLora(Lora):
    name = "qlora"
    supports_merge = True
    peft_type = "LORA"
    quantized_base = True

    def prepare_base(self, model: Any, spec: PeftJobSpec) -> Any:
        from peft import prepare_model_for_kbit_training

        if not is_quantized(model):
            raise PermanentTrainerError("spec.quantization: method qlora needs a base loaded in 4 or 8 bits")
        disable_cpu_inference_repack(model)
        checkpointing = bool(spec.training and spec.training.gradient_checkpointing)
        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        )


METHOD = QLora()
