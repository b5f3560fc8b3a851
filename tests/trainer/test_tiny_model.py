"""The tiny model: deterministic, a real loadable Llama with a chat template, and it knows its counting language."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from kubepeft.tiny_task import count, tiny_training_records, write_dataset

torch.set_num_threads(1)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _greedy(model, tokenizer, prompt: str) -> str:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(
        ids,
        max_new_tokens=30,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(out[0, ids.shape[1] :])


@pytest.mark.slow
def test_build_is_deterministic_per_seed(tiny_model_dir: Path, tmp_path: Path) -> None:
    from kubepeft_trainer.tiny_model import build_tiny_model

    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _digest(again) == _digest(tiny_model_dir)
    other = build_tiny_model(tmp_path / "other", seed=1, pretrain_steps=5)
    assert _digest(other)["model.safetensors"] != _digest(tiny_model_dir)["model.safetensors"]


def test_loads_as_llama_with_chat_template_and_pad(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert isinstance(model, LlamaForCausalLM)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert 90_000 < sum(p.numel() for p in model.parameters()) < 170_000
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.vocab_size == len(tokenizer)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "c ="}, {"role": "assistant", "content": " b a"}], tokenize=False
    )
    assert rendered == "<|user|>\nc =</s>\n<|assistant|>\n b a</s>\n"


def test_pretrained_on_the_counting_language(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert _greedy(model, tokenizer, "up t =") == count("t", "up") + "</s>"
    assert _greedy(model, tokenizer, "down f =") == count("f", "down") + "</s>"
    # The fine-tuning task's prompts are answered the other way before any training.
    record = tiny_training_records(1, seed=3)[0]
    assert _greedy(model, tokenizer, record["prompt"]) != record["response"] + "</s>"


def test_training_records_are_seeded() -> None:
    assert tiny_training_records(20, seed=1) == tiny_training_records(20, seed=1)
    assert tiny_training_records(20, seed=1) != tiny_training_records(20, seed=2)
    record = tiny_training_records(1)[0]
    start = record["prompt"].split()[0]
    assert record["response"] == count(start, "down")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_write_dataset_formats(tmp_path: Path, fmt: str) -> None:
    records = tiny_training_records(5)
    path = write_dataset(tmp_path / f"d.{fmt}", records, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(path).to_pylist() == records
    else:
        assert path.read_text().count("\n") == (5 if fmt == "jsonl" else 6)


def test_cli_builds_model_and_dataset(tmp_path: Path) -> None:
    from kubepeft.cli import main

    assert (
        main(["tiny-model", str(tmp_path / "m"), "--pretrain-steps", "2", "--dataset", str(tmp_path / "d.jsonl")]) == 0
    )
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 256
