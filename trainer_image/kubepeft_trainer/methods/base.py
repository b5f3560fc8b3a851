"""The interface every PEFT method implements, and the registry that finds one by ``spec.method``."""

from __future__ import annotations

import importlib
import logging
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kubepeft.api.models import PeftJobSpec
from kubepeft_trainer.errors import PermanentTrainerError

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel

log = logging.getLogger(__name__)


class PeftMethod(ABC):
    """One PEFT method: how to prepare the base model and which peft config to wrap it with."""

    name: ClassVar[str]
    """The ``spec.method`` value."""
    supports_merge: ClassVar[bool]
    """Whether the trained adapter can be merged into the base weights."""
    peft_type: ClassVar[str]
    """peft's ``PeftType`` value of the adapters this method trains (checked when starting from one)."""
    quantized_base: ClassVar[bool] = False
    """Whether the base loads quantized by bitsandbytes (its weights are placed at load time)."""
    fresh_adapter_is_identity: ClassVar[bool] = True
    """Whether a new, untrained adapter leaves the model's outputs unchanged (LoRA: B = 0), so the
    "eval loss before" may be measured with it in place."""

    @abstractmethod
    def peft_config(self, model: Any, tokenizer: Any, spec: PeftJobSpec) -> PeftConfig:
        """The peft config for a new adapter."""

    def prepare_base(self, model: Any, spec: PeftJobSpec) -> Any:
        """Adjust the loaded base model before the adapter is added (QLoRA: k-bit preparation)."""
        return model

    def apply(self, model: Any, tokenizer: Any, spec: PeftJobSpec, *, adapter_path: Path | None = None) -> PeftModel:
        """The trainable PeftModel: a new adapter, or (``adapter_path``) training continues an existing one."""
        from peft import PeftModel, get_peft_model

        model = self.prepare_base(model, spec)
        if adapter_path is None:
            try:
                peft_model: PeftModel = get_peft_model(model, self.peft_config(model, tokenizer, spec))
            except ValueError as exc:  # e.g. target modules not found in the model
                raise PermanentTrainerError(f"spec.{self.config_field()}: {exc}") from None
        else:
            kind = adapter_peft_type(adapter_path, "adapters.sources[0]")
            if kind != self.peft_type:
                raise PermanentTrainerError(
                    f"adapters.sources[0]: a {kind} adapter cannot be trained further with method {self.name}"
                )
            log.info("continuing adapter %s (its own config applies, not spec.%s)", adapter_path, self.config_field())
            peft_model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
        trainable, total = peft_model.get_nb_trainable_parameters()
        log.info("method %s: %d of %d parameters trainable", self.name, trainable, total)
        return peft_model

    def config_field(self) -> str:
        return "lora"


def adapter_peft_type(adapter_path: Path, what: str) -> str:
    """peft's type (``LORA``, ``PROMPT_TUNING``, ...) of the adapter in a folder; a permanent error
    naming ``what`` when the folder holds no PEFT adapter. Every check of an adapter's kind (to
    continue training it, to merge it) starts here."""
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(str(adapter_path))
    except (OSError, ValueError) as exc:
        raise PermanentTrainerError(f"{what}: {adapter_path} is not a PEFT adapter: {exc}") from None
    return str(getattr(config.peft_type, "value", config.peft_type))


def _module_name(method: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


def get_method(spec: PeftJobSpec) -> PeftMethod:
    """The method named by ``spec.method`` (module ``kubepeft_trainer.methods.<snake_case name>``)."""
    module_name = f"kubepeft_trainer.methods.{_module_name(spec.method)}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise PermanentTrainerError(f"spec.method: unknown method {spec.method!r}") from None
    method: PeftMethod = module.METHOD
    return method
