"""Padding-free packing: several whole examples share one row, each keeping its own positions.

A packed row is the concatenation of its examples with

* ``position_ids`` restarting at 0 for every example: the model's rotary embeddings see each
  example exactly as if it were alone, and transformers derives from the resets a block-diagonal
  causal mask (SDPA/eager: ``masking_utils.find_packed_sequence_indices``; flash attention: the
  varlen kernel's ``cu_seqlens``), so no example attends to another;
* the first label of every example set to ``-100``: under the causal shift it is the target of
  the previous example's last token, and it is never a target when the example stands alone.

This is the format of transformers' ``DataCollatorWithFlattening`` (tested equal), built once per
dataset instead of per batch so that a row is a unit of the data order (``sampling.DataPlan``).

Rows are filled by best-fit decreasing: examples longest first, each into the row with the least
room that still holds it, so rows come out nearly full and the order is deterministic.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from kubepeft_trainer.data.templates import IGNORE_INDEX, Example


def best_fit_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total length <= ``capacity`` (best-fit decreasing).

    Each bin lists its indices in ascending order; bins are in the order they were opened.
    """
    if any(n > capacity or n < 1 for n in lengths):
        raise ValueError(f"every length must be in 1..{capacity}")
    bins: list[list[int]] = []
    # Free room -> bins with exactly that room (a stack), and the sorted distinct rooms: the best
    # fit for a length n is the smallest room >= n. At most capacity + 1 distinct rooms exist.
    by_room: dict[int, list[int]] = {}
    rooms: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[index]
        at = bisect.bisect_left(rooms, n)
        if at == len(rooms):
            target, room = len(bins), capacity
            bins.append([])
        else:
            room = rooms[at]
            target = by_room[room].pop()
            if not by_room[room]:
                del by_room[room]
                rooms.pop(at)
        bins[target].append(index)
        left = room - n
        if left not in by_room:
            by_room[left] = []
            bisect.insort(rooms, left)
        by_room[left].append(target)
    return [sorted(b) for b in bins]


def packed_row(parts: Sequence[Example]) -> Example:
    """One row of ``parts``: concatenated ids and labels (each part's first label -100), positions reset."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for part in parts:
        ids.extend(part["input_ids"])
        labels.append(IGNORE_INDEX)
        labels.extend(part["labels"][1:])
        positions.extend(range(len(part["input_ids"])))
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def pack(examples: Sequence[Example], max_len: int) -> list[Example]:
    """Whole examples (each at most ``max_len`` tokens) packed into rows of at most ``max_len`` tokens."""
    bins = best_fit_bins([len(e["input_ids"]) for e in examples], max_len)
    return [packed_row([examples[i] for i in b]) for b in bins]


def split_long(example: Example, max_len: int) -> list[Example]:
    """A text document cut into ``max_len`` pieces (each its own example; a 1-token tail has no target
    and is dropped), so that packing keeps every token of long documents, as concatenate-and-cut did."""
    ids, labels = example["input_ids"], example["labels"]
    return [
        {"input_ids": ids[i : i + max_len], "labels": labels[i : i + max_len]}
        for i in range(0, len(ids), max_len)
        if len(ids[i : i + max_len]) > 1
    ]
