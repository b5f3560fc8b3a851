"""The tiny letter-counting language and its datasets, in pure Python (no torch).

The tiny model (``kubepeft_trainer.tiny_model``) is pretrained on this language; the demo, the
sweep examples, the tests and the benchmarks fine-tune it on the tasks below:

* :func:`tiny_training_records` -- ``"f ="`` -> ``" e d c b a"`` (the base counts up; fine-tuning
  flips it to counting down), also as chat (:func:`tiny_chat_records`) and plain text
  (:func:`tiny_text_records`) records;
* :func:`task_records` -- the three tiny tasks of the prompt-bank sweep example (``down``,
  ``up``, ``skip``).

:func:`write_dataset` writes records as JSONL, CSV or Parquet (Parquet needs pyarrow, part of the
``trainer`` extra).
"""

from __future__ import annotations

import csv
import json
import random
import string
from pathlib import Path
from typing import Any

LETTERS = string.ascii_lowercase
TASKS = ("down", "up", "skip")


def count(start: str, direction: str) -> str:
    """The response of the counting language: `` b c d`` for (``a``, ``up``); `` b a`` for (``c``, ``down``)."""
    i = LETTERS.index(start)
    letters = LETTERS[i + 1 :] if direction == "up" else LETTERS[:i][::-1]
    return "".join(" " + c for c in letters)


def tiny_training_records(n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt/response records of the fine-tuning task: ``"f ="`` -> ``" e d c b a"``.

    The base model continues these prompts counting up; after fine-tuning it counts down.
    """
    rng = random.Random(f"tiny-records-{seed}")
    records = []
    for _ in range(n):
        start = rng.choice(LETTERS[1:])
        records.append({"prompt": f"{start} =", "response": count(start, "down")})
    return records


def tiny_chat_records(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """The same task as :func:`tiny_training_records` as ``messages`` records (chat template)."""
    return [
        {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]}
        for r in tiny_training_records(n, seed=seed)
    ]


def tiny_text_records(n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """The same task as plain ``text`` records (prompt and response joined)."""
    return [{"text": r["prompt"] + r["response"]} for r in tiny_training_records(n, seed=seed)]


def write_dataset(path: Path, records: list[dict[str, Any]], fmt: str) -> Path:
    """Write ``records`` as ``jsonl``, ``csv`` (flat string fields only) or ``parquet``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        fields = list(dict.fromkeys(k for record in records for k in record))
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(records)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise ValueError(f"unknown dataset format {fmt!r} (jsonl, csv, parquet)")
    return path


def task_records(task: str, n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt/response records of one tiny task (``"f ="`` -> the task's continuation)."""
    rng = random.Random(f"tiny-task-{task}-{seed}")
    records = []
    for _ in range(n):
        if task == "up":
            start = rng.choice(LETTERS[:-1])
            response = count(start, "up")
        else:
            start = rng.choice(LETTERS[2:] if task == "skip" else LETTERS[1:])
            response = count(start, "down")
            if task == "skip":
                response = "".join(" " + c for c in response.split()[1::2])
        records.append({"prompt": f"{start} =", "response": response})
    return records
