"""Glue between the loop and the input stages: fetch the model, data and adapters a job names, and
build the trainable model and the tokenized splits (the stages themselves live in
``model_loading``, ``data``, ``methods`` and ``sources``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from kubepeft.contract import TrainerConfig


@dataclass
class TrainingInputs:
    model: Any  # the PeftModel, trainable parameters set
    tokenizer: Any
    train: Sequence[Any]
    validation: Sequence[Any]
    collate: Callable[[list[Any]], dict[str, Any]]


def _access(config: TrainerConfig, source: str) -> dict[str, Any]:
    """Credentials and endpoint for an input: its own credential folder, the output's endpoint."""
    return {
        "credentials_dir": config.credentials_dirs.get(source) or config.credentials_dirs.get("output"),
        "endpoint": config.output.endpoint,
        "region": config.output.region,
        "force_path_style": config.output.force_path_style,
    }


def fetch_base_model(config: TrainerConfig, workdir: Path) -> Path:
    from kubepeft_trainer.model_loading import fetch_model

    return fetch_model(config.spec.model, workdir, **_access(config, "model"))


def fetch_adapters(config: TrainerConfig, workdir: Path) -> list[Path]:
    if config.spec.adapters is None:
        return []
    from kubepeft_trainer.adapters import fetch_adapter

    return [
        fetch_adapter(source, workdir / f"adapter-{i}", **_access(config, "adapters"))
        for i, source in enumerate(config.spec.adapters.sources)
    ]


def fetch_merge_inputs(config: TrainerConfig, workdir: Path) -> tuple[Path, list[Path]]:
    return fetch_base_model(config, workdir), fetch_adapters(config, workdir)


@dataclass(frozen=True)
class FetchedInputs:
    model_dir: Path
    adapters: list[Path]
    data_path: Path


def fetch_training_inputs(config: TrainerConfig, workdir: Path) -> FetchedInputs:
    """Download (or find cached in ``workdir``) the model, adapters and data: no torch, no collectives."""
    from kubepeft_trainer.data.fetch import fetch_dataset

    assert config.spec.dataset is not None
    return FetchedInputs(
        model_dir=fetch_base_model(config, workdir),
        adapters=fetch_adapters(config, workdir),
        data_path=fetch_dataset(config.spec.dataset, workdir, **_access(config, "dataset")),
    )


def build_training_inputs(config: TrainerConfig, fetched: FetchedInputs, *, device_map: Any = None) -> TrainingInputs:
    """The trainable model and the tokenized splits. Every rank must call this at the same time:
    under ZeRO-3, transformers builds the model inside ``deepspeed.zero.Init`` (collective)."""
    from kubepeft_trainer.data import build_datasets, collate, load_records, uses_varlen_attention
    from kubepeft_trainer.errors import PermanentTrainerError
    from kubepeft_trainer.methods.base import get_method
    from kubepeft_trainer.model_loading import load_base_model, load_tokenizer

    spec = config.spec
    assert spec.dataset is not None and spec.training is not None
    if spec.training.packing and spec.method == "promptTuning":
        # peft drops position ids for prompt tuning, and one row would share one soft prompt.
        raise PermanentTrainerError("training.packing: does not apply to method promptTuning")
    tokenizer = load_tokenizer(fetched.model_dir, trust_remote_code=spec.model.trust_remote_code)
    records = load_records(spec.dataset, fetched.data_path)
    train, validation = build_datasets(spec.dataset, spec.training, tokenizer, records, seed=spec.training.seed)
    base = load_base_model(fetched.model_dir, spec, device_map=device_map)
    adapter = fetched.adapters[0] if fetched.adapters else None
    model = get_method(spec).apply(base, tokenizer, spec, adapter_path=adapter)
    batcher = partial(collate, pad_token_id=tokenizer.pad_token_id, flatten=uses_varlen_attention(model))
    return TrainingInputs(model, tokenizer, train, validation or [], batcher)


def preflight_dataset(config: TrainerConfig, workdir: Path) -> int:
    """Fetch (into the ranks' cache) and validate the dataset before any rank starts: a malformed
    row fails the job in seconds with its file and line, not after the ranks have loaded the model.
    Returns the number of records. Light: no torch import."""
    from kubepeft_trainer.data.fetch import fetch_dataset
    from kubepeft_trainer.data.records import load_records

    spec = config.spec
    if spec.dataset is None:
        return 0
    path = fetch_dataset(spec.dataset, workdir, **_access(config, "dataset"))
    return len(load_records(spec.dataset, path))
