"""The rank <-> launcher files: typed, versioned, written atomically, errors naming the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from kubepeft_trainer.launcher import classify_exit
from kubepeft_trainer.rank_files import (
    FAILURE_VERSION,
    RESULT_VERSION,
    RankFailure,
    RankFileError,
    TrainingResult,
    failure_path,
    read_failures,
    read_result,
    result_path,
    write_failure,
    write_result,
)

from kubepeft.contract import EXIT_PERMANENT, EXIT_RETRYABLE


def result(**overrides: object) -> TrainingResult:
    fields: dict[str, object] = {
        "total_steps": 4,
        "final_step": 4,
        "epoch": 0.5,
        "resumed_from_step": 2,
        "eval_loss_before": 2.0,
        "eval_loss_after": 1.25,
        "loss_history": [(1, 3.0), (2, 2.5), (3, 2.0), (4, 1.8)],
        "eval_history": [(2, 1.5)],
        "tokens_seen": 400,
        "committed_checkpoints": [2, 4],
        "trainable_parameters": 10,
        "total_parameters": 100,
        "peak_memory_bytes": 1 << 20,
    }
    fields.update(overrides)
    return TrainingResult.model_validate(fields)


def test_result_round_trip_is_exact(tmp_path: Path) -> None:
    written = result(loss_history=[(1, 0.1 + 0.2), (2, 1e-310)])
    path = write_result(tmp_path, written)
    assert path == result_path(tmp_path) == tmp_path / "export" / "training_result.json"
    assert json.loads(path.read_text())["version"] == RESULT_VERSION
    assert read_result(tmp_path) == written
    assert not list(path.parent.glob("*.partial"))  # written through a temporary file


def test_a_diverged_loss_survives_the_round_trip(tmp_path: Path) -> None:
    write_result(tmp_path, result(eval_loss_after=math.inf, loss_history=[(1, math.nan)]))
    back = read_result(tmp_path)
    assert back.eval_loss_after == math.inf and math.isnan(back.loss_history[0][1])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not a valid TrainingResult"),
        ('{"version": "kubepeft.dev/training-result/v0", "total_steps": 1, "final_step": 1, "epoch": 1}', "version"),
        ('{"total_steps": 1, "final_step": 1}', "epoch"),
        ('{"total_steps": 1, "final_step": 1, "epoch": 1, "surprise": 1}', "surprise"),
    ],
)
def test_a_malformed_or_foreign_result_names_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = result_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(RankFileError, match=says) as caught:
        read_result(tmp_path)
    assert str(path) in str(caught.value)


def test_a_missing_result_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RankFileError, match=r"training_result\.json: cannot read"):
        read_result(tmp_path)


def test_failures_round_trip_in_rank_order(tmp_path: Path) -> None:
    assert read_failures(tmp_path) == []
    for rank in (1, 0):
        write_failure(tmp_path, RankFailure(rank=rank, exit_code=EXIT_RETRYABLE, error="RuntimeError", message="x"))
    assert json.loads(failure_path(tmp_path, 0).read_text())["version"] == FAILURE_VERSION
    assert [f.rank for f in read_failures(tmp_path)] == [0, 1]


def test_an_unreadable_failure_is_retryable_and_does_not_hide_a_permanent_one(tmp_path: Path) -> None:
    write_failure(tmp_path, RankFailure(rank=1, exit_code=EXIT_PERMANENT, error="PermanentTrainerError", message="bad"))
    torn = failure_path(tmp_path, 0)
    torn.write_text('{"rank": 0, "exit_')
    failures = read_failures(tmp_path)
    assert failures[0].exit_code == EXIT_RETRYABLE and str(torn) in failures[0].message
    assert classify_exit(1, failures) == (EXIT_PERMANENT, "bad")
    code, message = classify_exit(1, failures[:1])
    assert code == EXIT_RETRYABLE and str(torn) in (message or "")
