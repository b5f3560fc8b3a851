"""Merging: merged == base + adapter, plain reload, weighted combinations match their math, sharding."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from kubepeft_trainer.data import build_datasets, collate
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.merge import (
    AdapterInput,
    MergeOptions,
    merge_adapter_into_base,
    merge_job_adapters,
    merge_weighted_adapters,
)
from kubepeft_trainer.methods import get_method
from kubepeft_trainer.model_loading import load_base_model, load_tokenizer

from kubepeft.tiny_task import tiny_text_records, tiny_training_records
from tests.fixtures.trainer import make_spec, train_steps

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_tokenizer(tiny_model_dir, trust_remote_code=False)


@pytest.fixture(scope="module")
def batch(tiny_model_dir: Path, tokenizer: Any) -> dict[str, torch.Tensor]:
    spec = make_spec(tiny_model_dir, dataset={"validationSplit": 0.0})
    train, _ = build_datasets(spec.dataset, spec.training, tokenizer, tiny_training_records(8, seed=77), seed=0)
    return collate(train.examples, tokenizer.pad_token_id)


def train_adapter(
    model_dir: Path, tokenizer: Any, out: Path, *, records: list[dict[str, str]], seed: int, **overrides: Any
) -> Path:
    """A real LoRA adapter: a few steps of training so that every B matrix is non-zero."""
    template = "text" if "text" in records[0] else "promptResponse"
    spec = make_spec(model_dir, dataset={"validationSplit": 0.0, "template": template}, **overrides)
    train, _ = build_datasets(spec.dataset, spec.training, tokenizer, records, seed=seed)
    torch.manual_seed(seed)
    model = get_method(spec).apply(load_base_model(model_dir, spec), tokenizer, spec)
    train_steps(model, train.examples, steps=4, lr=1e-2, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": train_adapter(tiny_model_dir, tokenizer, root / "a", records=tiny_training_records(32), seed=1),
        "b": train_adapter(tiny_model_dir, tokenizer, root / "b", records=tiny_text_records(32, seed=5), seed=2),
        "r2": train_adapter(
            tiny_model_dir, tokenizer, root / "r2", records=tiny_training_records(32), seed=3, lora={"r": 2}
        ),
    }


def logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


def base_fp32(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def plain_reload(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


def test_merged_equals_base_plus_adapter_and_reloads_plainly(
    tiny_model_dir: Path, adapters: dict[str, Path], batch: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoTokenizer

    out = merge_adapter_into_base(
        tiny_model_dir,
        adapters["a"],
        tmp_path / "merged",
        MergeOptions(dtype="float32", max_shard_size="5GB", tokenizer_path=tiny_model_dir),
    )
    merged = plain_reload(out)
    reference = PeftModel.from_pretrained(base_fp32(tiny_model_dir), adapters["a"])
    diff = (logits(merged, batch) - logits(reference, batch)).abs().max().item()
    assert diff <= 1e-5
    assert (logits(merged, batch) - logits(base_fp32(tiny_model_dir), batch)).abs().max().item() > 1e-3
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (
        AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    )
    assert not (out / "adapter_config.json").exists()


def test_merge_settings_from_the_spec_and_dtype_cast(
    tiny_model_dir: Path, adapters: dict[str, Path], batch: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    spec = make_spec(tiny_model_dir, output={"uri": "/nowhere", "merge": True, "mergedDtype": "bfloat16"})
    out = merge_adapter_into_base(tiny_model_dir, adapters["a"], tmp_path / "merged", MergeOptions.from_spec(spec))
    merged = plain_reload(out)
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    full = plain_reload(
        merge_adapter_into_base(tiny_model_dir, adapters["a"], tmp_path / "f32", MergeOptions(dtype="float32"))
    )
    # bf16 keeps ~3 significant digits: close to the float32 merge, not equal.
    assert 0 < (logits(merged, batch) - logits(full, batch)).abs().max().item() < 0.1


def test_prompt_tuning_adapters_do_not_merge(tiny_model_dir: Path, tokenizer: Any, tmp_path: Path) -> None:
    spec = make_spec(tiny_model_dir, method="promptTuning")
    model = get_method(spec).apply(load_base_model(tiny_model_dir, spec), tokenizer, spec)
    model.save_pretrained(str(tmp_path / "prompt"))
    with pytest.raises(PermanentTrainerError, match="PROMPT_TUNING adapter; only LoRA adapters merge"):
        merge_adapter_into_base(tiny_model_dir, tmp_path / "prompt", tmp_path / "merged", MergeOptions(dtype="float32"))


def lora_weights(adapter: Path) -> tuple[dict[str, torch.Tensor], float]:
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    return load_file(adapter / "adapter_model.safetensors"), config["lora_alpha"] / config["r"]


def delta(weights: dict[str, torch.Tensor], module: str, scale: float, a_weight: float = 1.0) -> torch.Tensor:
    a = weights[f"base_model.model.{module}.lora_A.weight"]
    b = weights[f"base_model.model.{module}.lora_B.weight"]
    return a_weight * scale * (b @ a)


MODULE = "model.layers.1.mlp.down_proj"


def test_weighted_cat_combination_is_the_weighted_sum_of_updates(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [AdapterInput(adapters["a"], 0.7, "first"), AdapterInput(adapters["r2"], -0.4, "second")]
    out = merge_weighted_adapters(tiny_model_dir, inputs, "cat", tmp_path / "merged", MergeOptions(dtype="float32"))
    merged = dict(plain_reload(out).named_parameters())
    base = dict(base_fp32(tiny_model_dir).named_parameters())
    (wa, sa), (wb, sb) = lora_weights(adapters["a"]), lora_weights(adapters["r2"])
    expected = base[f"{MODULE}.weight"] + delta(wa, MODULE, sa, 0.7) + delta(wb, MODULE, sb, -0.4)
    assert (merged[f"{MODULE}.weight"] - expected).abs().max().item() <= 1e-6


def test_weighted_linear_combination_matches_peft_math_and_the_active_adapter(
    tiny_model_dir: Path, adapters: dict[str, Path], batch: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from peft import PeftModel

    weights = (0.6, 0.4)
    inputs = [AdapterInput(adapters["a"], weights[0], "first"), AdapterInput(adapters["b"], weights[1], "second")]
    out = merge_weighted_adapters(
        tiny_model_dir,
        inputs,
        "linear",
        tmp_path / "merged",
        MergeOptions(dtype="float32", max_shard_size="100KB", tokenizer_path=tiny_model_dir),
        adapter_out_dir=tmp_path / "combined",
    )
    # Sharded: the merged model (~450 KB) is split into several files with an index.
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (out / "model.safetensors.index.json").is_file()
    merged_model = plain_reload(out)

    # The math of peft's linear combination: A and B are averaged separately with sqrt(w*s) weights.
    (wa, sa), (wb, sb) = lora_weights(adapters["a"]), lora_weights(adapters["b"])
    key = f"base_model.model.{MODULE}"
    a = (
        math.sqrt(weights[0] * sa) * wa[f"{key}.lora_A.weight"]
        + math.sqrt(weights[1] * sb) * wb[f"{key}.lora_A.weight"]
    )
    b = (
        math.sqrt(weights[0] * sa) * wa[f"{key}.lora_B.weight"]
        + math.sqrt(weights[1] * sb) * wb[f"{key}.lora_B.weight"]
    )
    base = dict(base_fp32(tiny_model_dir).named_parameters())
    merged = dict(merged_model.named_parameters())
    assert (merged[f"{MODULE}.weight"] - (base[f"{MODULE}.weight"] + b @ a)).abs().max().item() <= 1e-6

    # The same model as peft with the weighted adapter active, and the saved combined adapter reloads to it.
    reference = PeftModel.from_pretrained(base_fp32(tiny_model_dir), adapters["a"], adapter_name="first")
    reference.load_adapter(adapters["b"], adapter_name="second")
    reference.add_weighted_adapter(["first", "second"], list(weights), "mix", combination_type="linear")
    reference.set_adapter("mix")
    merged_logits = logits(merged_model, batch)
    assert (merged_logits - logits(reference, batch)).abs().max().item() <= 1e-5
    assert (tmp_path / "combined" / "adapter_config.json").is_file()
    combined = PeftModel.from_pretrained(base_fp32(tiny_model_dir), tmp_path / "combined")
    assert (merged_logits - logits(combined, batch)).abs().max().item() <= 1e-5


def test_merge_only_call_with_the_job_spec(tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path) -> None:
    spec = make_spec(
        tiny_model_dir,
        dataset=None,
        training=None,
        adapters={
            "mergeOnly": True,
            "combination": "cat",
            "sources": [{"uri": "/a", "name": "one", "weight": 0.5}, {"uri": "/b", "weight": 2.0}],
        },
        output={"uri": "/nowhere", "merge": True, "mergedDtype": "float32", "maxShardSize": "5GB"},
    )
    out = merge_job_adapters(
        tiny_model_dir, [adapters["a"], adapters["r2"]], spec, tmp_path / "merged", tmp_path / "adapter"
    )
    merged = dict(plain_reload(out).named_parameters())
    base = dict(base_fp32(tiny_model_dir).named_parameters())
    (wa, sa), (wb, sb) = lora_weights(adapters["a"]), lora_weights(adapters["r2"])
    expected = base[f"{MODULE}.weight"] + delta(wa, MODULE, sa, 0.5) + delta(wb, MODULE, sb, 2.0)
    assert (merged[f"{MODULE}.weight"] - expected).abs().max().item() <= 1e-6
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()  # the combined adapter, next to merged/


def test_linear_combination_of_different_ranks_is_a_permanent_error(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [AdapterInput(adapters["a"], 0.5, "x"), AdapterInput(adapters["r2"], 0.5, "y")]
    with pytest.raises(PermanentTrainerError, match=r"adapters\.combination linear"):
        merge_weighted_adapters(tiny_model_dir, inputs, "linear", tmp_path / "merged", MergeOptions(dtype="float32"))
