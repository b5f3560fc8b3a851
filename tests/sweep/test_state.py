"""The state machine: parallelism, failures, suspend, pruning, objective and best trial."""

from __future__ import annotations

from kubepeft.api.sweep_models import PeftSweepStatus, SweepTrial
from kubepeft.contract import ReportArtifacts, ReportProgress, TrainerReport
from kubepeft.sweep.objective import best_trial, ranked
from kubepeft.sweep.state import apply_report, decide
from tests.sweep.support import RANK_GROUP, sweep_spec


def finish(status: PeftSweepStatus, name: str, phase: str, objective: float | None = None) -> PeftSweepStatus:
    trials = [
        t.model_copy(update={"phase": phase, "objective": objective}) if t.name == name else t for t in status.trials
    ]
    return status.model_copy(update={"trials": trials})


def test_never_more_than_max_parallel_and_ends_succeeded_with_the_best() -> None:
    spec = sweep_spec(RANK_GROUP, maxParallel=2)
    status = PeftSweepStatus()
    first = decide("s", spec, status)
    assert [t.name for t in first.create] == ["s-t0", "s-t1"] and first.status.phase == "Running"
    assert decide("s", spec, first.status).create == []  # both still active
    status = finish(first.status, "s-t0", "Succeeded", 0.9)
    second = decide("s", spec, status)
    assert [t.name for t in second.create] == ["s-t2"]
    status = second.status
    for name, value in (("s-t1", 0.5), ("s-t2", 0.7)):
        status = finish(status, name, "Succeeded", value)
    status = decide("s", spec, status).status
    status = finish(status, "s-t3", "Succeeded", 0.6)
    final = decide("s", spec, status).status
    assert final.phase == "Succeeded" and final.trial_count == final.succeeded == 4
    assert final.best_trial is not None and final.best_trial.name == "s-t1" and final.best_trial.objective == 0.5
    assert final.best_trial.parameters == {"lora.r": "4", "lora.alpha": "8"}


def test_failures_are_tolerated_up_to_max_failed_trials() -> None:
    spec = sweep_spec(RANK_GROUP, maxParallel=4, maxFailedTrials=1)
    status = decide("s", spec, PeftSweepStatus()).status
    status = finish(status, "s-t0", "Failed")
    tolerated = decide("s", spec, status)
    assert tolerated.status.phase == "Running" and tolerated.stop == []
    status = finish(tolerated.status, "s-t1", "Failed")
    failed = decide("s", spec, status)
    assert failed.status.phase == "Failed" and sorted(failed.stop) == ["s-t2", "s-t3"]
    assert "maxFailedTrials" in (failed.status.message or "")
    assert decide("s", spec, failed.status).create == []  # a failed sweep starts nothing


def test_suspend_stops_running_trials_and_creates_none() -> None:
    spec = sweep_spec(RANK_GROUP, maxParallel=2)
    status = decide("s", spec, PeftSweepStatus()).status
    suspended = decide("s", sweep_spec(RANK_GROUP, maxParallel=2, suspend=True), status)
    assert suspended.create == [] and sorted(suspended.stop) == ["s-t0", "s-t1"]
    assert suspended.status.phase == "Suspended"


def test_objective_and_ranking_follow_the_direction() -> None:
    rows = [
        SweepTrial(name="a", index=0, phase="Succeeded", objective=0.3),
        SweepTrial(name="b", index=1, phase="Succeeded", objective=0.1),
        SweepTrial(name="c", index=2, phase="Failed"),
        SweepTrial(name="d", index=3, phase="Succeeded", objective=0.1),
    ]
    low = sweep_spec(RANK_GROUP).objective
    high = sweep_spec(RANK_GROUP, objective={"direction": "maximize"}).objective
    assert [t.name for t in ranked(low, rows)] == ["b", "d", "a", "c"]
    assert [t.name for t in ranked(high, rows)] == ["a", "b", "d", "c"]
    assert best_trial(low, rows).name == "b"  # type: ignore[union-attr]
    assert best_trial(high, rows).name == "a"  # type: ignore[union-attr]
    assert best_trial(low, rows[2:3]) is None


def test_reports_fill_the_trials_table() -> None:
    spec = sweep_spec(RANK_GROUP, objective={"metric": "evalLoss"})
    row = SweepTrial(name="s-t0", index=0, phase="Pending")
    training = TrainerReport(
        state="Training",
        eval_loss_before=2.5,
        trainable_parameters=1024,
        progress=ReportProgress(step=10, total_steps=30, loss=1.5, eval_loss=1.8, tokens_per_second=900.0),
    )
    row = apply_report(spec, row, training)
    row = apply_report(
        spec, row, training.model_copy(update={"progress": training.progress.model_copy(update={"step": 15})})
    )
    assert row.phase == "Running" and [(e.step, e.loss) for e in row.evaluations] == [(10, 1.8)]
    done = TrainerReport(
        state="Succeeded",
        eval_loss_after=1.2,
        peak_memory_bytes=2**30,
        progress=ReportProgress(step=30, total_steps=30, loss=1.1, eval_loss=1.2),
        artifacts=ReportArtifacts(adapter="s3://b/runs/default/s-t0/adapter"),
    )
    row = apply_report(spec, row, done)
    assert row.phase == "Succeeded" and row.objective == 1.2 and row.train_loss == 1.1
    assert (row.trainable_parameters, row.peak_memory_bytes, row.tokens_per_second) == (1024, 2**30, 900.0)
    assert row.adapter == "s3://b/runs/default/s-t0/adapter" and len(row.evaluations) == 2
    by_train = apply_report(
        sweep_spec(RANK_GROUP, objective={"metric": "trainLoss"}), SweepTrial(name="x", index=0), done
    )
    assert by_train.objective == 1.1


def test_decide_prunes_a_running_trial_worse_than_the_median_and_starts_the_next() -> None:
    spec = sweep_spec([{"path": "lora.r", "values": [2, 4, 8, 16, 32]}], maxParallel=1, earlyStopping={"minTrials": 2})
    rows = []
    for index, losses in enumerate([[2.0, 1.0], [2.2, 1.1]]):
        row = SweepTrial.model_validate(
            {
                "name": f"s-t{index}",
                "index": index,
                "parameters": {"lora.r": str(2 * 2**index)},
                "phase": "Succeeded",
                "objective": losses[-1],
                "evaluations": [{"step": 10, "loss": losses[0]}, {"step": 20, "loss": losses[1]}],
            }
        )
        rows.append(row)
    running = SweepTrial.model_validate(
        {
            "name": "s-t2",
            "index": 2,
            "parameters": {"lora.r": "8"},
            "phase": "Running",
            "evaluations": [{"step": 10, "loss": 3.5}],
        }
    )
    decision = decide("s", spec, PeftSweepStatus(trials=[*rows, running]))
    assert decision.prune == ["s-t2"] and [t.name for t in decision.create] == ["s-t3"]
    pruned = next(t for t in decision.status.trials if t.name == "s-t2")
    assert pruned.phase == "Pruned" and "median" in (pruned.message or "")
    assert decision.status.pruned == 1 and decision.status.phase == "Running"
