"""Pure sweep decisions for the operator: trial objects, observation of trials, the status to write.

Inputs are plain API objects (the sweep, its trial PeftJobs, their progress reports); outputs are
the objects to create, the trials to suspend or resume, the new status and the Events. No I/O.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubepeft.api.models import API_VERSION, GROUP, Condition
from kubepeft.api.models import KIND as JOB_KIND
from kubepeft.api.sweep_models import FINISHED_TRIAL_PHASES, KIND, PeftSweepSpec, PeftSweepStatus, SweepTrial
from kubepeft.api.sweep_validate import semantic_errors
from kubepeft.contract import TrainerReport
from kubepeft.sweep.expand import trial_spec
from kubepeft.sweep.paths import value_from_text
from kubepeft.sweep.state import SweepDecision, apply_report, decide, summarize

LABEL_SWEEP = f"{GROUP}/sweep"
JOB_PHASES = {
    "Created": "Running",
    "Running": "Running",
    "Restarting": "Running",
    "Succeeded": "Succeeded",
    "Failed": "Failed",
    "Suspended": "Suspended",
}


@dataclass(frozen=True)
class SweepRef:
    namespace: str
    name: str
    uid: str
    generation: int = 0


@dataclass
class Event:
    type: str
    reason: str
    message: str


@dataclass
class SweepPlan:
    status: PeftSweepStatus
    create: list[dict[str, Any]] = field(default_factory=list)
    suspend: list[str] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def owner_reference(sweep: SweepRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": sweep.name,
        "uid": sweep.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned(job: dict[str, Any], sweep: SweepRef) -> bool:
    """Ours only if the controller owner reference carries our uid (never adopt by name)."""
    refs = job.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("controller") and r.get("uid") == sweep.uid and r.get("kind") == KIND for r in refs)


def render_trial(sweep: SweepRef, spec: PeftSweepSpec, trial: SweepTrial) -> dict[str, Any]:
    """The trial's PeftJob: the template with the trial's values, owned by the sweep."""
    values = {path: value_from_text(text) for path, text in trial.parameters.items()}
    job_spec = trial_spec(spec, values).to_wire()
    job_spec.setdefault("runPolicy", {})["suspend"] = spec.suspend
    return {
        "apiVersion": API_VERSION,
        "kind": JOB_KIND,
        "metadata": {
            "name": trial.name,
            "namespace": sweep.namespace,
            "labels": {LABEL_SWEEP: sweep.name[:63].rstrip("-.")},
            "annotations": {f"{GROUP}/trial-index": str(trial.index)},
            "ownerReferences": [owner_reference(sweep)],
        },
        "spec": job_spec,
    }


def observe_trial(
    spec: PeftSweepSpec, sweep: SweepRef, trial: SweepTrial, job: dict[str, Any] | None, report: TrainerReport | None
) -> SweepTrial:
    """A row updated from its PeftJob (phase) and its progress report (metrics)."""
    if trial.phase in FINISHED_TRIAL_PHASES:
        return trial
    if job is None:  # Pending: not created yet (the plan creates it); otherwise someone deleted it
        gone = {"phase": "Failed", "message": "its PeftJob was deleted"}
        return trial if trial.phase == "Pending" else trial.model_copy(update=gone)
    if not is_owned(job, sweep):
        return trial.model_copy(update={"phase": "Failed", "message": "a PeftJob of this name is not ours"})
    row = apply_report(spec, trial, report) if report is not None else trial
    phase = JOB_PHASES.get(str((job.get("status") or {}).get("phase") or "Created"), "Running")
    if phase == "Running" and row.phase == "Succeeded":
        phase = "Running"  # the trainer finished; the PeftJob's own status follows shortly
    update: dict[str, Any] = {"phase": phase}
    if phase == "Failed":
        update["message"] = (job.get("status") or {}).get("message") or row.message
    return row.model_copy(update=update)


def _events(before: PeftSweepStatus, after: PeftSweepStatus, created: list[SweepTrial]) -> list[Event]:
    events = [Event("Normal", "TrialCreated", f"trial {t.name}: {_params(t)}") for t in created]
    old = {t.name: t.phase for t in before.trials}
    for t in after.trials:
        if t.phase in FINISHED_TRIAL_PHASES and old.get(t.name) != t.phase:
            kind = "Normal" if t.phase == "Succeeded" else "Warning"
            detail = f" objective {t.objective:.4f}" if t.objective is not None else f" {t.message or ''}"
            events.append(Event(kind, f"Trial{t.phase}", f"trial {t.name}:{detail}".rstrip()))
    if after.phase != before.phase and after.phase in ("Succeeded", "Failed", "Suspended"):
        best = f"; best {after.best_trial.name}" if after.best_trial else ""
        kind = "Warning" if after.phase == "Failed" else "Normal"
        events.append(Event(kind, f"Sweep{after.phase}", f"{after.message or after.phase}{best}"))
    return events


def _params(trial: SweepTrial) -> str:
    return " ".join(f"{path}={text}" for path, text in trial.parameters.items())


def conditions(status: PeftSweepStatus, now: str, generation: int) -> list[Condition]:
    """One condition per phase the sweep is in (True) or has left (False); times kept when unchanged."""
    old = {c.type: c for c in status.conditions}
    out = []
    for kind in ("Running", "Succeeded", "Failed", "Suspended"):
        value = "True" if status.phase == kind else "False"
        if kind not in old and value == "False":
            continue
        previous = old.get(kind)
        changed = previous is None or previous.status != value
        out.append(
            Condition(
                type=kind,
                status=value,
                reason=kind if value == "True" else f"Not{kind}",
                message=status.message or "",
                last_transition_time=now if changed or previous is None else previous.last_transition_time,
                observed_generation=generation,
            )
        )
    return out


def invalid_plan(status: PeftSweepStatus, message: str) -> SweepPlan:
    failed = status.model_copy(update={"phase": "Failed", "message": message})
    events = [Event("Warning", "InvalidSpec", message)] if status.phase != "Failed" else []
    return SweepPlan(status=failed, events=events)


def plan(
    sweep: SweepRef,
    spec_wire: dict[str, Any],
    status: PeftSweepStatus,
    jobs: dict[str, dict[str, Any]],
    reports: dict[str, TrainerReport],
    now: datetime.datetime,
) -> SweepPlan:
    """Observe the trials, decide, and say what to create, suspend and resume."""
    try:
        spec = PeftSweepSpec.model_validate(spec_wire)
    except ValidationError as error:
        return invalid_plan(status, f"invalid spec: {error.errors()[0]['msg']}")
    problems = semantic_errors(spec.to_wire())
    if problems:  # what the API server could not check (values against the PeftJob schema)
        return invalid_plan(status, f"invalid spec: {problems[0]}")
    observed = [observe_trial(spec, sweep, t, jobs.get(t.name), reports.get(t.name)) for t in status.trials]
    current = summarize(spec, status.model_copy(update={"trials": observed}))
    decision: SweepDecision = decide(sweep.name, spec, current)
    new = decision.status
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if new.start_time is None and new.trials:
        new = new.model_copy(update={"start_time": stamp})
    if new.phase in ("Succeeded", "Failed") and new.completion_time is None:
        new = new.model_copy(update={"completion_time": stamp})
    new = new.model_copy(update={"observed_generation": sweep.generation})
    names = {t.name for t in decision.create}
    missing = [t for t in new.trials if t.name not in jobs and t.name not in names and t.phase == "Pending"]
    create = [render_trial(sweep, spec, t) for t in [*decision.create, *missing]]
    suspend = [*decision.prune, *decision.stop]
    resume = [] if spec.suspend else [t.name for t in new.trials if t.phase == "Suspended" and t.name in jobs]
    return SweepPlan(
        status=new, create=create, suspend=suspend, resume=resume, events=_events(status, new, decision.create)
    )
