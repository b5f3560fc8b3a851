"""The files the ranks leave for their node's launcher, as typed, versioned documents.

``accelerate launch`` only says that some rank failed, and the ranks' results live in their
memory: so every rank process hands over through files in the node's work folder.

* ``export/training_result.json`` (:class:`TrainingResult`, rank 0): what training achieved,
  read by the launcher for the last progress report and by the export for ``metrics.json``;
* ``export/adapter/`` -- the trained adapter (PEFT layout), uploaded by the export;
* ``failures/rank-<N>.json`` (:class:`RankFailure`): a failed rank's class and message, from
  which the launcher tells bad input (exit 3) from anything else.

Writers and readers share this module: a file of another version, or one that does not parse,
is a :class:`RankFileError` naming the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubepeft.contract import EXIT_RETRYABLE

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
ADAPTER_DIR = "adapter"
RESULT_FILE = "training_result.json"
FAILURES_DIR = "failures"

RESULT_VERSION: Literal["kubepeft.dev/training-result/v1"] = "kubepeft.dev/training-result/v1"
FAILURE_VERSION: Literal["kubepeft.dev/rank-failure/v1"] = "kubepeft.dev/rank-failure/v1"


class RankFileError(ValueError):
    """A rank file is missing, malformed or of another version; the message names the file."""


class _RankFile(BaseModel):
    # NaN/inf stay numbers (a diverged loss is a result, not a malformed file), as json.dumps writes them.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


class TrainingResult(_RankFile):
    """What rank 0 hands its launcher after training and the final evaluation."""

    version: Literal["kubepeft.dev/training-result/v1"] = RESULT_VERSION
    total_steps: int
    final_step: int
    epoch: float
    resumed_from_step: int | None = None
    eval_loss_before: float | None = None
    eval_loss_after: float | None = None
    perplexity_after: float | None = None
    loss_history: list[tuple[int, float]] = Field(default_factory=list)
    eval_history: list[tuple[int, float]] = Field(default_factory=list)
    tokens_seen: int = 0
    train_seconds_this_attempt: float = 0.0
    steps_this_attempt: int = 0
    world_size: int = 1
    committed_checkpoints: list[int] = Field(default_factory=list)
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    peak_memory_bytes: int | None = None
    """Peak accelerator memory of rank 0 (CUDA), else the peak resident memory of its process."""


class RankFailure(_RankFile):
    """Why one rank failed: the exit code it chose (3: bad input) and the error."""

    version: Literal["kubepeft.dev/rank-failure/v1"] = FAILURE_VERSION
    rank: int
    exit_code: int
    error: str
    message: str


_File = TypeVar("_File", bound=_RankFile)


def result_path(workdir: Path) -> Path:
    return workdir / EXPORT_DIR / RESULT_FILE


def adapter_dir(workdir: Path) -> Path:
    return workdir / EXPORT_DIR / ADAPTER_DIR


def failure_path(workdir: Path, rank: int) -> Path:
    return workdir / FAILURES_DIR / f"rank-{rank}.json"


def write_rank_file(path: Path, document: _RankFile) -> Path:
    """Atomically (temporary file + rename): a rank killed mid-write leaves no torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(document.model_dump_json(indent=1), encoding="utf-8")
    os.replace(partial, path)
    return path


def read_rank_file(path: Path, kind: type[_File]) -> _File:
    """The document at ``path``; :class:`RankFileError` naming the file when it is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RankFileError(f"{path}: cannot read the {kind.__name__}: {exc.strerror or exc}") from None
    try:
        return kind.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise RankFileError(f"{path}: not a valid {kind.__name__} ({problems})") from None


def write_result(workdir: Path, result: TrainingResult) -> Path:
    return write_rank_file(result_path(workdir), result)


def read_result(workdir: Path) -> TrainingResult:
    return read_rank_file(result_path(workdir), TrainingResult)


def write_failure(workdir: Path, failure: RankFailure) -> Path:
    return write_rank_file(failure_path(workdir, failure.rank), failure)


def read_failures(workdir: Path) -> list[RankFailure]:
    """Every rank's failure file, by name. An unusable one counts as a retryable failure whose
    message names the file: it must neither be ignored nor hide another rank's permanent one."""
    folder = workdir / FAILURES_DIR
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("rank-*.json")):
        try:
            out.append(read_rank_file(path, RankFailure))
        except RankFileError as exc:
            log.warning("%s", exc)
            rank = path.stem.removeprefix("rank-")
            out.append(
                RankFailure(
                    rank=int(rank) if rank.isdigit() else -1,
                    exit_code=EXIT_RETRYABLE,
                    error=RankFileError.__name__,
                    message=str(exc),
                )
            )
    return out
