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


def merge_adapter_into_base(
    base_path: Path,
    adapter_path: Path,
    out_dir: Path,
    spec: PeftJobSpec | None = None,
    *,
    dtype: str | None = None,
    max_shard_size: str | None = None,
    tokenizer_path: Path | None = None,
    trust_remote_code: bool | None = None,
) -> Path:
    """Base + one LoRA adapter -> a plain model folder (safetensors shards + tokenizer) in ``out_dir``.

    Settings come from the keywords, else from ``spec`` (``output.mergedDtype``, ``output.maxShardSize``,
    ``model.trustRemoteCode``); the tokenizer defaults to the base model's.
    """
    opts = _options(spec, dtype, max_shard_size, tokenizer_path or base_path, trust_remote_code)
    from peft import PeftModel

    _require_lora(adapter_path, "the adapter")
    base = _load_full_precision_base(base_path, opts.trust_remote_code)
    model = PeftModel.from_pretrained(base, str(adapter_path))
    merged = model.merge_and_unload()
    return _save_merged(merged, out_dir, opts)


def merge_weighted_adapters(
    base_path: Path,
    adapters: Sequence[AdapterInput | Path],
    combination: str | Path,
    out_dir: Path | PeftJobSpec | None = None,
    *,
    dtype: str | None = None,
    max_shard_size: str | None = None,
    tokenizer_path: Path | None = None,
    trust_remote_code: bool | None = None,
    spec: PeftJobSpec | None = None,
    adapter_out_dir: Path | None = None,
) -> Path:
    """Combine ``adapters`` (weighted) into one adapter, merge it into the base, save both.

    The merged model goes to ``out_dir``; the combined adapter (PEFT layout, usable on the base
    with ``PeftModel.from_pretrained``) to ``adapter_out_dir`` (default: ``adapter`` next to
    ``out_dir``). Also accepted: ``(base_path, adapter_paths, out_dir, spec)``, taking the
    combination, weights and names from ``spec.adapters``.
    """
    if isinstance(out_dir, PeftJobSpec):  # the (base, adapters, out_dir, spec) form
        job_spec: PeftJobSpec = out_dir
        spec, out_dir, combination = job_spec, Path(combination), spec_combination(job_spec)
    if out_dir is None or isinstance(combination, Path):
        raise TypeError("merge_weighted_adapters(base, adapters, combination, out_dir, ...)")
    out_dir = Path(out_dir)
    inputs = adapter_inputs(adapters, spec)
    opts = _options(spec, dtype, max_shard_size, tokenizer_path or base_path, trust_remote_code)
    from peft import PeftModel

    for adapter in inputs:
        _require_lora(adapter.path, f"adapter {adapter.name!r}")
    if len({a.name for a in inputs}) != len(inputs) or COMBINED_ADAPTER in {a.name for a in inputs}:
        raise PermanentTrainerError(
            f"adapters.sources: names must be unique and not {COMBINED_ADAPTER!r}: {[a.name for a in inputs]}"
        )
    base = _load_full_precision_base(base_path, opts.trust_remote_code)
    model = PeftModel.from_pretrained(base, str(inputs[0].path), adapter_name=inputs[0].name)
    for adapter in inputs[1:]:
        model.load_adapter(str(adapter.path), adapter_name=adapter.name)
    try:
        model.add_weighted_adapter(
            adapters=[a.name for a in inputs],
            weights=[a.weight for a in inputs],
            adapter_name=COMBINED_ADAPTER,
            combination_type=combination,
        )
    except ValueError as exc:  # e.g. linear with different ranks
        raise PermanentTrainerError(f"adapters.combination {combination}: {exc}") from None
    model.set_adapter(COMBINED_ADAPTER)
    adapter_out = Path(adapter_out_dir) if adapter_out_dir else out_dir.parent / "adapter"
    save_single_adapter(model, COMBINED_ADAPTER, adapter_out)
    for adapter in inputs:
        model.delete_adapter(adapter.name)
    merged = model.merge_and_unload(adapter_names=[COMBINED_ADAPTER])
    log.info("merged %d adapters (%s) into %s", len(inputs), combination, base_path)
    return _save_merged(merged, out_dir, opts)


def spec_combination(spec: PeftJobSpec) -> str:
    return spec.adapters.combination if spec.adapters else "linear"


def adapter_inputs(adapters: Sequence[AdapterInput | Path], spec: PeftJobSpec | None) -> list[AdapterInput]:
    """AdapterInputs; plain paths take weight and name from ``spec.adapters.sources`` (same order)."""
    if not adapters:
        raise PermanentTrainerError("adapters.sources: nothing to merge")
    sources = spec.adapters.sources if spec and spec.adapters else []
    result = []
    for index, item in enumerate(adapters):
        if isinstance(item, AdapterInput):
            result.append(item)
            continue
        source = sources[index] if index < len(sources) else None
        result.append(
            AdapterInput(
                path=Path(item),
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


@dataclass(frozen=True)
class _Options:
    dtype: str
    max_shard_size: str
    tokenizer_path: Path
    trust_remote_code: bool


def _options(
    spec: PeftJobSpec | None,
    dtype: str | None,
    max_shard_size: str | None,
    tokenizer_path: Path,
    trust_remote_code: bool | None,
) -> _Options:
    return _Options(
        dtype=dtype or (spec.output.merged_dtype if spec else "bfloat16"),
        max_shard_size=max_shard_size or (spec.output.max_shard_size if spec else "5GB"),
        tokenizer_path=Path(tokenizer_path),
        trust_remote_code=bool(
            trust_remote_code if trust_remote_code is not None else (spec.model.trust_remote_code if spec else False)
        ),
    )


def _require_lora(adapter_path: Path, what: str) -> None:
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(str(adapter_path))
    except (OSError, ValueError) as exc:
        raise PermanentTrainerError(f"{what} at {adapter_path} is not a PEFT adapter: {exc}") from None
    kind = str(getattr(config.peft_type, "value", config.peft_type))
    if kind != "LORA":
        raise PermanentTrainerError(f"{what} at {adapter_path} is a {kind} adapter; only LoRA adapters merge")


def _load_full_precision_base(base_path: Path, trust_remote_code: bool) -> Any:
    import torch

    from kubepeft_trainer.model_loading import load_causal_lm

    return load_causal_lm(Path(base_path), dtype=torch.float32, trust_remote_code=trust_remote_code)


def _save_merged(merged: Any, out_dir: Path, opts: _Options) -> Path:
    import torch
    from transformers import AutoTokenizer

    merged = merged.to(getattr(torch, opts.dtype))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True, max_shard_size=opts.max_shard_size)
    # The tokenizer as published (no training-time pad/padding-side changes).
    tokenizer = AutoTokenizer.from_pretrained(opts.tokenizer_path, trust_remote_code=opts.trust_remote_code)
    tokenizer.save_pretrained(str(out_dir))
    log.info("merged model (%s) written to %s", opts.dtype, out_dir)
    return out_dir
