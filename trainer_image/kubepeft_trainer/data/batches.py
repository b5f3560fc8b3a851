"""Examples -> the tensors one forward takes.

* Plain examples are right-padded: ``input_ids`` with the pad token, ``attention_mask`` 1/0,
  ``labels`` -100 on padding.
* Packed rows (they carry ``position_ids``, see ``data.packing``) get no attention mask: with
  ``position_ids`` and no mask, transformers builds the block-diagonal causal mask itself. Rows are
  right-padded to the widest one, the padding numbered as one more sequence (positions from 0),
  so that it is masked off from every real example. With a flash-attention model (``flatten``)
  the micro-batch becomes a single row without any padding: the varlen kernel reads the sequence
  boundaries from the position ids, which it only does for a batch of one row; SDPA and eager
  would instead build a dense (tokens x tokens) mask for that row, hence rows for them.

Call the model with :func:`model_inputs` (``use_cache=False``): with a KV cache, transformers does
not look for packed sequences in the position ids, and the examples of a row would attend to each
other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kubepeft_trainer.data.templates import IGNORE_INDEX, Example

if TYPE_CHECKING:  # torch stays out of the light data path (the launcher's dataset preflight)
    import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def collate(batch: Sequence[Example], pad_token_id: int, *, flatten: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of ``batch``: padded examples, or packed rows (one flattened row with ``flatten``)."""
    if "position_ids" not in batch[0]:
        return _padded(batch, pad_token_id)
    if flatten:
        batch = [{key: [v for row in batch for v in row[key]] for key in ("input_ids", "labels", "position_ids")}]
    return _packed_rows(batch, pad_token_id)


def _padded(batch: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
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


def _packed_rows(batch: Sequence[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(e["input_ids"]) for e in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(example["labels"], dtype=torch.long)
        position_ids[row, :n] = torch.tensor(example["position_ids"], dtype=torch.long)
        # The padding restarts at 0: a sequence of its own, which no real token attends to.
        position_ids[row, n:] = torch.arange(width - n)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The forward's keyword arguments. ``use_cache=False``: training needs no KV cache, and with one
    transformers would not look for packed sequences in the position ids."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch} | {"use_cache": False}


def count_tokens(examples: Sequence[Example]) -> int:
    """Real (non-padding) tokens of examples or packed rows."""
    return sum(len(e["input_ids"]) for e in examples)


def uses_varlen_attention(model: Any) -> bool:
    """Whether the model's attention is a flash-attention (varlen) kernel: packed batches are then flattened."""
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", None) or "")
