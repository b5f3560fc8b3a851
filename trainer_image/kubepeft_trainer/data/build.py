"""Records -> tokenized train/validation sets, and batches.

Order of operations (all deterministic for a seed): seeded shuffle -> ``maxSamples`` -> split off
the validation records -> tokenize -> truncate to ``maxSeqLength`` (with ``packing``, text documents
are cut into ``maxSeqLength`` pieces instead) -> drop examples without a label token -> with
``packing``, pack whole examples into rows (``data.packing``). Splitting before packing keeps
validation text out of every training row.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepeft.api.models import DatasetSpec, TrainingSpec
from kubepeft_trainer.data.packing import pack, split_long
from kubepeft_trainer.data.templates import IGNORE_INDEX, Example, tokenize_record
from kubepeft_trainer.errors import PermanentTrainerError

log = logging.getLogger(__name__)


@dataclass
class TokenizedDataset(Sequence[Example]):
    """A map-style dataset of ``{"input_ids", "labels"}`` examples, or of packed rows that also carry
    ``position_ids`` (usable by ``torch.utils.data.DataLoader``)."""

    examples: list[Example] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:  # type: ignore[override]
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def num_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)


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
    train_records, val_records = split_records(
        records, validation_split=ds.validation_split, max_samples=ds.max_samples, seed=seed
    )
    train = _tokenize_all(train_records, ds, training, tokenizer, "training")
    validation = _tokenize_all(val_records, ds, training, tokenizer, "validation") if val_records else None
    log.info(
        "dataset: %d training %s (%d tokens), %d validation %s",
        len(train),
        "packed rows" if training.packing else "sequences",
        train.num_tokens(),
        len(validation) if validation else 0,
        "packed rows" if training.packing else "sequences",
    )
    return train, validation


def _tokenize_all(
    records: Sequence[dict[str, Any]], ds: DatasetSpec, training: TrainingSpec, tokenizer: Any, part: str
) -> TokenizedDataset:
    max_len = training.max_seq_length
    examples = [tokenize_record(r, ds, tokenizer) for r in records]
    if training.packing and ds.template == "text":
        # Documents, not turns: keep every token of a long one, as the old concatenate-and-cut did.
        cut = [piece for e in examples for piece in split_long(e, max_len)]
    else:
        cut = [truncate(e, max_len) for e in examples]
    # A prompt longer than maxSeqLength leaves nothing to learn from: the example is dropped.
    kept = [e for e in cut if any(t != IGNORE_INDEX for t in e["labels"][1:])]
    dropped = len(cut) - len(kept)
    if dropped:
        log.warning(
            "%s: %d of %d examples have no response tokens within maxSeqLength %d and were dropped",
            part,
            dropped,
            len(cut),
            max_len,
        )
    if not kept:
        raise PermanentTrainerError(
            f"training.maxSeqLength {max_len}: every {part} example is cut before its first "
            "label token; raise maxSeqLength or shorten the prompts"
        )
    if training.packing:
        rows = pack(kept, max_len)
        log.info("%s: %d examples packed into %d rows of at most %d tokens", part, len(kept), len(rows), max_len)
        return TokenizedDataset(rows)
    return TokenizedDataset(kept)


def truncate(example: Example, max_len: int) -> Example:
    return {"input_ids": example["input_ids"][:max_len], "labels": example["labels"][:max_len]}
