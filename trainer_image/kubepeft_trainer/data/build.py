"""Records -> tokenized train/validation sets, and batches.

Order of operations (all deterministic for a seed): seeded shuffle -> ``maxSamples`` -> split off
the validation records -> tokenize -> truncate to ``maxSeqLength`` (or pack, text template only).
Splitting before packing keeps validation text out of every training sequence.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubepeft.api.models import DatasetSpec, TrainingSpec
from kubepeft_trainer.data.templates import IGNORE_INDEX, Example, tokenize_record
from kubepeft_trainer.errors import PermanentTrainerError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class TokenizedDataset(Sequence[Example]):
    """A map-style dataset of ``{"input_ids", "labels"}`` examples (usable by ``torch.utils.data.DataLoader``)."""

    examples: list[Example] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:  # type: ignore[override]
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def num_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    def num_label_tokens(self) -> int:
        """Tokens that carry loss (the causal shift drops each example's first position)."""
        return sum(sum(1 for t in e["labels"][1:] if t != IGNORE_INDEX) for e in self.examples)


def split_records(
    records: Sequence[dict[str, Any]], *, validation_split: float, max_samples: int | None, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded shuffle, then ``max_samples``, then (train, validation). Validation gets
    ``round(n * split)`` records (at least one when the split is positive and n >= 2)."""
    order = list(records)
    random.Random(seed).shuffle(order)
    if max_samples is not None:
        order = order[:max_samples]
    n_val = 0
    if validation_split > 0 and len(order) >= 2:
        n_val = min(len(order) - 1, max(1, round(len(order) * validation_split)))
    return order[n_val:], order[:n_val]


def build_datasets(
    ds: DatasetSpec, training: TrainingSpec, tokenizer: Any, records: Sequence[dict[str, Any]], *, seed: int
) -> tuple[TokenizedDataset, TokenizedDataset | None]:
    """The tokenized training set and the validation set (None when ``validationSplit`` is 0)."""
    if training.packing and ds.template != "text":
        raise PermanentTrainerError(f"training.packing: applies to dataset.template text only, not {ds.template}")
    train_records, val_records = split_records(
        records, validation_split=ds.validation_split, max_samples=ds.max_samples, seed=seed
    )
    train = _tokenize_all(train_records, ds, training, tokenizer, "training")
    validation = _tokenize_all(val_records, ds, training, tokenizer, "validation") if val_records else None
    log.info(
        "dataset: %d training sequences (%d tokens), %d validation sequences",
        len(train),
        train.num_tokens(),
        len(validation) if validation else 0,
    )
    return train, validation


def _tokenize_all(
    records: Sequence[dict[str, Any]], ds: DatasetSpec, training: TrainingSpec, tokenizer: Any, part: str
) -> TokenizedDataset:
    examples = [tokenize_record(r, ds, tokenizer) for r in records]
    if training.packing:
        return TokenizedDataset(pack(examples, training.max_seq_length))
    kept, dropped = [], 0
    for example in examples:
        cut = truncate(example, training.max_seq_length)
        # A prompt longer than maxSeqLength leaves nothing to learn from: the example is dropped.
        if any(t != IGNORE_INDEX for t in cut["labels"][1:]):
            kept.append(cut)
        else:
            dropped += 1
    if dropped:
        log.warning(
            "%s: %d of %d examples have no response tokens within maxSeqLength %d and were dropped",
            part,
            dropped,
            len(examples),
            training.max_seq_length,
        )
    if not kept:
        raise PermanentTrainerError(
            f"training.maxSeqLength {training.max_seq_length}: every {part} example is cut before its first "
            "label token; raise maxSeqLength or shorten the prompts"
        )
    return TokenizedDataset(kept)


def truncate(example: Example, max_len: int) -> Example:
    return {"input_ids": example["input_ids"][:max_len], "labels": example["labels"][:max_len]}


def pack(examples: Sequence[Example], max_len: int) -> list[Example]:
    """Concatenate examples (each ends with EOS) and cut the stream into ``max_len`` sequences; only the
    last may be shorter. Sequences span example boundaries, as in ``run_clm``'s ``group_texts``."""
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        ids.extend(example["input_ids"])
        labels.extend(example["labels"])
    return [
        {"input_ids": ids[i : i + max_len], "labels": labels[i : i + max_len]}
        for i in range(0, len(ids), max_len)
        if len(ids[i : i + max_len]) > 1
    ]


def collate(batch: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` with the pad token, ``attention_mask`` 1/0, ``labels`` with -100."""
    import torch

    width = max(len(e["input_ids"]) for e in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example["labels"], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
