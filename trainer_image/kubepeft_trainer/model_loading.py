"""Load the base model (fetched by :mod:`kubepeft_trainer.sources`) with its tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubepeft.api.models import PeftJobSpec, QuantizationSpec
from kubepeft_trainer.errors import PermanentTrainerError

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def load_tokenizer(path: Path, *, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The model's tokenizer, right-padded for training, with a pad token (EOS or UNK when it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PermanentTrainerError(f"model {path}: cannot load a tokenizer: {exc}") from None
    if tokenizer.pad_token is None:
        # Padding positions are masked by attention_mask and labels, never by token identity, so
        # reusing EOS (or UNK) as the pad token is safe and avoids resizing the embeddings.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise PermanentTrainerError(f"model {path}: the tokenizer has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    return tokenizer


def base_dtype(spec: PeftJobSpec) -> torch.dtype:
    """The dtype to load the (non-quantized) base weights in: ``model.dtype``, or the training precision for auto."""
    import torch

    name: str = spec.model.dtype
    if name == "auto":
        precision = spec.training.precision if spec.training else "fp32"
        name = PRECISION_DTYPES[precision]
    return getattr(torch, name)  # type: ignore[no-any-return]


def quantization_config(quant: QuantizationSpec) -> BitsAndBytesConfig:
    import torch
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, quant.compute_dtype),
    )


def load_base_model(path: Path, spec: PeftJobSpec, *, device_map: Any = None) -> PreTrainedModel:
    """The base causal LM for training: quantized by bitsandbytes for qlora, else in :func:`base_dtype`."""

    kwargs: dict[str, Any] = {"dtype": base_dtype(spec), "trust_remote_code": spec.model.trust_remote_code}
    attention = packed_attention_implementation(spec)
    if attention is not None:
        kwargs["attn_implementation"] = attention
    if spec.method == "qlora":
        if spec.quantization is None:
            raise PermanentTrainerError("spec.quantization: required for method qlora")
        kwargs["quantization_config"] = quantization_config(spec.quantization)
        if device_map is None:
            device_map = _kbit_device_map()
    if device_map is not None:
        kwargs["device_map"] = device_map
    return load_causal_lm(path, **kwargs)


def packed_attention_implementation(spec: PeftJobSpec, *, cuda: bool | None = None) -> str | None:
    """``flash_attention_2`` for packed training on CUDA in half precision when flash-attn is installed:
    its varlen kernel runs a flattened micro-batch without the dense block-diagonal mask SDPA
    needs. Otherwise None: the library's default (SDPA), which handles packed rows through masks."""
    import importlib.util

    import torch

    if spec.training is None or not spec.training.packing:
        return None
    if not (torch.cuda.is_available() if cuda is None else cuda):
        return None
    compute = base_dtype(spec) if spec.quantization is None else getattr(torch, spec.quantization.compute_dtype)
    if compute not in (torch.bfloat16, torch.float16) or importlib.util.find_spec("flash_attn") is None:
        return None
    return "flash_attention_2"


def _kbit_device_map() -> dict[str, int] | None:
    """On GPUs, each DDP rank places its whole quantized base on its own device: bitsandbytes weights
    are quantized when placed and cannot be moved afterwards by accelerate."""
    import os

    import torch

    if not torch.cuda.is_available():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def load_causal_lm(path: Path, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` with a not-a-model folder turned into a permanent error."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise PermanentTrainerError(f"model {path}: cannot load a causal language model: {exc}") from None
    log.info("loaded %s from %s (%s)", type(model).__name__, path, kwargs.get("dtype"))
    return model  # type: ignore[no-any-return]
