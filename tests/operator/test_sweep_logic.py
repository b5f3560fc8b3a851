"""The sweep controller's pure parts: trial objects, ownership, observation, plan, conditions."""

from __future__ import annotations

import datetime
from typing import Any

from kubepeft_operator.sweep.logic import (
    LABEL_SWEEP,
    SweepRef,
    conditions,
    is_owned,
    observe_trial,
    plan,
    render_trial,
)

from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus, SweepTrial
from kubepeft.api.validate import validate_object
from kubepeft.contract import ReportProgress, TrainerReport
from tests.operator.support import NS, UID, spec_dict

SWEEP = SweepRef(NS, "ranks", UID, 1)
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def spec_wire(**fields: Any) -> dict[str, Any]:
    return {"template": spec_dict(), "parameters": [{"path": "lora.r", "values": [2, 4, 8]}], **fields}


def job(name: str, phase: str | None, uid: str = UID) -> dict[str, Any]:
    refs = [{"kind": "PeftSweep", "name": "ranks", "uid": uid, "controller": True}]
    return {"metadata": {"name": name, "ownerReferences": refs}, "status": {"phase": phase} if phase else {}}


def test_trial_is_a_valid_peftjob_owned_by_the_sweep() -> None:
    spec = PeftSweepSpec.model_validate(spec_wire(suspend=True))
    trial = SweepTrial(name="ranks-t1", index=1, parameters={"lora.r": "4"})
    body = render_trial(SWEEP, spec, trial)
    assert validate_object(body) == []
    assert body["spec"]["lora"]["r"] == 4 and body["spec"]["runPolicy"]["suspend"] is True
    (ref,) = body["metadata"]["ownerReferences"]
    assert ref["uid"] == UID and ref["controller"] and ref["kind"] == "PeftSweep"
    assert body["metadata"]["labels"] == {LABEL_SWEEP: "ranks"} and is_owned(body, SWEEP)


def test_a_job_of_the_same_name_owned_by_someone_else_is_never_adopted() -> None:
    spec = PeftSweepSpec.model_validate(spec_wire())
    trial = SweepTrial(name="ranks-t0", index=0, phase="Running")
    row = observe_trial(spec, SWEEP, trial, job("ranks-t0", "Running", uid="other"), None)
    assert row.phase == "Failed" and "not ours" in (row.message or "")
    deleted = observe_trial(spec, SWEEP, trial, None, None)
    assert deleted.phase == "Failed" and "deleted" in (deleted.message or "")
    assert observe_trial(spec, SWEEP, trial.model_copy(update={"phase": "Pending"}), None, None).phase == "Pending"


def test_observation_takes_metrics_from_the_report_and_phase_from_the_job() -> None:
    spec = PeftSweepSpec.model_validate(spec_wire())
    trial = SweepTrial(name="ranks-t0", index=0, phase="Running")
    report = TrainerReport(
        state="Succeeded", eval_loss_after=0.5, trainable_parameters=99, progress=ReportProgress(step=10, loss=0.4)
    )
    pending = observe_trial(spec, SWEEP, trial, job("ranks-t0", "Running"), report)
    assert pending.phase == "Running" and pending.trainable_parameters == 99  # the job has not concluded yet
    done = observe_trial(spec, SWEEP, trial, job("ranks-t0", "Succeeded"), report)
    assert done.phase == "Succeeded" and done.objective == 0.5
    failed = observe_trial(
        spec, SWEEP, trial, {**job("ranks-t0", "Failed"), "status": {"phase": "Failed", "message": "oom"}}, None
    )
    assert failed.phase == "Failed" and failed.message == "oom"


def test_plan_creates_up_to_max_parallel_and_recreates_trials_lost_in_a_restart() -> None:
    first = plan(SWEEP, spec_wire(maxParallel=2), PeftSweepStatus(), {}, {}, NOW)
    assert [b["metadata"]["name"] for b in first.create] == ["ranks-t0", "ranks-t1"]
    assert first.status.start_time == "2026-01-01T12:00:00Z" and first.status.observed_generation == 1
    # Status was written, the operator stopped before creating ranks-t1: the next plan creates it.
    again = plan(SWEEP, spec_wire(maxParallel=2), first.status, {"ranks-t0": job("ranks-t0", "Running")}, {}, NOW)
    assert [b["metadata"]["name"] for b in again.create] == ["ranks-t1"]


def test_an_invalid_value_fails_the_sweep_with_the_path_named() -> None:
    wire = spec_wire(parameters=[{"path": "lora.r", "values": [2, "four"]}])
    result = plan(SWEEP, wire, PeftSweepStatus(), {}, {}, NOW)
    assert result.status.phase == "Failed" and result.create == []
    assert "spec.parameters[0].values[1]: lora.r: must be of type integer" in (result.status.message or "")
    assert [e.reason for e in result.events] == ["InvalidSpec"]


def test_conditions_keep_transition_times_until_they_change() -> None:
    running = PeftSweepStatus(phase="Running")
    first = conditions(running, "t1", 1)
    assert [(c.type, c.status) for c in first] == [("Running", "True")]
    same = conditions(running.model_copy(update={"conditions": first}), "t2", 1)
    assert same[0].last_transition_time == "t1"
    done = conditions(PeftSweepStatus(phase="Succeeded", conditions=first), "t3", 1)
    assert [(c.type, c.status, c.last_transition_time) for c in done] == [
        ("Running", "False", "t3"),
        ("Succeeded", "True", "t3"),
    ]
