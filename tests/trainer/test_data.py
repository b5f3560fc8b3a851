"""Data: formats round-trip, templates label the right tokens, split/max_samples, located errors
(packing: test_packing.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from kubepeft_trainer.data import build_datasets, collate, load_records, split_records
from kubepeft_trainer.data.templates import IGNORE_INDEX
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.inputs import fetch_dataset

from kubepeft.api.models import DatasetSpec, TrainingSpec
from kubepeft.contract import TrainerConfig, build_trainer_config
from kubepeft.tiny_task import tiny_chat_records, tiny_text_records, tiny_training_records
from tests.fixtures.trainer import make_spec, write_records

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from kubepeft_trainer.model_loading import load_tokenizer

    return load_tokenizer(tiny_model_dir, trust_remote_code=False)


def dataset_spec(path: Path | str, **kw: Any) -> DatasetSpec:
    return DatasetSpec.model_validate({"uri": str(path), **kw})


def data_config(uri: Path | str, s3: Any = None) -> TrainerConfig:
    """The trainer config of a job reading ``uri`` (output credentials and endpoint from ``s3``)."""
    spec = make_spec("/m", uri)
    if s3 is None:
        return build_trainer_config(spec, "tests", "job")
    folders = {"output": str(s3.credentials_dir)}
    return build_trainer_config(spec, "tests", "job", credentials_dirs=folders, endpoint_override=s3.endpoint)


def training_spec(**kw: Any) -> TrainingSpec:
    return TrainingSpec.model_validate({"maxSteps": 1, **kw})


def labelled(example: dict[str, list[int]]) -> list[int]:
    return [t for t in example["labels"] if t != IGNORE_INDEX]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_formats_round_trip(tmp_path: Path, fmt: str) -> None:
    records = tiny_training_records(12)
    path = write_records(tmp_path, records, fmt)
    ds = dataset_spec(path, format=fmt, template="promptResponse")
    assert load_records(ds, path) == records


def test_folder_of_files_is_read_in_name_order(tmp_path: Path) -> None:
    records = tiny_training_records(6)
    write_records(tmp_path / "d", records[3:], "jsonl", name="b")
    write_records(tmp_path / "d", records[:3], "jsonl", name="a")
    (tmp_path / "d" / "manifest.json").write_text("{}")  # a storage manifest is not data
    ds = dataset_spec(tmp_path / "d", template="promptResponse")
    assert load_records(ds, tmp_path / "d") == records


def test_hf_format_reads_a_dataset_folder_with_datasets(tmp_path: Path) -> None:
    folder = tmp_path / "hub-snapshot"
    write_records(folder / "data", tiny_training_records(5), "parquet", name="train-00000-of-00001")
    write_records(folder / "data", tiny_training_records(2, seed=9), "parquet", name="test-00000-of-00001")
    ds = dataset_spec("hf://org/letters", format="hf", template="promptResponse", split="test")
    assert load_records(ds, folder) == tiny_training_records(2, seed=9)
    with pytest.raises(PermanentTrainerError, match="split nope"):
        load_records(dataset_spec("hf://org/letters", format="hf", split="nope"), folder)


def test_prompt_response_takes_loss_on_the_response_and_eos_only(tokenizer: Any) -> None:
    records = tiny_training_records(8)
    ds = dataset_spec("/d.jsonl", template="promptResponse", validationSplit=0.0)
    train, validation = build_datasets(ds, training_spec(maxSeqLength=64), tokenizer, records, seed=0)
    assert validation is None and len(train) == 8
    by_prompt = {r["prompt"]: r["response"] for r in records}
    for example in train:
        ids, labels = example["input_ids"], example["labels"]
        n_prompt = labels.index(next(t for t in labels if t != IGNORE_INDEX))
        prompt = tokenizer.decode(ids[:n_prompt])
        assert all(t == IGNORE_INDEX for t in labels[:n_prompt])
        assert labels[n_prompt:] == ids[n_prompt:]
        assert tokenizer.decode(labelled(example)) == by_prompt[prompt] + "</s>"
        assert ids[-1] == tokenizer.eos_token_id


def test_text_template_labels_every_token(tokenizer: Any) -> None:
    ds = dataset_spec("/d.jsonl", validationSplit=0.0)
    train, _ = build_datasets(ds, training_spec(), tokenizer, tiny_text_records(4), seed=0)
    for example in train:
        assert example["labels"] == example["input_ids"]
        assert example["input_ids"][-1] == tokenizer.eos_token_id


def test_chat_template_labels_assistant_turns(tokenizer: Any) -> None:
    records = tiny_chat_records(4)
    ds = dataset_spec("/d.jsonl", template="chat", validationSplit=0.0)
    train, _ = build_datasets(ds, training_spec(), tokenizer, records, seed=0)
    responses = {r["messages"][1]["content"] for r in records}
    for example in train:
        text = tokenizer.decode(example["input_ids"])
        assert text.startswith("<|user|>\n") and "<|assistant|>\n" in text
        answer = tokenizer.decode(labelled(example))
        assert answer.endswith("</s>") and answer[: -len("</s>")] in responses


def test_chat_without_generation_markers_finds_assistant_turns_by_prefix(tiny_model_dir: Path) -> None:
    from kubepeft_trainer.model_loading import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir, trust_remote_code=False)
    tokenizer.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    conversation = {
        "messages": [
            {"role": "system", "content": "count"},
            {"role": "user", "content": "c ="},
            {"role": "assistant", "content": " b a"},
            {"role": "user", "content": "e ="},
            {"role": "assistant", "content": " d c b a"},
        ]
    }
    ds = dataset_spec("/d.jsonl", template="chat", validationSplit=0.0)
    train, _ = build_datasets(ds, training_spec(), tokenizer, [conversation], seed=0)
    # Each assistant turn as the template renders it, its trailing separator included.
    assert tokenizer.decode(labelled(train[0])) == " b a</s>\n d c b a</s>\n"


def test_truncation_and_dropping_prompt_only_examples(tokenizer: Any) -> None:
    records = [{"prompt": "x " * 40 + "=", "response": " a"}, *tiny_training_records(3)]
    ds = dataset_spec("/d.jsonl", template="promptResponse", validationSplit=0.0)
    train, _ = build_datasets(ds, training_spec(maxSeqLength=16), tokenizer, records, seed=0)
    assert len(train) == 3  # the long prompt leaves no response token within 16
    assert all(len(e["input_ids"]) <= 16 for e in train)
    with pytest.raises(PermanentTrainerError, match=r"training\.maxSeqLength 8"):
        build_datasets(ds, training_spec(maxSeqLength=8), tokenizer, records[:1], seed=0)


def test_split_is_seeded_disjoint_and_respects_max_samples() -> None:
    records = [{"text": str(i)} for i in range(100)]
    train, val = split_records(records, validation_split=0.1, max_samples=None, seed=7)
    assert (len(train), len(val)) == (90, 10)
    assert {r["text"] for r in train}.isdisjoint({r["text"] for r in val})
    assert split_records(records, validation_split=0.1, max_samples=None, seed=7) == (train, val)
    assert split_records(records, validation_split=0.1, max_samples=None, seed=8)[1] != val
    train, val = split_records(records, validation_split=0.25, max_samples=20, seed=7)
    assert (len(train), len(val)) == (15, 5)
    assert split_records(records, validation_split=0.1, max_samples=3, seed=7)[1]  # at least one held out
    assert split_records(records[:1], validation_split=0.5, max_samples=None, seed=7) == (records[:1], [])


def test_build_is_deterministic_per_seed(tokenizer: Any) -> None:
    records = tiny_training_records(30)
    ds = dataset_spec("/d.jsonl", template="promptResponse", validationSplit=0.2, maxSamples=25)
    first = build_datasets(ds, training_spec(), tokenizer, records, seed=3)
    again = build_datasets(ds, training_spec(), tokenizer, records, seed=3)
    other = build_datasets(ds, training_spec(), tokenizer, records, seed=4)
    assert first == again
    assert first[1] is not None and len(first[0]) == 20 and len(first[1]) == 5
    assert other[1] != first[1]


def test_collate_pads_right_with_masked_labels() -> None:
    batch = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    out = collate(batch, pad_token_id=2)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert out["input_ids"].dtype == torch.long


# --- located errors ----------------------------------------------------------------------------


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    good = json.dumps({"prompt": "a =", "response": " b"})
    path.write_text(f"{good}\n\n{good}\n{{'prompt': oops}}\n")
    with pytest.raises(PermanentTrainerError, match=r"data\.jsonl:4: invalid JSON \(") as info:
        load_records(dataset_spec(path, template="promptResponse"), path)
    assert str(tmp_path) in str(info.value)


def test_missing_field_names_file_and_line(tmp_path: Path) -> None:
    path = write_records(tmp_path, [{"prompt": "a =", "response": " b"}, {"prompt": "c ="}], "jsonl")
    with pytest.raises(PermanentTrainerError, match=r"data\.jsonl:2: missing field 'response'"):
        load_records(dataset_spec(path, template="promptResponse"), path)
    with pytest.raises(PermanentTrainerError, match=r"data\.jsonl:1: missing field 'text'"):
        load_records(dataset_spec(path), path)


def test_wrong_types_are_rejected(tmp_path: Path) -> None:
    path = write_records(tmp_path, [{"prompt": 3, "response": " b"}], "jsonl")
    with pytest.raises(PermanentTrainerError, match=r":1: field 'prompt' must be a string, got int"):
        load_records(dataset_spec(path, template="promptResponse"), path)
    path = write_records(tmp_path, [{"messages": [{"role": "user", "content": "hi"}]}], "jsonl", name="chat")
    with pytest.raises(PermanentTrainerError, match=r"chat\.jsonl:1: messages has no assistant message"):
        load_records(dataset_spec(path, template="chat"), path)
    path.write_text(json.dumps([1, 2]) + "\n")
    with pytest.raises(PermanentTrainerError, match=r"chat\.jsonl:1: expected a JSON object, got list"):
        load_records(dataset_spec(path, template="chat"), path)


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('prompt,response\n"a =", b\n"c =", d, extra\n')
    with pytest.raises(PermanentTrainerError, match=r"data\.csv:3: expected 2 columns, got 3"):
        load_records(dataset_spec(path, format="csv", template="promptResponse"), path)
    path.write_text('prompt,answer\n"a =", b\n')
    with pytest.raises(PermanentTrainerError, match=r"data\.csv:2: missing field 'response'"):
        load_records(dataset_spec(path, format="csv", template="promptResponse"), path)
    # A quoted field spanning lines: the reported line is where the record ends.
    path.write_text('text\n"one\ntwo"\nok\n')
    assert load_records(dataset_spec(path, format="csv"), path) == [{"text": "one\ntwo"}, {"text": "ok"}]


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    path = write_records(
        tmp_path, [{"prompt": "a =", "response": " b"}, {"prompt": "c =", "response": None}], "parquet"
    )
    with pytest.raises(PermanentTrainerError, match=r"data\.parquet: row index 1: missing field 'response'"):
        load_records(dataset_spec(path, format="parquet", template="promptResponse"), path)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PermanentTrainerError, match=r"bad\.parquet: not a readable parquet file"):
        load_records(dataset_spec(tmp_path / "bad.parquet", format="parquet"), tmp_path / "bad.parquet")


def test_binary_file_as_jsonl_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(PermanentTrainerError, match=r"data\.jsonl: not UTF-8 text"):
        load_records(dataset_spec(path), path)


def test_empty_dataset_and_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(PermanentTrainerError, match="no records"):
        load_records(dataset_spec(path), path)
    with pytest.raises(PermanentTrainerError, match="no such file"):
        fetch_dataset(data_config(tmp_path / "nope.jsonl"), tmp_path)


# --- fetching ----------------------------------------------------------------------------------


def test_fetch_local_path_is_itself(tmp_path: Path) -> None:
    path = write_records(tmp_path, tiny_training_records(2), "jsonl")
    assert fetch_dataset(data_config(path), tmp_path / "work") == path


def test_fetch_s3_object_and_verified_prefix(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    from kubepeft.storage import open_store

    records = tiny_training_records(10)
    local = write_records(tmp_path / "src", records, "jsonl")
    store = open_store(f"s3://{s3_bucket}", endpoint=s3_server.endpoint, credentials_dir=str(s3_server.credentials_dir))
    store.upload_file(local, f"s3://{s3_bucket}/single/data.jsonl")
    store.upload_dir(local.parent, f"s3://{s3_bucket}/prefix", metadata={"kind": "dataset"})
    store.upload_file(local, f"s3://{s3_bucket}/nomanifest/data.jsonl")

    ds = dataset_spec(f"s3://{s3_bucket}/single/data.jsonl", template="promptResponse")
    got = fetch_dataset(data_config(ds.uri, s3_server), tmp_path / "w1")
    assert got.is_file() and load_records(ds, got) == records

    ds = dataset_spec(f"s3://{s3_bucket}/prefix", template="promptResponse")
    got = fetch_dataset(data_config(ds.uri, s3_server), tmp_path / "w2")
    assert got.is_dir() and load_records(ds, got) == records

    with pytest.raises(PermanentTrainerError, match=r"nomanifest has no manifest\.json"):
        fetch_dataset(data_config(f"s3://{s3_bucket}/nomanifest", s3_server), tmp_path / "w3")
