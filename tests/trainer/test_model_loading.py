"""Model sources (path, verified S3 prefix, hub cache) and loading (dtype, pad token, bad folders)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.inputs import fetch_adapters, fetch_base_model
from kubepeft_trainer.model_loading import base_dtype, load_base_model, load_tokenizer
from kubepeft_trainer.sources import parse_hf_uri, read_hf_token

from kubepeft.contract import TrainerConfig, build_trainer_config
from tests.fixtures.trainer import make_spec

torch.set_num_threads(1)


def model_config(uri: str, s3: Any = None, **overrides: Any) -> TrainerConfig:
    """The trainer config of a job whose model is ``uri`` (output credentials and endpoint from ``s3``)."""
    spec = make_spec(uri, **overrides)
    if s3 is None:
        return build_trainer_config(spec, "tests", "job")
    folders = {"output": str(s3.credentials_dir)}
    return build_trainer_config(spec, "tests", "job", credentials_dirs=folders, endpoint_override=s3.endpoint)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_local_folder_is_used_in_place(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert fetch_base_model(model_config(str(tiny_model_dir)), tmp_path) == tiny_model_dir
    with pytest.raises(PermanentTrainerError, match="no such directory"):
        fetch_base_model(model_config(str(tmp_path / "missing")), tmp_path)


@pytest.mark.slow
def test_s3_model_prefix_is_downloaded_and_verified(
    tiny_model_dir: Path, tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    from kubepeft.storage import open_store

    access = {
        "endpoint": s3_server.endpoint,
        "region": s3_server.region,
        "credentials_dir": str(s3_server.credentials_dir),
    }
    store = open_store(f"s3://{s3_bucket}", **access)
    store.upload_dir(tiny_model_dir, f"s3://{s3_bucket}/models/tiny", metadata={"kind": "model"})
    # No model credentials of its own, on the output's endpoint: the output's folder, as the API says.
    local = fetch_base_model(model_config(f"s3://{s3_bucket}/models/tiny", s3_server), tmp_path / "work")
    assert local == tmp_path / "work" / "model"
    assert {k: v for k, v in digest(local).items() if k != "manifest.json"} == digest(tiny_model_dir)
    assert load_base_model(local, make_spec(local)).config.hidden_size == 64

    store.upload_file(tiny_model_dir / "config.json", f"s3://{s3_bucket}/models/partial/config.json")
    with pytest.raises(PermanentTrainerError, match=r"model s3://.*/models/partial has no manifest\.json"):
        fetch_base_model(model_config(f"s3://{s3_bucket}/models/partial", s3_server), tmp_path / "work2")


def seed_hub_cache(cache: Path, repo_id: str, files: Path, commit: str = "0" * 40) -> Path:
    """A Hugging Face hub cache entry as ``snapshot_download`` leaves it (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_model_resolves_through_the_hub_cache(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No hub here: HF_HUB_OFFLINE=1 (conftest) makes snapshot_download answer from the cache,
    # through the same call a cluster makes online.
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    snapshot = seed_hub_cache(tmp_path / "hf-cache", "org/tiny", tiny_model_dir)
    assert fetch_base_model(model_config("hf://org/tiny"), tmp_path) == snapshot
    from kubepeft_trainer.errors import RetryableTrainerError

    with pytest.raises(RetryableTrainerError, match="hf://org/other"):
        fetch_base_model(model_config("hf://org/other"), tmp_path)


def test_hub_uri_and_token_parsing(tmp_path: Path) -> None:
    assert parse_hf_uri("hf://org/name").repo_id == "org/name"
    assert parse_hf_uri("hf://org/name@v1").revision == "v1"
    assert parse_hf_uri("hf://org/name@v1", "main").revision == "main"
    with pytest.raises(PermanentTrainerError, match="expected hf://<org>/<name>"):
        parse_hf_uri("hf://just-a-name")
    assert read_hf_token(str(tmp_path)) is None
    (tmp_path / "HF_TOKEN").write_text("hf_secret\n")
    assert read_hf_token(str(tmp_path)) == "hf_secret"


def test_dtype_follows_model_dtype_then_precision(tiny_model_dir: Path) -> None:
    auto_bf16 = make_spec(tiny_model_dir, model={"dtype": "auto"}, training={"precision": "bf16"})
    assert base_dtype(auto_bf16) == torch.bfloat16
    assert {p.dtype for p in load_base_model(tiny_model_dir, auto_bf16).parameters()} == {torch.bfloat16}
    assert base_dtype(make_spec(tiny_model_dir, model={"uri": "/m", "dtype": "float16"})) == torch.float16
    assert base_dtype(make_spec(tiny_model_dir)) == torch.float32


def test_tokenizer_gets_a_pad_token(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "nopad")
    assert AutoTokenizer.from_pretrained(tmp_path / "nopad").pad_token is None
    loaded = load_tokenizer(tmp_path / "nopad", trust_remote_code=False)
    assert loaded.pad_token == "</s>" and loaded.padding_side == "right"
    assert load_tokenizer(tiny_model_dir, trust_remote_code=False).pad_token == "<pad>"


def test_a_folder_that_is_not_a_model_is_a_permanent_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(PermanentTrainerError, match="cannot load a causal language model"):
        load_base_model(tmp_path, make_spec(tmp_path))
    with pytest.raises(PermanentTrainerError, match="cannot load a tokenizer"):
        load_tokenizer(tmp_path, trust_remote_code=False)


def test_fetch_adapter_from_a_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    adapters = {"sources": [{"uri": str(tmp_path / "adapter")}]}
    assert fetch_adapters(model_config(str(tiny_model_dir), adapters=adapters), tmp_path / "w") == [
        tmp_path / "adapter"
    ]
    with pytest.raises(PermanentTrainerError, match=r"no adapter_config\.json"):
        fetch_adapters(
            model_config(str(tiny_model_dir), adapters={"sources": [{"uri": str(tiny_model_dir)}]}), tmp_path
        )
