"""Status helpers: reports, wire forms, patches, the failed-attempt annotation."""

from __future__ import annotations

from kubepeft_operator.reconciler import status_patch
from kubepeft_operator.status import (
    artifacts_from_report,
    failed_attempts_from_annotation,
    failed_attempts_to_annotation,
    parse_report,
    progress_from_report,
    set_condition,
    spec_from_wire,
    status_from_wire,
)

from kubepeft.api.models import Artifacts, Progress, TrainingProgress
from kubepeft.contract import REPORT_KEY, ReportArtifacts, ReportProgress, TrainerReport
from tests.operator.support import T0, spec_dict


def test_reports_parse_and_torn_or_foreign_values_are_ignored() -> None:
    report = TrainerReport(state="Training", attempt=2, progress=ReportProgress(step=3, total_steps=9))
    assert parse_report({REPORT_KEY: report.to_json()}) == report
    assert parse_report({REPORT_KEY: '{"state": "Train'}) is None
    assert parse_report({REPORT_KEY: '{"version": "other/v9"}'}) is None
    assert parse_report({}) is None and parse_report(None) is None


def test_status_from_wire_drops_unknown_fields_and_survives_garbage() -> None:
    status = status_from_wire({"phase": "Running", "attempts": 2, "kopf": {"progress": {}}})
    assert status.phase == "Running" and status.attempts == 2
    assert status_from_wire({"phase": "Exploded"}).phase is None


def test_status_patch_nulls_removed_fields() -> None:
    assert status_patch({"phase": "Running", "message": "x"}, {"phase": "Failed"}) == {
        "phase": "Failed",
        "message": None,
    }
    assert status_patch({"phase": "Running"}, {"phase": "Running"}) == {}


def test_status_patch_nulls_keys_dropped_inside_nested_objects() -> None:
    """A merge patch merges nested objects: a dropped nested key must be sent as null (found on a
    real API server: a finished job kept its stale ``progress.etaSeconds``)."""
    old = {"phase": "Running", "progress": {"step": 5, "etaSeconds": 30}, "conditions": [{"type": "A"}]}
    new = {"phase": "Succeeded", "progress": {"step": 10}, "conditions": [{"type": "A"}, {"type": "B"}]}
    assert status_patch(old, new) == {
        "phase": "Succeeded",
        "progress": {"step": 10, "etaSeconds": None},
        "conditions": [{"type": "A"}, {"type": "B"}],
    }


def test_failed_attempts_annotation_is_an_idempotent_set() -> None:
    attempts = failed_attempts_from_annotation("1,3,junk,3")
    assert attempts == {1, 3} and failed_attempts_to_annotation(attempts | {3}) == "1,3"
    assert failed_attempts_from_annotation(None) == frozenset()


def test_condition_upsert() -> None:
    conditions = set_condition([], "Running", "True", "WorkersRunning", "ok", T0, 1)
    conditions = set_condition(conditions, "Failed", "False", "None", "", T0, 1)
    assert [c.type for c in conditions] == ["Running", "Failed"]


def test_spec_errors_name_the_field() -> None:
    spec, error = spec_from_wire({**spec_dict(), "method": "dance"})
    assert spec is None and error is not None and error.startswith("spec.method")


def test_report_and_status_share_one_definition_of_progress_and_artifacts() -> None:
    assert issubclass(ReportProgress, TrainingProgress) and issubclass(Progress, TrainingProgress)
    assert issubclass(ReportArtifacts, Artifacts)
    assert set(Progress.model_fields) == set(TrainingProgress.model_fields) | {"display", "last_update_time"}
    report = TrainerReport(
        progress=ReportProgress(step=4, total_steps=8, eta_seconds=9),
        artifacts=ReportArtifacts(latest_checkpoint="s3://b/c"),
        time="2026-01-01T00:00:00Z",
    )
    # The report's wire stays snake_case (and reads only that); the status's is camelCase.
    assert '"total_steps":8' in report.to_json() and '"latest_checkpoint":"s3://b/c"' in report.to_json()
    assert parse_report({REPORT_KEY: '{"progress": {"totalSteps": 3}}'}) is None
    progress, artifacts = progress_from_report(report), artifacts_from_report(report)
    assert type(progress) is Progress and type(artifacts) is Artifacts
    assert progress.to_wire() == {
        "display": "4/8",
        "step": 4,
        "totalSteps": 8,
        "epoch": 0.0,
        "etaSeconds": 9,
        "lastUpdateTime": "2026-01-01T00:00:00Z",
    }
    assert artifacts.to_wire() == {"latestCheckpoint": "s3://b/c"}
    assert artifacts_from_report(TrainerReport()) is None
