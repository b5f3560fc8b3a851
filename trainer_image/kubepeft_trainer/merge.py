"""Merge LoRA adapters into the base weights, in one non-distributed process (CPU is fine).

The base is always loaded anew in full precision (float32): never the quantized QLoRA base and
never a ZeRO-partitioned model, whose ``merge_and_unload`` "works" and saves empty tensors
(environment guide). Only the finished merged weights are cast to the requested dtype.

Merge-only jobs combine several adapters with peft's ``add_weighted_adapter``:

* ``cat`` concatenates the (weighted) ranks: the combined update is exactly ``Σ wᵢ·ΔWᵢ``.
* ``linear`` averages A and B separately, ``(Σ √(wᵢsᵢ)·Bᵢ)(Σ ±√(wᵢsᵢ)·Aᵢ)``: cheap, equal ranks
  required, and cross terms make it only an approximation of ``Σ wᵢ·ΔWᵢ``.
* ``svd`` takes ``Σ wᵢ·ΔWᵢ`` and truncates it to the largest input rank.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft_trainer.errors import PermanentTrainerError

log = logging.getLogger(__name__)

COMBINED_ADAPTER = "combined"


@dataclass(frozen=True)
class AdapterInput:
    """One adapter of a merge-only job: a local PEFT adapter folder, its weight and its name."""

    path: Path
    weight: float = 1.0
    name: str = "adapter0"


@dataclass(frozen=True)
class MergeOptions:
    """How a merged model is written; the tokenizer defaults to the base model's."""

    dtype: str = "bfloat16"
    max_shard_size: str = "5GB"
    trust_remote_code: bool = False
    tokenizer_path: Path | None = None

    @classmethod
    def from_spec(cls, spec: PeftJobSpec) -> MergeOptions:
        """``output.mergedDtype``, ``output.maxShardSize`` and ``model.trustRemoteCode`` of a job."""
        return cls(
            dtype=spec.output.merged_dtype,
            max_shard_size=spec.output.max_shard_size,
            trust_remote_code=spec.model.trust_remote_code,
        )


DEFAULT_OPTIONS = MergeOptions()


def merge_adapter_into_base(
    base_path: Path, adapter_path: Path, out_dir: Path, options: MergeOptions = DEFAULT_OPTIONS
) -> Path:
    """Base + one LoRA adapter -> a plain model folder (safetensors shards + tokenizer) in ``out_dir``."""
    from peft import PeftModel

    require_lora(adapter_path, "the adapter")
    base = _load_full_precision_base(base_path, options.trust_remote_code)
    model = PeftModel.from_pretrained(base, str(adapter_path))
    merged = model.merge_and_unload()
    return _save_merged(merged, out_dir, base_path, options)


def merge_weighted_adapters(
    base_path: Path,
    adapters: Sequence[AdapterInput],
    combination: str,
    out_dir: Path,
    options: MergeOptions = DEFAULT_OPTIONS,
    *,
    adapter_out_dir: Path | None = None,
) -> Path:
    """Combine ``adapters`` (weighted) into one adapter, merge it into the base, save both.

    The merged model goes to ``out_dir``; the combined adapter (PEFT layout, usable on the base
    with ``PeftModel.from_pretrained``) to ``adapter_out_dir`` (default: ``adapter`` next to
    ``out_dir``).
    """
    if not adapters:
        raise PermanentTrainerError("adapters.sources: nothing to merge")
    for adapter in adapters:
        require_lora(adapter.path, f"adapter {adapter.name!r}")
    names = [a.name for a in adapters]
    if len(set(names)) != len(names) or COMBINED_ADAPTER in names:
        raise PermanentTrainerError(f"adapters.sources: names must be unique and not {COMBINED_ADAPTER!r}: {names}")
    model = _combined_model(base_path, adapters, combination, options.trust_remote_code)
    save_single_adapter(model, COMBINED_ADAPTER, adapter_out_dir or out_dir.parent / "adapter")
    for adapter in adapters:
        model.delete_adapter(adapter.name)
    merged = model.merge_and_unload(adapter_names=[COMBINED_ADAPTER])
    log.info("merged %d adapters (%s) into %s", len(adapters), combination, base_path)
    return _save_merged(merged, out_dir, base_path, options)


def merge_job_adapters(
    base_path: Path, adapter_paths: Sequence[Path], spec: PeftJobSpec, out_dir: Path, adapter_out_dir: Path
) -> Path:
    """A merge-only job: the fetched ``spec.adapters.sources`` (same order), combined as the spec says."""
    return merge_weighted_adapters(
        base_path,
        job_adapter_inputs(adapter_paths, spec),
        spec_combination(spec),
        out_dir,
        MergeOptions.from_spec(spec),
        adapter_out_dir=adapter_out_dir,
    )


def _combined_model(base_path: Path, adapters: Sequence[AdapterInput], combination: str, trust: bool) -> Any:
    """The full-precision base with every adapter loaded and their weighted combination active."""
    from peft import PeftModel

    base = _load_full_precision_base(base_path, trust)
    model = PeftModel.from_pretrained(base, str(adapters[0].path), adapter_name=adapters[0].name)
    for adapter in adapters[1:]:
        model.load_adapter(str(adapter.path), adapter_name=adapter.name)
    try:
        model.add_weighted_adapter(
            adapters=[a.name for a in adapters],
            weights=[a.weight for a in adapters],
            adapter_name=COMBINED_ADAPTER,
            combination_type=combination,
        )
    except ValueError as exc:  # e.g. linear with different ranks
        raise PermanentTrainerError(f"adapters.combination {combination}: {exc}") from None
    model.set_adapter(COMBINED_ADAPTER)
    return model


def spec_combination(spec: PeftJobSpec) -> str:
    return spec.adapters.combination if spec.adapters else "linear"


def job_adapter_inputs(paths: Sequence[Path], spec: PeftJobSpec) -> list[AdapterInput]:
    """The fetched adapter folders with weight and name from ``spec.adapters.sources`` (same order)."""
    sources = spec.adapters.sources if spec.adapters else []
    result = []
    for index, path in enumerate(paths):
        source = sources[index] if index < len(sources) else None
        result.append(
            AdapterInput(
                path=Path(path),
                weight=source.weight if source else 1.0,
                name=(source.name if source and source.name else f"adapter{index}"),
            )
        )
    return result


def save_single_adapter(model: Any, name: str, out_dir: Path) -> Path:
    """Save adapter ``name`` as a default-named adapter in ``out_dir`` (adapter_config.json at the top)."""
    import shutil

    staging = out_dir.with_name(out_dir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), selected_adapters=[name], safe_serialization=True)
    # peft saves a non-default adapter into a subfolder named after it.
    source = staging / name if (staging / name).is_dir() else staging
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.move(str(source), str(out_dir))
    shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def require_lora(adapter_path: Path, what: str) -> None:
    """Merging is LoRA's arithmetic: any other kind of adapter is a permanent error."""
    from kubepeft_trainer.methods.base import adapter_peft_type
    from kubepeft_trainer.methods.lora import Lora

    kind = adapter_peft_type(adapter_path, what)
    if kind != Lora.peft_type:
        raise PermanentTrainerError(f"{what} at {adapter_path} is a {kind} adapter; only LoRA adapters merge")


def _load_full_precision_base(base_path: Path, trust_remote_code: bool) -> Any:
    import torch

    from kubepeft_trainer.model_loading import load_causal_lm

    return load_causal_lm(Path(base_path), dtype=torch.float32, trust_remote_code=trust_remote_code)


def _save_merged(merged: Any, out_dir: Path, base_path: Path, options: MergeOptions) -> Path:
    import torch
    from transformers import AutoTokenizer

    merged = merged.to(getattr(torch, options.dtype))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True, max_shard_size=options.max_shard_size)
    # The tokenizer as published (no training-time pad/padding-side changes).
    tokenizer = AutoTokenizer.from_pretrained(
        Path(options.tokenizer_path or base_path), trust_remote_code=options.trust_remote_code
    )
    tokenizer.save_pretrained(str(out_dir))
    log.info("merged model (%s) written to %s", options.dtype, out_dir)
    return out_dir
