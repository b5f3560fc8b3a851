"""The objective of a trial and the best trial of a sweep (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from kubepeft.api.sweep_models import BestTrial, SweepObjective, SweepTrial


def objective_value(objective: SweepObjective, trial: SweepTrial) -> float | None:
    """The trial's value of the objective's metric (None until it is known)."""
    return trial.eval_loss_after if objective.metric == "evalLoss" else trial.train_loss


def sort_key(objective: SweepObjective, trial: SweepTrial) -> tuple[int, float, int]:
    """Order for the report: succeeded trials by objective (best first), then the rest by index."""
    value = trial.objective
    if trial.phase != "Succeeded" or value is None:
        return (1, 0.0, trial.index)
    return (0, value if objective.direction == "minimize" else -value, trial.index)


def ranked(objective: SweepObjective, trials: Sequence[SweepTrial]) -> list[SweepTrial]:
    return sorted(trials, key=lambda trial: sort_key(objective, trial))


def best_trial(objective: SweepObjective, trials: Sequence[SweepTrial]) -> BestTrial | None:
    """The succeeded trial with the best objective; ties go to the earlier trial."""
    candidates = [t for t in trials if t.phase == "Succeeded" and t.objective is not None]
    if not candidates:
        return None
    best = ranked(objective, candidates)[0]
    assert best.objective is not None
    return BestTrial(name=best.name, objective=best.objective, parameters=dict(best.parameters))
