"""Offline PeftSweep validation: the CRD's own schema and CEL rules, then what a schema cannot say.

First exactly what the API server applies from the generated CRD (defaults, structural schema,
CEL), with :mod:`kubepeft.api.validate`'s functions. Then the checks against the PeftJob schema
that the sweep's schema cannot express (a value's type depends on its path): every value of
every parameter is put into the template at its path and the resulting PeftJob is validated
with the PeftJob CRD's rules, so ``lora.r: "four"`` is rejected as ``spec.parameters[0].values[1]``
with the PeftJob's own reason. A grid's trials are validated whole (cross-field rules, e.g.
``method: promptTuning`` with ``lora`` settings). The operator runs the same function before it
creates any trial, so a sweep the API server admitted but these checks reject fails with
InvalidSpec naming the path.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema

from kubepeft.api import models, sweep_crd, sweep_models
from kubepeft.api.validate import (
    FieldError,
    _schema_error,
    _show,
    apply_defaults,
    cel_errors,
    identity_errors,
    strict_schema,
    validate_object,
)


@functools.lru_cache(maxsize=1)
def sweep_schema() -> dict[str, Any]:
    return sweep_crd.version_schema()


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft4Validator(strict_schema(sweep_schema()))


def claims_peftsweep(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == sweep_models.KIND


def _identity(doc: dict[str, Any]) -> list[FieldError]:
    # The PeftJob identity check, but for this kind (apiVersion and metadata rules are shared).
    errors = [e for e in identity_errors({**doc, "kind": models.KIND}) if e.path != "kind"]
    return errors


def _trial_errors(template: dict[str, Any], values: dict[str, Any]) -> list[FieldError]:
    from kubepeft.sweep.expand import trial_spec_wire

    job = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": "trial"},
        "spec": trial_spec_wire(template, values),
    }
    return validate_object(job)


def _value_errors(template: dict[str, Any], index: int, parameter: dict[str, Any]) -> list[FieldError]:
    path = parameter["path"]
    out: list[FieldError] = []
    base = f"spec.parameters[{index}]"
    if "values" not in parameter and "min" not in parameter:
        return [FieldError(base, "set values (a list) or min and max (a range)")]
    if "values" in parameter and "min" in parameter:
        return [FieldError(base, "set either values or min and max, not both")]
    candidates = (
        [(f"{base}.values[{j}]", v) for j, v in enumerate(parameter["values"])]
        if "values" in parameter
        else [(f"{base}.min", parameter["min"]), (f"{base}.max", parameter["max"])]
    )
    if "min" in parameter and parameter.get("type") != "float":
        node = sweep_models.tunable_paths().get(path, {})
        if node.get("type") == "integer" or parameter.get("type") == "int":
            candidates = [(where, int(v)) if float(v).is_integer() else (where, v) for where, v in candidates]
    for where, value in candidates:
        for error in _trial_errors(template, {path: value}):
            field = error.path.removeprefix("spec.")
            if field == path:
                out.append(FieldError(where, f"{path}: {error.reason}"))
            else:
                out.append(FieldError(where, f"{path} = {_show(value)} makes {error}"))
    return out


def _grid_errors(spec: dict[str, Any]) -> list[FieldError]:
    from kubepeft.sweep.expand import SweepSpecError, grid

    try:
        parsed = sweep_models.PeftSweepSpec.model_validate(spec)
        trials = grid(parsed)
    except SweepSpecError as problem:
        return [FieldError("spec.parameters", str(problem))]
    if len(trials) > sweep_models.MAX_TRIALS:
        return [FieldError("spec.parameters", f"the grid has {len(trials)} trials; at most 256 (set maxTrials)")]
    out = []
    for number, values in enumerate(trials):
        problems = _trial_errors(spec["template"], values)
        if problems:  # one reason per trial is enough to fix it
            shown = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
            out.append(FieldError("spec.parameters", f"trial {number} ({shown}): {problems[0]}"))
    return out


def semantic_errors(spec: dict[str, Any]) -> list[FieldError]:
    """What the schema cannot express: values against the PeftJob schema, zipped groups, the grid."""
    out: list[FieldError] = []
    for index, parameter in enumerate(spec.get("parameters", [])):
        out.extend(_value_errors(spec["template"], index, parameter))
    if out:
        return out
    if spec.get("strategy", {}).get("type", "grid") == "grid":
        return _grid_errors(spec)
    from kubepeft.sweep.expand import SweepSpecError, axes

    try:
        axes(sweep_models.PeftSweepSpec.model_validate(spec))
    except SweepSpecError as problem:
        return [FieldError("spec.parameters", str(problem))]
    return []


def validate_sweep_object(doc: Any) -> list[FieldError]:
    """Every problem of one PeftSweep object (no transition rules)."""
    if not isinstance(doc, dict):
        return [FieldError("", f"a PeftSweep must be a mapping, got {type(doc).__name__}")]
    schema = sweep_schema()
    defaulted = apply_defaults(schema, doc)
    errors = _identity(doc)
    structural: set[FieldError] = set()
    for error in _validator().iter_errors(defaulted):
        structural.update(_schema_error(error))
    errors.extend(structural)
    errors.extend(cel_errors(schema, defaulted, skip=frozenset(e.path for e in structural)))
    if not errors:
        # The template was checked by the CRD's schema and CEL above; now the values.
        errors.extend(semantic_errors(defaulted["spec"]))
    return sorted(set(errors))
