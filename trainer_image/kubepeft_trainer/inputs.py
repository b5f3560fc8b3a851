"""Glue between the loop and the input stages: fetch the model, data and adapters a job names
(each through the one resolver in ``sources``: its own endpoint, credentials folder and volume),
and build the trainable model and the tokenized splits (``model_loading``, ``data``, ``methods``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from kubepeft.contract import TrainerConfig
from kubepeft.sources import ADAPTER_PREFIX, DATASET, MODEL
from kubepeft_trainer.adapters import check_adapter_folder
from kubepeft_trainer.sources import ADAPTER_INPUT, DATASET_INPUT, MODEL_INPUT, fetch_input, locate_inputs


@dataclass
class TrainingInputs:
    model: Any  # the PeftModel, trainable parameters set
    tokenizer: Any
    train: Sequence[Any]
    validation: Sequence[Any]
    collate: Callable[[list[Any]], dict[str, Any]]


def fetch_base_model(config: TrainerConfig, workdir: Path) -> Path:
    located = locate_inputs(config)[MODEL]
    return fetch_input(located, MODEL_INPUT, workdir, revision=config.spec.model.revision)


def fetch_adapters(config: TrainerConfig, workdir: Path) -> list[Path]:
    """Each adapter source with its own endpoint and credentials folder (``adapter-<i>``)."""
    if config.spec.adapters is None:
        return []
    located = locate_inputs(config)
    return [
        check_adapter_folder(fetch_input(located[f"{ADAPTER_PREFIX}{i}"], ADAPTER_INPUT, workdir), source.uri)
        for i, source in enumerate(config.spec.adapters.sources)
    ]


def fetch_dataset(config: TrainerConfig, workdir: Path) -> Path:
    assert config.spec.dataset is not None
    located = locate_inputs(config)[DATASET]
    return fetch_input(located, DATASET_INPUT, workdir, revision=config.spec.dataset.revision)


def fetch_merge_inputs(config: TrainerConfig, workdir: Path) -> tuple[Path, list[Path]]:
    return fetch_base_model(config, workdir), fetch_adapters(config, workdir)


@dataclass(frozen=True)
class FetchedInputs:
    model_dir: Path
    adapters: list[Path]
    data_path: Path


def fetch_training_inputs(config: TrainerConfig, workdir: Path) -> FetchedInputs:
    """Download (or find cached in ``workdir``) the model, adapters and data: no torch, no collectives."""
    assert config.spec.dataset is not None
    return FetchedInputs(
        model_dir=fetch_base_model(config, workdir),
        adapters=fetch_adapters(config, workdir),
        data_path=fetch_dataset(config, workdir),
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
    from kubepeft_trainer.data.records import load_records

    spec = config.spec
    if spec.dataset is None:
        return 0
    return len(load_records(spec.dataset, fetch_dataset(config, workdir)))
