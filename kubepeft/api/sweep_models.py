"""The PeftSweep API (kubepeft.dev/v1alpha1): many PeftJobs from one template, compared.

A sweep varies fields of a :class:`~kubepeft.api.models.PeftJobSpec` template (``parameters``:
a field path and its values or range), picks trials by a ``strategy`` (grid, random, TPE),
runs at most ``maxParallel`` trials at once as PeftJobs it owns, and ranks them by an
``objective``. Same generation pipeline as PeftJob: the CRD in ``crds/``, the reference page and
``kubepeft validate`` all come from these models.

The parameter paths a sweep may vary are the scalar (and list-of-scalar) fields of the PeftJob
spec, computed from the generated PeftJob schema itself, so the list never drifts from the spec.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from kubepeft.api.models import (
    ApiModel,
    Condition,
    ObjectMeta,
    PeftJobSpec,
    SourceAccess,
    cel,
    validations,
)

KIND = "PeftSweep"
PLURAL = "peftsweeps"
SINGULAR = "peftsweep"
SHORT_NAMES = ["psw"]

MAX_PARAMETERS = 16
MAX_VALUES = 64
MAX_TRIALS = 256
PATH_PATTERN = r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$"
# Sections of the spec whose fields are not tunable: identities, placement and lifecycle.
_FIXED_PREFIXES = ("output.", "runPolicy.", "checkpointing.", "resources.", "distributed.")
_SCALAR_TYPES = ("string", "integer", "number", "boolean")
_ACCESS_FIELDS = {to_camel(name) for name in SourceAccess.model_fields}


def _leaf_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        kind = sub.get("type")
        items = sub.get("items") if isinstance(sub.get("items"), dict) else {}
        if kind in _SCALAR_TYPES or (kind == "array" and items.get("type") in _SCALAR_TYPES):
            out[path] = sub
        elif kind == "object" and "properties" in sub:
            out.update(_leaf_paths(sub, path + "."))
    return out


@functools.cache
def tunable_paths() -> dict[str, dict[str, Any]]:
    """Every spec field a sweep may vary (dotted camelCase path -> its PeftJob schema node)."""
    from kubepeft.api.crd import model_schema  # the PeftJob spec schema, as the CRD has it

    leaves = _leaf_paths(model_schema(PeftJobSpec))
    # Credentials are references to Secrets, and where a source is reached (endpoint, region) is
    # not an experiment either: only what a source is (its uri) may vary.
    return {
        path: node
        for path, node in leaves.items()
        if not path.startswith(_FIXED_PREFIXES) and not set(path.split(".")[1:]) & _ACCESS_FIELDS
    }


def numeric_paths() -> list[str]:
    return [path for path, node in tunable_paths().items() if node.get("type") in ("integer", "number")]


def _cel_list(items: list[str]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _parameter_rules() -> dict[str, Any]:
    return validations(
        cel(
            f"self.path in {_cel_list(sorted(tunable_paths()))}",
            "path must be a tunable field of the PeftJob spec (see the PeftSweep reference for the list)",
            field_path=".path",
        ),
        cel("has(self.min) == has(self.max)", "a range needs both min and max", field_path=".min"),
        cel("!has(self.min) || !has(self.max) || self.min < self.max", "min must be less than max", field_path=".min"),
        cel(
            f"!has(self.min) || self.path in {_cel_list(numeric_paths())}",
            "a min/max range applies to numeric fields only; list the values instead",
            field_path=".path",
        ),
        cel(
            "!has(self.scale) || self.scale != 'log' || !has(self.min) || self.min > 0.0",
            "scale log needs a range with min > 0",
            field_path=".scale",
        ),
        cel(
            "(!has(self.scale) && !has(self.type)) || has(self.min)",
            "scale and type apply to min/max ranges only",
            field_path=".scale",
        ),
    )


# A value may be any JSON value the field takes (a number, a string, a list of module names):
# the schema cannot type it, so the offline validator and the operator check each value against
# the PeftJob schema at its path.
SweepValue = Annotated[Any, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]


class SweepParameter(ApiModel):
    """One varied field: a list of values, or a numeric range for the random and TPE strategies."""

    model_config = ConfigDict(json_schema_extra=_parameter_rules())

    path: str = Field(min_length=1, max_length=128, pattern=PATH_PATTERN)
    """Field path in the template spec, e.g. ``lora.r``, ``training.learningRate``, ``dataset.uri``, ``method``."""
    values: list[SweepValue] | None = Field(default=None, min_length=1, max_length=MAX_VALUES)
    """The values to try, each of the field's own type."""
    min: float | None = Field(default=None)
    """Lower bound of a range (random and tpe strategies)."""
    max: float | None = Field(default=None)
    """Upper bound of a range (random and tpe strategies)."""
    scale: Literal["linear", "log"] | None = None
    """How a range is sampled: uniformly (``linear``, the default) or log-uniformly (``log``)."""
    type: Literal["int", "float"] | None = None
    """Whether a range yields integers or floats (default: the field's type)."""
    group: str | None = Field(default=None, min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9\-]*$")
    """Parameters sharing a group are zipped (their i-th values go together, e.g. ``lora.alpha`` = 2 x ``lora.r``);
    groups and ungrouped parameters are crossed."""

    def is_range(self) -> bool:
        return self.min is not None


class SweepStrategy(ApiModel):
    """How trials are chosen."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.type) || self.type == 'grid' || has(self.maxTrials)",
                "strategies random and tpe need maxTrials",
                field_path=".maxTrials",
            ),
        )
    )

    type: Literal["grid", "random", "tpe"] = "grid"
    """``grid``: every combination; ``random``: independent samples; ``tpe``: Optuna's model-based TPE sampler."""
    max_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    """Trials to run (random and tpe); for grid, an optional cap on the grid."""
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    """Seed of the random and TPE samplers; a sweep is reproducible per seed."""


class SweepObjective(ApiModel):
    """What "best" means."""

    metric: Literal["evalLoss", "trainLoss"] = "evalLoss"
    """The trial's final validation loss or its final training loss."""
    direction: Literal["minimize", "maximize"] = "minimize"
    """Whether smaller or larger is better."""


class EarlyStopping(ApiModel):
    """Median-rule stopping on the evaluations trials report while they run."""

    type: Literal["median"] = "median"
    """Stop a trial whose best evaluation so far is worse than the median of the finished trials' evaluations at
    the same step (Optuna's MedianPruner)."""
    min_trials: int = Field(default=2, ge=1, le=MAX_TRIALS)
    """Finished trials needed before any trial is stopped."""
    start_step: int = Field(default=0, ge=0, le=10_000_000)
    """Never stop a trial before this step."""


class PeftSweepSpec(ApiModel):
    """A PeftJob template, what to vary in it, how to choose trials and how to rank them."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.parameters.all(p, self.parameters.exists_one(q, q.path == p.path))",
                "each path may appear in one parameter only",
                field_path=".parameters",
            ),
            cel(
                "!has(self.strategy) || !has(self.strategy.type) || self.strategy.type != 'grid'"
                " || self.parameters.all(p, !has(p.min))",
                "strategy grid takes lists of values only; min/max ranges need strategy random or tpe",
                field_path=".strategy.type",
            ),
            cel(
                "self.parameters.all(p, !has(p.group) || !has(p.min))",
                "a grouped (zipped) parameter takes a list of values, not a range",
                field_path=".parameters",
            ),
        )
    )

    template: PeftJobSpec
    """The spec every trial starts from (a complete, valid PeftJob spec)."""
    parameters: list[SweepParameter] = Field(min_length=1, max_length=MAX_PARAMETERS)
    """The fields to vary."""
    strategy: SweepStrategy = Field(default_factory=SweepStrategy)
    """Grid, random or TPE."""
    objective: SweepObjective = Field(default_factory=SweepObjective)
    """The metric trials are ranked by."""
    max_parallel: int = Field(default=1, ge=1, le=64)
    """Trials running at the same time."""
    max_failed_trials: int = Field(default=3, ge=0, le=MAX_TRIALS)
    """The sweep fails once more trials than this have failed."""
    early_stopping: EarlyStopping | None = None
    """Stop unpromising trials early (they are marked Pruned; their checkpoints stay)."""
    suspend: bool = False
    """Suspend every running trial and start no new ones; unsuspending resumes them."""


# --- status -------------------------------------------------------------------------------

SweepPhase = Literal["Created", "Running", "Succeeded", "Failed", "Suspended"]
TrialPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Pruned", "Suspended"]
FINISHED_TRIAL_PHASES = ("Succeeded", "Failed", "Pruned")


class Evaluation(ApiModel):
    """One evaluation a running trial reported."""

    step: int
    """Optimizer step of the evaluation."""
    loss: float
    """Validation loss."""


class SweepTrial(ApiModel):
    """One row of the trials table."""

    name: str
    """The trial's PeftJob."""
    index: int
    """Trial number, from 0."""
    parameters: dict[str, str] = Field(default_factory=dict)
    """The varied values, path -> value as JSON text."""
    phase: TrialPhase = "Pending"
    """Pending, Running, Succeeded, Failed, Pruned or Suspended."""
    eval_loss_before: float | None = None
    """Validation loss before training."""
    eval_loss_after: float | None = None
    """Validation loss after training."""
    train_loss: float | None = None
    """Final training loss."""
    objective: float | None = None
    """The objective's value for this trial."""
    trainable_parameters: int | None = None
    """Parameters that trained."""
    tokens_per_second: float | None = None
    """Training throughput."""
    peak_memory_bytes: int | None = None
    """Peak accelerator (or host) memory of rank 0."""
    step: int | None = None
    """Optimizer steps done."""
    evaluations: list[Evaluation] = Field(default_factory=list, max_length=100)
    """Evaluations reported while running (early stopping reads them)."""
    adapter: str | None = None
    """URI of the trial's adapter."""
    manifest: str | None = None
    """URI of the trial's manifest."""
    message: str | None = None
    """Why the trial failed or was pruned."""


class BestTrial(ApiModel):
    """The best trial so far."""

    name: str
    """The trial's PeftJob."""
    objective: float
    """Its objective value."""
    parameters: dict[str, str] = Field(default_factory=dict)
    """Its varied values (JSON text)."""


class SweepReport(ApiModel):
    """Where the comparison report is; complete once its manifest exists."""

    results: str | None = None
    """URI of results.json."""
    table: str | None = None
    """URI of results.md (trials sorted by the objective)."""
    tradeoff: str | None = None
    """URI of tradeoff.png (objective against trainable parameters)."""
    bank: str | None = None
    """URI of bank.json (prompt-tuning sweeps over datasets)."""
    manifest: str | None = None
    """URI of the report's manifest.json."""


class PeftSweepStatus(ApiModel):
    """Observed state, written by the operator (or the local run)."""

    phase: SweepPhase | None = None
    """Created, Running, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """metav1-style conditions."""
    observed_generation: int | None = None
    """The spec generation the status reflects."""
    start_time: str | None = None
    """When the first trial started (RFC 3339)."""
    completion_time: str | None = None
    """When the sweep succeeded or failed (RFC 3339)."""
    planned_trials: int | None = None
    """Trials the strategy will run."""
    trial_count: int = 0
    """Trials created so far."""
    running: int = 0
    """Trials running now."""
    succeeded: int = 0
    """Trials that succeeded."""
    failed: int = 0
    """Trials that failed."""
    pruned: int = 0
    """Trials stopped early."""
    trials: list[SweepTrial] = Field(default_factory=list, max_length=MAX_TRIALS)
    """The trials table."""
    best_trial: BestTrial | None = None
    """The best finished trial."""
    report: SweepReport | None = None
    """The comparison report."""
    message: str | None = None
    """Human-readable summary."""


class PeftSweep(ApiModel):
    """A sweep of PEFT fine-tuning jobs over configurations or tasks."""

    api_version: Literal["kubepeft.dev/v1alpha1"] = "kubepeft.dev/v1alpha1"
    """APIVersion defines the versioned schema of this representation of an object."""
    kind: Literal["PeftSweep"] = KIND  # type: ignore[assignment]
    """Kind is a string value representing the REST resource this object represents."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: PeftSweepSpec
    """A PeftJob template, what to vary in it, how to choose trials and how to rank them."""
    status: PeftSweepStatus | None = None
    """Observed state, written by the operator (or the local run)."""
