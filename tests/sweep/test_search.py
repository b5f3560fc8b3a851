"""Random and TPE sampling with Optuna, study rebuilt from status, median-rule pruning."""

from __future__ import annotations

from kubepeft.api.sweep_models import EarlyStopping, PeftSweepStatus, SweepTrial
from kubepeft.sweep.paths import value_text
from kubepeft.sweep.search import params_from_trial, rebuild_study, should_prune, suggest
from kubepeft.sweep.state import decide, new_trial
from tests.sweep.support import RANK_GROUP, sweep_spec

RANGES = [
    {"path": "training.learningRate", "min": 1e-4, "max": 1e-1, "scale": "log"},
    {"path": "lora.r", "min": 1, "max": 64, "scale": "log"},
    *RANK_GROUP[:1],
]


def sampled(seed: int, kind: str = "random", n: int = 5) -> list[dict[str, object]]:
    spec = sweep_spec(
        [RANGES[0], RANGES[1] | {"path": "lora.alpha"}, RANK_GROUP[0]],
        strategy={"type": kind, "maxTrials": n, "seed": seed},
    )
    trials: list[SweepTrial] = []
    out = []
    for index in range(n):
        values = suggest(spec, index, trials)
        out.append(values)
        row = new_trial("s", index, values).model_copy(update={"phase": "Succeeded", "objective": float(index)})
        trials.append(row)
    return out


def test_random_is_reproducible_per_seed_and_within_bounds() -> None:
    first, again, other = sampled(1), sampled(1), sampled(2)
    assert first == again and first != other
    for values in first:
        assert 1e-4 <= values["training.learningRate"] <= 1e-1  # type: ignore[operator]
        assert isinstance(values["lora.alpha"], int) and 1 <= values["lora.alpha"] <= 64
        assert values["lora.r"] in (2, 4, 8, 16)


def test_tpe_is_reproducible_per_seed() -> None:
    assert sampled(3, "tpe", 6) == sampled(3, "tpe", 6)


def test_study_is_rebuilt_from_the_status_table() -> None:
    spec = sweep_spec([*RANK_GROUP, RANGES[0]], strategy={"type": "tpe", "maxTrials": 4})
    rows = [
        new_trial("s", 0, {"lora.r": 8, "lora.alpha": 16, "training.learningRate": 0.01}).model_copy(
            update={"phase": "Succeeded", "objective": 0.5}
        ),
        new_trial("s", 1, {"lora.r": 2, "lora.alpha": 4, "training.learningRate": 0.001}).model_copy(
            update={"phase": "Failed"}
        ),
        new_trial("s", 2, {"lora.r": 4, "lora.alpha": 8, "training.learningRate": 0.002}).model_copy(
            update={"phase": "Running"}
        ),
    ]
    assert params_from_trial(spec, rows[0]) == {"group:rank": 2, "training.learningRate": 0.01}
    study = rebuild_study(spec, rows)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["COMPLETE", "FAIL", "RUNNING"]
    assert study.best_trial.value == 0.5 and study.best_trial.params["group:rank"] == 2
    # A row whose values are not in the spec any more is left out, not guessed.
    stray = rows[0].model_copy(update={"parameters": {"lora.r": "3", "lora.alpha": "6"}})
    assert params_from_trial(spec, stray) is None


def test_decide_after_a_restart_asks_for_the_same_next_trial() -> None:
    spec = sweep_spec(RANGES[:1], strategy={"type": "tpe", "maxTrials": 5, "seed": 7}, maxParallel=1)
    first = decide("s", spec, sweep_status())
    assert [t.name for t in first.create] == ["s-t0"]
    done = first.status.model_copy(
        update={"trials": [first.create[0].model_copy(update={"phase": "Succeeded", "objective": 1.0})]}
    )
    again_a, again_b = decide("s", spec, done), decide("s", spec, done.model_copy(deep=True))
    assert again_a.create[0].parameters == again_b.create[0].parameters
    assert again_a.create[0].name == "s-t1"


def sweep_status() -> PeftSweepStatus:
    return PeftSweepStatus()


def finished(index: int, losses: list[float]) -> SweepTrial:
    params = {"lora.r": value_text(2), "lora.alpha": value_text(4)}
    evaluations = [{"step": 10 * (i + 1), "loss": loss} for i, loss in enumerate(losses)]
    return SweepTrial.model_validate(
        {
            "name": f"s-t{index}",
            "index": index,
            "parameters": params,
            "phase": "Succeeded",
            "objective": losses[-1],
            "evaluations": evaluations,
        }
    )


def test_median_rule_prunes_a_trial_worse_than_the_median_at_its_step() -> None:
    spec = sweep_spec(RANK_GROUP, earlyStopping={"minTrials": 3, "startStep": 5})
    done = [finished(0, [2.0, 1.0]), finished(1, [2.2, 1.2]), finished(2, [2.4, 1.4])]
    bad = running(done[0], 3.0)
    good = running(done[0], 2.1)
    assert should_prune(spec, bad, done) is True
    assert should_prune(spec, good, done) is False
    # Not before minTrials trials have finished, and never without early stopping.
    assert should_prune(spec, bad, done[:2]) is False
    assert should_prune(sweep_spec(RANK_GROUP), bad, done) is False
    # Not before startStep.
    late = sweep_spec(RANK_GROUP, earlyStopping=EarlyStopping(min_trials=3, start_step=50).to_wire())
    assert should_prune(late, bad, done) is False


def running(like: SweepTrial, loss: float) -> SweepTrial:
    return SweepTrial.model_validate(
        {
            "name": "s-t3",
            "index": 3,
            "parameters": like.parameters,
            "phase": "Running",
            "evaluations": [{"step": 10, "loss": loss}],
        }
    )
