"""Random and TPE sampling and median-rule pruning with Optuna, its study rebuilt from status.

Nothing of Optuna's is kept between calls: each decision builds an in-memory study from the
trials table of the sweep's status (parameters, phase, objective, evaluations) and asks it one
question. An operator restart therefore loses nothing, and the answer depends only on the
status and the seed: trial ``i`` is sampled with seed ``strategy.seed + i``.

Optuna is imported here only (the ``operator`` and ``local`` extras install it), so validating
or expanding a grid sweep never needs it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from kubepeft.api.sweep_models import EarlyStopping, PeftSweepSpec, SweepParameter, SweepTrial
from kubepeft.api.sweep_models import tunable_paths as _tunable_paths
from kubepeft.sweep.expand import Axis, axes
from kubepeft.sweep.paths import value_from_text, value_text


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _is_int_range(parameter: SweepParameter) -> bool:
    if parameter.type is not None:
        return parameter.type == "int"
    return _tunable_paths().get(parameter.path, {}).get("type") == "integer"


def distributions(spec: PeftSweepSpec) -> dict[str, Any]:
    """Optuna distributions: one categorical (over value indices) per axis, one per range."""
    optuna = _optuna()
    out: dict[str, Any] = {}
    for axis in axes(spec):
        out[axis.name] = optuna.distributions.CategoricalDistribution(list(range(axis.size)))
    for p in spec.parameters:
        if not p.is_range():
            continue
        assert p.min is not None and p.max is not None
        log = p.scale == "log"
        if _is_int_range(p):
            out[p.path] = optuna.distributions.IntDistribution(math.ceil(p.min), math.floor(p.max), log=log)
        else:
            out[p.path] = optuna.distributions.FloatDistribution(p.min, p.max, log=log)
    return out


def values_from_params(spec: PeftSweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's params -> path -> value (in the order the parameters are listed)."""
    chosen: dict[str, Any] = {}
    for axis in axes(spec):
        chosen.update(axis.choice(int(params[axis.name])))
    for p in spec.parameters:
        if p.is_range():
            chosen[p.path] = params[p.path]
    return {p.path: chosen[p.path] for p in spec.parameters}


def _axis_index(axis: Axis, parameters: dict[str, str]) -> int | None:
    for index in range(axis.size):
        if all(value_text(v) == parameters.get(path) for path, v in axis.choice(index).items()):
            return index
    return None


def params_from_trial(spec: PeftSweepSpec, trial: SweepTrial) -> dict[str, Any] | None:
    """A trials-table row -> Optuna's params; None when the row does not fit the spec any more."""
    params: dict[str, Any] = {}
    for axis in axes(spec):
        index = _axis_index(axis, trial.parameters)
        if index is None:
            return None
        params[axis.name] = index
    for p in spec.parameters:
        if p.is_range():
            if p.path not in trial.parameters:
                return None
            params[p.path] = value_from_text(trial.parameters[p.path])
    return params


def _frozen(spec: PeftSweepSpec, trial: SweepTrial, dists: dict[str, Any]) -> Any | None:
    optuna = _optuna()
    params = params_from_trial(spec, trial)
    if params is None:
        return None
    state = optuna.trial.TrialState
    intermediate = {e.step: e.loss for e in trial.evaluations}
    if trial.phase == "Succeeded" and trial.objective is not None:
        kind, value = state.COMPLETE, trial.objective
    elif trial.phase in ("Pruned", "Failed", "Succeeded"):
        kind, value = (state.PRUNED if trial.phase == "Pruned" else state.FAIL), None
    else:
        kind, value = state.RUNNING, None
    return optuna.trial.create_trial(
        params=params, distributions=dists, value=value, state=kind, intermediate_values=intermediate
    )


def rebuild_study(spec: PeftSweepSpec, trials: Sequence[SweepTrial], sampler: Any = None) -> Any:
    """An in-memory Optuna study holding every trial of the status table."""
    optuna = _optuna()
    direction = "minimize" if spec.objective.direction == "minimize" else "maximize"
    study = optuna.create_study(direction=direction, sampler=sampler)
    dists = distributions(spec)
    for trial in sorted(trials, key=lambda t: t.index):
        frozen = _frozen(spec, trial, dists)
        if frozen is not None:
            study.add_trial(frozen)
    return study


def _sampler(spec: PeftSweepSpec, index: int) -> Any:
    optuna = _optuna()
    seed = spec.strategy.seed + index
    if spec.strategy.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(2, (spec.strategy.max_trials or 0) // 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is marked experimental in some releases
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def suggest(spec: PeftSweepSpec, index: int, trials: Sequence[SweepTrial]) -> dict[str, Any]:
    """The values of trial ``index`` for a random or TPE sweep, given every trial so far."""
    study = rebuild_study(spec, trials, sampler=_sampler(spec, index))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asked = study.ask(fixed_distributions=distributions(spec))
    return values_from_params(spec, asked.params)


def should_prune(spec: PeftSweepSpec, trial: SweepTrial, trials: Sequence[SweepTrial]) -> bool:
    """The median rule (Optuna's MedianPruner) for a running trial, from its reported evaluations."""
    stopping: EarlyStopping | None = spec.early_stopping
    if stopping is None or trial.phase != "Running" or not trial.evaluations:
        return False
    optuna = _optuna()
    others = [t for t in trials if t.name != trial.name]
    study = rebuild_study(spec, others)
    frozen = _frozen(spec, trial, distributions(spec))
    if frozen is None:
        return False
    pruner = optuna.pruners.MedianPruner(n_startup_trials=stopping.min_trials, n_warmup_steps=stopping.start_step)
    return bool(pruner.prune(study, frozen))
