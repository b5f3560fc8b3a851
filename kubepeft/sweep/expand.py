"""Parameters -> trials (pure): grid expansion with zipped groups, and the trial specs.

Parameters that share a ``group`` are zipped: their i-th values form one choice (``lora.r`` 4
with ``lora.alpha`` 8). Each group, and each ungrouped parameter, is one axis; the grid is the
product of the axes, in the order the parameters are listed (the first axis varies slowest).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft.api.sweep_models import PeftSweepSpec, SweepParameter
from kubepeft.sweep.paths import set_path


class SweepSpecError(ValueError):
    """The sweep cannot be expanded (a group with lists of different lengths, no values)."""


@dataclass(frozen=True)
class Axis:
    """One independent choice: a group of zipped parameters (or a single one)."""

    name: str
    parameters: tuple[SweepParameter, ...]

    @property
    def size(self) -> int:
        return len(self.parameters[0].values or [])

    def choice(self, index: int) -> dict[str, Any]:
        return {p.path: (p.values or [])[index] for p in self.parameters}


def axes(spec: PeftSweepSpec) -> list[Axis]:
    """The axes of a sweep's parameters that list values (ranges are not axes of a grid)."""
    order: list[str] = []
    members: dict[str, list[SweepParameter]] = {}
    for parameter in spec.parameters:
        if parameter.values is None:
            continue
        key = f"group:{parameter.group}" if parameter.group else parameter.path
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(parameter)
    out = []
    for key in order:
        group = members[key]
        sizes = {len(p.values or []) for p in group}
        if len(sizes) > 1:
            paths = ", ".join(p.path for p in group)
            raise SweepSpecError(f"group {key[6:]!r} zips {paths}: their value lists must have the same length")
        out.append(Axis(key, tuple(group)))
    return out


def grid_size(spec: PeftSweepSpec) -> int:
    size = 1
    for axis in axes(spec):
        size *= axis.size
    return size


def grid(spec: PeftSweepSpec) -> list[dict[str, Any]]:
    """Every combination of a grid sweep (capped by ``strategy.maxTrials``), as path -> value."""
    if any(p.is_range() for p in spec.parameters):
        raise SweepSpecError("strategy grid takes lists of values only")
    found = axes(spec)
    combos = []
    for indices in itertools.product(*(range(axis.size) for axis in found)):
        values: dict[str, Any] = {}
        for axis, index in zip(found, indices, strict=True):
            values.update(axis.choice(index))
        combos.append(values)
    limit = spec.strategy.max_trials
    return combos[:limit] if limit else combos


def planned_trials(spec: PeftSweepSpec) -> int:
    if spec.strategy.type == "grid":
        return len(grid(spec))
    return int(spec.strategy.max_trials or 0)


def trial_spec_wire(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The template (wire form) with the trial's values set at their paths."""
    out = template
    for path, value in values.items():
        out = set_path(out, path, value)
    return out


def trial_spec(spec: PeftSweepSpec, values: dict[str, Any]) -> PeftJobSpec:
    """The PeftJobSpec of one trial (raises pydantic's ValidationError on a value the spec rejects)."""
    return PeftJobSpec.model_validate(trial_spec_wire(spec.template.to_wire(), values))
