"""Read dataset files into records and check each one against the template, naming file and line.

Every problem is a :class:`PermanentTrainerError` whose message starts with where it is:
``data.jsonl:17: invalid JSON (...)``, ``data.csv:5: missing field 'response'``,
``data.parquet: row index 3: field 'prompt' must be a string``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubepeft.api.models import DatasetSpec
from kubepeft.storage import MANIFEST_NAME
from kubepeft_trainer.errors import PermanentTrainerError

Record = dict[str, Any]
EXTENSIONS = {"jsonl": (".jsonl", ".json"), "csv": (".csv",), "parquet": (".parquet",)}


def load_records(ds: DatasetSpec, source: Path | str) -> list[Record]:
    """All records of the dataset at ``source`` (a file, or a folder of files of ``ds.format``, read in name order)."""
    source = Path(source)
    if ds.format == "hf":
        records = list(_read_hf(source, ds))
        where = f"dataset {ds.uri} (split {ds.split})"
    else:
        records = []
        for path, display in _data_files(source, ds):
            for location, record in _READERS[ds.format](path, display):
                check_record(record, ds, location)
                records.append(record)
        where = f"dataset {ds.uri}"
    if not records:
        raise PermanentTrainerError(f"{where}: no records")
    return records


def _data_files(source: Path, ds: DatasetSpec) -> list[tuple[Path, str]]:
    if source.is_file():
        return [(source, ds.uri)]
    if not source.is_dir():
        raise PermanentTrainerError(f"dataset {ds.uri}: {source} does not exist")
    suffixes = EXTENSIONS[ds.format]
    files = sorted(
        p
        for p in source.rglob("*")
        if p.is_file() and p.name.endswith(suffixes) and p.relative_to(source).as_posix() != MANIFEST_NAME
    )
    if not files:
        raise PermanentTrainerError(f"dataset {ds.uri}: no {'/'.join(suffixes)} files for format {ds.format}")
    base = ds.uri.rstrip("/")
    return [(p, f"{base}/{p.relative_to(source).as_posix()}") for p in files]


def _read_jsonl(path: Path, display: str) -> Iterator[tuple[str, Record]]:
    with _open_text(path, display) as f:
        for lineno, line in _numbered_lines(f, display):
            if not line.strip():
                continue
            where = f"{display}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PermanentTrainerError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise PermanentTrainerError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _numbered_lines(f: Any, display: str) -> Iterator[tuple[int, str]]:
    try:
        yield from enumerate(f, start=1)
    except UnicodeDecodeError as exc:
        raise PermanentTrainerError(f"{display}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _open_text(path: Path, display: str) -> Any:
    try:
        return path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise PermanentTrainerError(f"{display}: cannot open ({exc.strerror})") from None


def _read_csv(path: Path, display: str) -> Iterator[tuple[str, Record]]:
    with _open_text(path, display) as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if not header:
                raise PermanentTrainerError(f"{display}:1: empty file or missing header row")
            if len(set(header)) != len(header):
                raise PermanentTrainerError(f"{display}:1: duplicate column names in the header {header}")
            for row in reader:
                if not row:
                    continue
                where = f"{display}:{reader.line_num}"
                if len(row) != len(header):
                    raise PermanentTrainerError(f"{where}: expected {len(header)} columns, got {len(row)}")
                yield where, dict(zip(header, row, strict=True))
        except csv.Error as exc:
            raise PermanentTrainerError(f"{display}:{reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise PermanentTrainerError(f"{display}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_parquet(path: Path, display: str) -> Iterator[tuple[str, Record]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise PermanentTrainerError(f"{display}: not a readable parquet file ({exc})") from None
    for index, record in enumerate(table.to_pylist()):
        yield f"{display}: row index {index}", record


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}


def _read_hf(source: Path, ds: DatasetSpec) -> Iterator[Record]:
    """A hub dataset snapshot (or any folder ``datasets`` understands), one split of it."""
    import datasets

    try:
        dataset = datasets.load_dataset(str(source), split=ds.split)
    except ValueError as exc:  # unknown split, no data files
        raise PermanentTrainerError(f"dataset {ds.uri} (split {ds.split}): {exc}") from None
    except datasets.exceptions.DatasetGenerationError as exc:
        raise PermanentTrainerError(f"dataset {ds.uri}: cannot read its files ({exc.__cause__ or exc})") from None
    for index, record in enumerate(dataset):
        check_record(record, ds, f"{ds.uri} (split {ds.split}): row index {index}")
        yield record


def required_fields(ds: DatasetSpec) -> list[str]:
    if ds.template == "text":
        return [ds.text_field]
    if ds.template == "promptResponse":
        return [ds.prompt_field, ds.response_field]
    return [ds.messages_field]


def check_record(record: Record, ds: DatasetSpec, where: str) -> None:
    """Raise a located error when ``record`` lacks a field the template needs or has the wrong type."""
    for field in required_fields(ds):
        if field not in record or record[field] is None:
            raise PermanentTrainerError(f"{where}: missing field {field!r} (template {ds.template})")
    if ds.template == "chat":
        _check_messages(record[ds.messages_field], ds.messages_field, where)
        return
    for field in required_fields(ds):
        if not isinstance(record[field], str):
            raise PermanentTrainerError(
                f"{where}: field {field!r} must be a string, got {type(record[field]).__name__}"
            )


def _check_messages(messages: Any, field: str, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise PermanentTrainerError(f"{where}: field {field!r} must be a non-empty list of {{role, content}} messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise PermanentTrainerError(f"{where}: {field}[{i}] must be an object with role and content")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise PermanentTrainerError(f"{where}: {field}[{i}] needs a string {key!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise PermanentTrainerError(f"{where}: {field} has no assistant message to learn from")
