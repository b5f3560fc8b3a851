"""The sweep's state machine (pure): the trials table, what to do next, and the summary.

Everything is a function of the spec and the status, so the operator and the local run make the
same decisions and a restart (operator or ``kubepeft run``) continues from the status alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubepeft.api.sweep_models import (
    FINISHED_TRIAL_PHASES,
    Evaluation,
    PeftSweepSpec,
    PeftSweepStatus,
    SweepPhase,
    SweepTrial,
)
from kubepeft.contract import TrainerReport
from kubepeft.sweep.expand import grid, planned_trials
from kubepeft.sweep.naming import trial_name
from kubepeft.sweep.objective import best_trial, objective_value
from kubepeft.sweep.paths import value_text

ACTIVE_TRIAL_PHASES = ("Pending", "Running")


def new_trial(sweep: str, index: int, values: dict[str, Any]) -> SweepTrial:
    return SweepTrial(
        name=trial_name(sweep, index), index=index, parameters={k: value_text(v) for k, v in values.items()}
    )


def trial_values(spec: PeftSweepSpec, index: int, trials: Sequence[SweepTrial]) -> dict[str, Any]:
    """The values of trial ``index``: the grid's, or the sampler's given the trials so far."""
    if spec.strategy.type == "grid":
        return grid(spec)[index]
    from kubepeft.sweep.search import suggest  # Optuna only for random and tpe

    return suggest(spec, index, trials)


def with_evaluation(trial: SweepTrial, step: int, loss: float) -> SweepTrial:
    """Record an evaluation once (reports repeat the latest eval loss until the next evaluation)."""
    if trial.evaluations and trial.evaluations[-1].loss == loss:
        return trial
    kept = trial.evaluations[-99:]
    return trial.model_copy(update={"evaluations": [*kept, Evaluation(step=step, loss=loss)]})


def apply_report(spec: PeftSweepSpec, trial: SweepTrial, report: TrainerReport) -> SweepTrial:
    """A trial's row updated from one trainer report (the local run's progress file)."""
    progress = report.progress
    update: dict[str, Any] = {"step": progress.step}
    for name, value in (
        ("eval_loss_before", report.eval_loss_before),
        ("eval_loss_after", report.eval_loss_after),
        ("train_loss", progress.loss),
        ("tokens_per_second", progress.tokens_per_second),
        ("trainable_parameters", report.trainable_parameters),
        ("peak_memory_bytes", report.peak_memory_bytes),
        ("adapter", report.artifacts.adapter),
        ("manifest", report.artifacts.manifest),
    ):
        if value is not None:
            update[name] = value
    if report.state in ("Starting", "Training", "Exporting"):
        update["phase"] = "Running"
    elif report.state == "Succeeded":
        update["phase"] = "Succeeded"
    elif report.state == "Failed":
        update["phase"], update["message"] = "Failed", report.message
    row = trial.model_copy(update=update)
    if progress.eval_loss is not None:
        row = with_evaluation(row, progress.step, progress.eval_loss)
    if row.phase == "Succeeded":
        row = row.model_copy(update={"objective": objective_value(spec.objective, row)})
    return row


@dataclass
class SweepDecision:
    create: list[SweepTrial] = field(default_factory=list)
    """New trials to start (already in ``status.trials`` of the returned status)."""
    prune: list[str] = field(default_factory=list)
    """Running trials to stop early (marked Pruned)."""
    stop: list[str] = field(default_factory=list)
    """Running trials to stop because the sweep failed or is suspended."""
    status: PeftSweepStatus = field(default_factory=PeftSweepStatus)


def _failed_too_often(spec: PeftSweepSpec, status: PeftSweepStatus) -> bool:
    return sum(1 for t in status.trials if t.phase == "Failed") > spec.max_failed_trials


def _prunable(spec: PeftSweepSpec, trials: list[SweepTrial]) -> list[str]:
    if spec.early_stopping is None:
        return []
    from kubepeft.sweep.search import should_prune

    return [t.name for t in trials if t.phase == "Running" and should_prune(spec, t, trials)]


def decide(name: str, spec: PeftSweepSpec, status: PeftSweepStatus) -> SweepDecision:
    """What to do now: prune, create trials up to maxParallel, stop on failure, conclude."""
    if status.phase in ("Succeeded", "Failed"):
        return SweepDecision(status=status)
    trials = list(status.trials)
    running = [t.name for t in trials if t.phase in ACTIVE_TRIAL_PHASES]
    if _failed_too_often(spec, status):
        message = f"more than maxFailedTrials ({spec.max_failed_trials}) trials failed"
        return SweepDecision(stop=running, status=summarize(spec, status, phase="Failed", message=message))
    if spec.suspend:
        return SweepDecision(stop=running, status=summarize(spec, status, phase="Suspended"))
    pruned = _prunable(spec, trials)
    trials = [
        t.model_copy(update={"phase": "Pruned", "message": "stopped early by the median rule"})
        if t.name in pruned
        else t
        for t in trials
    ]
    created: list[SweepTrial] = []
    # Suspended trials count: they resume when the sweep is unsuspended.
    active = sum(1 for t in trials if t.phase in (*ACTIVE_TRIAL_PHASES, "Suspended"))
    planned = planned_trials(spec)
    while active < spec.max_parallel and len(trials) < planned:
        trial = new_trial(name, len(trials), trial_values(spec, len(trials), trials))
        trials.append(trial)
        created.append(trial)
        active += 1
    updated = summarize(spec, status.model_copy(update={"trials": trials}))
    return SweepDecision(create=created, prune=pruned, status=updated)


def summarize(
    spec: PeftSweepSpec, status: PeftSweepStatus, *, phase: SweepPhase | None = None, message: str | None = None
) -> PeftSweepStatus:
    """Counts, best trial, planned trials and the phase, recomputed from the trials table."""
    trials = status.trials
    counts = {p: sum(1 for t in trials if t.phase == p) for p in ("Running", "Succeeded", "Failed", "Pruned")}
    planned = planned_trials(spec)
    done = len(trials) >= planned and all(t.phase in FINISHED_TRIAL_PHASES for t in trials)
    if phase is None:
        if done:
            phase = "Succeeded" if counts["Succeeded"] else "Failed"
            message = message or ("all trials finished" if counts["Succeeded"] else "no trial succeeded")
        else:
            phase = "Running" if trials else "Created"
    return status.model_copy(
        update={
            "phase": phase,
            "message": message if message is not None else status.message,
            "planned_trials": planned,
            "trial_count": len(trials),
            "running": counts["Running"],
            "succeeded": counts["Succeeded"],
            "failed": counts["Failed"],
            "pruned": counts["Pruned"],
            "best_trial": best_trial(spec.objective, trials),
        }
    )
