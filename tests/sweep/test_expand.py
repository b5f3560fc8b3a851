"""Expansion: grid sizes, zipped groups, caps, trial specs and names."""

from __future__ import annotations

import re

import pytest

from kubepeft.api.models import MAX_NAME_LENGTH, NAME_PATTERN
from kubepeft.sweep.expand import SweepSpecError, grid, grid_size, planned_trials, trial_spec
from kubepeft.sweep.naming import HASH_CHARS, trial_name
from kubepeft.sweep.paths import get_path, set_path
from tests.sweep.support import RANK_GROUP, sweep_spec


def test_a_zipped_group_is_one_axis() -> None:
    spec = sweep_spec(RANK_GROUP)
    assert grid_size(spec) == 4
    assert grid(spec) == [
        {"lora.r": 2, "lora.alpha": 4},
        {"lora.r": 4, "lora.alpha": 8},
        {"lora.r": 8, "lora.alpha": 16},
        {"lora.r": 16, "lora.alpha": 32},
    ]


def test_axes_are_crossed_first_axis_slowest() -> None:
    spec = sweep_spec([*RANK_GROUP, {"path": "training.learningRate", "values": [1e-3, 3e-3, 1e-2]}])
    combos = grid(spec)
    assert len(combos) == grid_size(spec) == 12
    assert combos[0] == {"lora.r": 2, "lora.alpha": 4, "training.learningRate": 1e-3}
    assert combos[1]["training.learningRate"] == 3e-3 and combos[3]["lora.r"] == 4
    assert len({tuple(sorted(c.items())) for c in combos}) == 12


def test_max_trials_caps_a_grid() -> None:
    spec = sweep_spec(RANK_GROUP, strategy={"type": "grid", "maxTrials": 3})
    assert len(grid(spec)) == planned_trials(spec) == 3


def test_groups_of_unequal_length_are_rejected() -> None:
    spec = sweep_spec(
        [{"path": "lora.r", "values": [2, 4], "group": "g"}, {"path": "lora.alpha", "values": [4], "group": "g"}]
    )
    with pytest.raises(SweepSpecError, match="same length"):
        grid(spec)


def test_random_plans_max_trials() -> None:
    spec = sweep_spec([{"path": "lora.r", "values": [2, 4]}], strategy={"type": "random", "maxTrials": 7})
    assert planned_trials(spec) == 7


def test_trial_spec_sets_values_at_their_paths() -> None:
    spec = sweep_spec([{"path": "lora.r", "values": [8]}, {"path": "training.learningRate", "values": [0.01]}])
    trial = trial_spec(spec, grid(spec)[0])
    assert trial.effective_lora().r == 8 and trial.training is not None and trial.training.learning_rate == 0.01
    assert spec.template.lora is None  # the template is untouched


def test_set_path_creates_sections_and_copies() -> None:
    original = {"training": {"maxSteps": 3}}
    changed = set_path(original, "lora.r", 4)
    assert changed == {"training": {"maxSteps": 3}, "lora": {"r": 4}} and original == {"training": {"maxSteps": 3}}
    assert get_path(changed, "lora.r") == 4 and get_path(changed, "lora.alpha") is None


def test_trial_names_are_deterministic_and_dns_safe() -> None:
    assert trial_name("lora-rank", 3) == "lora-rank-t3"
    long_a, long_b = "a" * 62, "a" * 61 + "b"
    names = [trial_name(sweep, i) for sweep in (long_a, long_b) for i in (0, 7, 255)]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= MAX_NAME_LENGTH and re.match(NAME_PATTERN, name), name
    assert trial_name(long_a, 7) == trial_name(long_a, 7)
    # A shortened name keeps a 64-bit hash of the full sweep name.
    digest = trial_name(long_a, 7).rsplit("-", 2)[1]
    assert len(digest) == HASH_CHARS and int(digest, 16) >= 0
    # A name ending in '-' once cut is still DNS-safe.
    assert re.match(NAME_PATTERN, trial_name("ab-" * 30, 1))
