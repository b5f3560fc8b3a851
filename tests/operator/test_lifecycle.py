"""The pure lifecycle decision, one transition per test."""

from __future__ import annotations

import datetime
from dataclasses import replace
from typing import Any

from kubepeft_operator.lifecycle import (
    CreatePods,
    DeleteJob,
    DeletePods,
    JobView,
    Observed,
    PodView,
    Preflight,
    create_refused,
    decide,
    name_conflict,
)
from kubepeft_operator.status import get_condition, rfc3339, spec_from_wire

from kubepeft.api.models import PeftJobStatus
from kubepeft.contract import ReportArtifacts, ReportProgress, TrainerReport
from tests.operator.support import NS, T0, UID, spec, spec_dict

OK = Preflight()


def job(status: dict[str, Any] | None = None, failed: frozenset[int] = frozenset(), **changes: Any) -> JobView:
    parsed, error = spec_from_wire(spec_dict(**changes))
    return JobView("tune", NS, UID, 1, parsed, error, PeftJobStatus.model_validate(status or {}), failed)


def pods(
    attempt: int, *phases: str, exit_codes: dict[int, int] | None = None, message: str = ""
) -> tuple[PodView, ...]:
    codes = exit_codes or {}
    return tuple(
        PodView(f"tune-a{attempt}-{rank}", attempt, rank, phase, codes.get(rank), message=message)
        for rank, phase in enumerate(phases)
    )


def running(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    return {"phase": "Running", "attempts": attempt, "startTime": rfc3339(T0), **extra}


def test_new_job_asks_for_preflight_then_creates_attempt_one() -> None:
    first = decide(job(), Observed(), T0)
    assert first.needs_preflight and not first.actions
    d = decide(job(), Observed(preflight=OK), T0)
    assert d.actions == [CreatePods(1, (0, 1))]
    assert d.status.phase == "Created" and d.status.attempts == 1 and d.status.start_time == rfc3339(T0)
    assert get_condition(d.status.conditions, "Created").status == "True"  # type: ignore[union-attr]
    assert [e.reason for e in d.events] == ["Created"] and d.status.observed_generation == 1


def test_missing_secret_fails_without_creating_anything() -> None:
    d = decide(job(), Observed(preflight=Preflight("SecretNotFound", 'Secret "s3-creds" not found')), T0)
    assert d.status.phase == "Failed" and not [a for a in d.actions if isinstance(a, CreatePods)]
    failed = get_condition(d.status.conditions, "Failed")
    assert failed is not None and failed.reason == "SecretNotFound" and "s3-creds" in failed.message


def test_invalid_spec_fails_with_the_field_path() -> None:
    d = decide(job(training={"maxSteps": 0}), Observed(), T0)
    assert d.status.phase == "Failed"
    failed = get_condition(d.status.conditions, "Failed")
    assert failed is not None and failed.reason == "InvalidSpec" and "spec.training.maxSteps" in failed.message


def test_all_workers_running_is_running_and_progress_comes_from_the_report() -> None:
    report = TrainerReport(
        state="Training",
        attempt=1,
        progress=ReportProgress(step=5, total_steps=20, loss=1.5),
        time="2026-01-01T12:00:05Z",
    )
    status = {"phase": "Created", "attempts": 1, "startTime": rfc3339(T0)}
    d = decide(job(status), Observed(pods(1, "Running", "Running"), report), T0)
    assert d.status.phase == "Running" and not d.actions
    assert d.status.progress is not None and d.status.progress.step == 5 and d.status.progress.loss == 1.5
    assert d.status.progress.display == "5/20" and d.status.progress.last_update_time == "2026-01-01T12:00:05Z"
    half = decide(job(status), Observed(pods(1, "Running", "Pending")), T0)
    assert half.status.phase == "Created" and "1/2 running" in (half.status.message or "")


def test_success_records_artifacts_and_completion() -> None:
    report = TrainerReport(
        state="Succeeded", attempt=1, artifacts=ReportArtifacts(adapter="s3://runs/a", manifest="s3://runs/m")
    )
    d = decide(job(running()), Observed(pods(1, "Succeeded", "Succeeded", exit_codes={0: 0, 1: 0}), report), T0)
    assert d.status.phase == "Succeeded" and d.status.completion_time == rfc3339(T0)
    assert d.status.artifacts is not None and d.status.artifacts.manifest == "s3://runs/m"
    assert get_condition(d.status.conditions, "Succeeded").status == "True"  # type: ignore[union-attr]


def test_one_worker_failing_restarts_the_whole_gang() -> None:
    observed = Observed(pods(1, "Failed", "Running", exit_codes={0: 1}, message="NCCL timeout"), preflight=OK)
    d = decide(job(running()), observed, T0)
    # The new attempt is recorded, but its pods wait until the old ones are gone.
    assert d.actions == [DeletePods(("tune-a1-0", "tune-a1-1"), "attempt 1 failed")]
    assert d.status.phase == "Restarting" and d.status.attempts == 2 and d.failed_attempts == {1}
    assert d.restarted and "NCCL timeout" in (d.status.message or "")
    assert "waits for 2 pod(s) of an earlier attempt" in (d.status.message or "")
    restarting = get_condition(d.status.conditions, "Restarting")
    assert restarting is not None and restarting.status == "True"


def test_the_next_attempt_starts_only_after_every_pod_of_the_previous_one_is_gone() -> None:
    status = {"phase": "Restarting", "attempts": 2, "startTime": rfc3339(T0)}
    terminating = tuple(PodView(f"tune-a1-{rank}", 1, rank, "Running", terminating=True) for rank in range(2))
    waiting = decide(job(status), Observed(terminating, preflight=OK), T0)
    assert waiting.actions == [] and "waits for 2 pod(s)" in (waiting.status.message or "")
    one_left = decide(job(status), Observed(terminating[:1], preflight=OK), T0)
    assert one_left.actions == []
    gone = decide(job(status), Observed(preflight=OK), T0)
    assert gone.actions == [CreatePods(2, (0, 1))] and gone.status.phase == "Restarting"


def test_a_finished_job_keeps_no_eta() -> None:
    report = TrainerReport(
        state="Succeeded", attempt=1, progress=ReportProgress(step=10, total_steps=10, eta_seconds=42)
    )
    d = decide(job(running()), Observed(pods(1, "Succeeded", "Succeeded", exit_codes={0: 0, 1: 0}), report), T0)
    assert d.status.phase == "Succeeded" and d.status.progress is not None
    assert d.status.progress.step == 10 and d.status.progress.eta_seconds is None
    live = decide(
        job(running()), Observed(pods(1, "Running", "Running"), report.model_copy(update={"state": "Training"})), T0
    )
    assert live.status.progress is not None and live.status.progress.eta_seconds == 42


def test_a_refused_create_is_recorded_once_and_cleared_when_the_pods_exist() -> None:
    status = {"phase": "Created", "attempts": 1, "startTime": rfc3339(T0)}
    message = 'cannot create Pod "tune-a1-0": exceeded quota: no-pods'
    refused = create_refused(job(status), T0, message)
    assert refused.status.phase == "Created" and "exceeded quota" in (refused.status.message or "")
    created = get_condition(refused.status.conditions, "Created")
    assert created is not None and created.status == "False" and created.reason == "FailedCreate"
    assert [e.reason for e in refused.events] == ["FailedCreate"] and not refused.actions
    again = create_refused(job(refused.status.to_wire()), T0, message)
    assert not again.events  # the same refusal is not announced twice
    recovered = decide(job(refused.status.to_wire()), Observed(pods(1, "Pending", "Pending")), T0)
    assert get_condition(recovered.status.conditions, "Created").status == "True"  # type: ignore[union-attr]


def test_a_name_taken_by_another_object_fails_the_job_as_name_conflict() -> None:
    d = name_conflict(job(running()), T0, 'ConfigMap "tune-config" already exists and is not controlled by this job')
    assert d.status.phase == "Failed" and not d.actions
    assert get_condition(d.status.conditions, "Failed").reason == "NameConflict"  # type: ignore[union-attr]
    assert [e.reason for e in d.events] == ["NameConflict"]


def test_backoff_limit_exhausted_fails() -> None:
    runtime = {"backoffLimit": 1}
    observed = Observed(pods(2, "Failed", "Running", exit_codes={0: 137}), preflight=OK)
    d = decide(job(running(2), failed=frozenset({1}), runPolicy=runtime), observed, T0)
    assert d.status.phase == "Failed" and d.failed_attempts == {1, 2}
    assert d.actions == [DeletePods(("tune-a2-1",), "the job failed")]
    assert get_condition(d.status.conditions, "Failed").reason == "BackoffLimitExceeded"  # type: ignore[union-attr]


def test_exit_code_3_is_permanent_and_carries_the_trainer_message() -> None:
    report = TrainerReport(
        state="Failed", attempt=1, failure_class="permanent", message="train.jsonl:12: missing 'text'"
    )
    observed = Observed(pods(1, "Failed", "Running", exit_codes={0: 3}), report, preflight=OK)
    d = decide(job(running()), observed, T0)
    assert d.status.phase == "Failed" and d.status.attempts == 1 and not d.failed_attempts
    failed = get_condition(d.status.conditions, "Failed")
    assert failed is not None and failed.reason == "PermanentFailure"
    assert "train.jsonl:12: missing 'text'" in failed.message and "train.jsonl:12" in (d.status.message or "")
    # A permanent failure class in the report counts even with another exit code.
    also = decide(job(running()), Observed(pods(1, "Failed", "Running", exit_codes={0: 1}), report, OK), T0)
    assert also.status.phase == "Failed"


def test_a_worker_that_vanishes_while_running_fails_the_attempt_but_unborn_ones_are_created() -> None:
    d = decide(job(running()), Observed(pods(1, "Running"), preflight=OK), T0)
    assert d.status.attempts == 2 and "disappeared" in (d.status.message or "")
    created = {"phase": "Created", "attempts": 1, "startTime": rfc3339(T0)}
    d2 = decide(job(created), Observed(pods(1, "Pending")), T0)
    assert d2.actions == [CreatePods(1, (1,))] and d2.status.attempts == 1


def test_deadline_fails_and_deletes_workers() -> None:
    later = T0 + datetime.timedelta(seconds=61)
    d = decide(job(running(), runPolicy={"activeDeadlineSeconds": 60}), Observed(pods(1, "Running", "Running")), later)
    assert d.status.phase == "Failed" and d.actions == [DeletePods(("tune-a1-0", "tune-a1-1"), "the job failed")]
    assert get_condition(d.status.conditions, "Failed").reason == "DeadlineExceeded"  # type: ignore[union-attr]
    early = decide(job(running(), runPolicy={"activeDeadlineSeconds": 60}), Observed(pods(1, "Running", "Running")), T0)
    assert early.requeue_after == 60


def test_suspend_and_resume() -> None:
    d = decide(job(running(), runPolicy={"suspend": True}), Observed(pods(1, "Running", "Running")), T0)
    assert d.status.phase == "Suspended" and d.actions == [
        DeletePods(("tune-a1-0", "tune-a1-1"), "the job is suspended")
    ]
    suspended = d.status.to_wire()
    resumed = decide(job(suspended), Observed(preflight=OK), T0 + datetime.timedelta(seconds=30))
    assert resumed.actions == [CreatePods(2, (0, 1))] and resumed.status.attempts == 2
    assert not resumed.failed_attempts  # a resume does not count against backoffLimit
    assert resumed.status.start_time == rfc3339(T0 + datetime.timedelta(seconds=30))  # the deadline clock restarts
    assert get_condition(resumed.status.conditions, "Suspended").reason == "Resumed"  # type: ignore[union-attr]


def test_finished_jobs_stay_finished_and_ttl_deletes_them() -> None:
    done = {"phase": "Succeeded", "attempts": 1, "completionTime": rfc3339(T0)}
    d = decide(job(done, runPolicy={"ttlSecondsAfterFinished": 10}), Observed(), T0 + datetime.timedelta(seconds=4))
    assert d.status.phase == "Succeeded" and not d.actions and d.requeue_after == 6
    gone = decide(job(done, runPolicy={"ttlSecondsAfterFinished": 10}), Observed(), T0 + datetime.timedelta(seconds=10))
    assert gone.actions == [DeleteJob("ttlSecondsAfterFinished=10 elapsed")]
    failed = {"phase": "Failed", "attempts": 1, "completionTime": rfc3339(T0)}
    still = decide(job(failed), Observed(), T0)  # children gone: nothing is re-created
    assert still.status.phase == "Failed" and not still.actions


def test_stale_attempt_pods_are_cleaned_up_and_gated_pods_wait() -> None:
    status = {"phase": "Restarting", "attempts": 2, "startTime": rfc3339(T0)}
    gated = tuple(PodView(f"tune-a2-{r}", 2, r, "Pending", gated=True) for r in range(2))
    d = decide(job(status), Observed((*pods(1, "Failed"), *gated)), T0)
    assert d.actions == [DeletePods(("tune-a1-0",), "pods of an earlier attempt")]
    assert d.status.phase == "Restarting" and "2 gated" in (d.status.message or "")


def test_conditions_keep_transition_time_unless_status_changes() -> None:
    status = {"phase": "Created", "attempts": 1, "startTime": rfc3339(T0)}
    first = decide(job(status), Observed(pods(1, "Running", "Running")), T0)
    later = T0 + datetime.timedelta(minutes=5)
    again = decide(job(first.status.to_wire()), Observed(pods(1, "Running", "Running")), later)
    before = get_condition(first.status.conditions, "Running")
    after = get_condition(again.status.conditions, "Running")
    assert before is not None and after is not None and before.last_transition_time == after.last_transition_time
    assert not again.events  # no transition, no event


def test_pod_view_reads_exit_codes_and_messages() -> None:
    body = {
        "metadata": {"name": "tune-a1-0", "labels": {"kubepeft.dev/attempt": "1", "kubepeft.dev/rank": "0"}},
        "spec": {},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": " bad input\n"}},
                }
            ],
        },
    }
    view = PodView.from_body(body)
    assert view is not None and view.exit_code == 3 and view.message == "bad input" and view.failed
    assert PodView.from_body({"metadata": {"name": "x", "labels": {}}}) is None
    assert spec().resources.nodes == 2


def _terminated(message: str, exit_code: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "tune-a1-1", "labels": {"kubepeft.dev/attempt": "1", "kubepeft.dev/rank": "1"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": exit_code, "message": message}}}
            ],
        },
    }


def test_a_report_as_termination_message_gives_its_message_and_failure_class() -> None:
    """Real trainers write their final report (JSON) as the termination message; no raw JSON in status."""
    report = TrainerReport(state="Failed", attempt=1, failure_class="permanent", message="rank 1: bad shard")
    view = PodView.from_body(_terminated(report.to_json()))
    assert view is not None and view.message == "rank 1: bad shard" and view.permanent
    # Rank 1 never writes the progress ConfigMap: its termination message alone makes it permanent.
    observed = Observed((PodView("tune-a1-0", 1, 0, "Running"), view), preflight=OK)
    d = decide(job(running()), observed, T0)
    assert d.status.phase == "Failed" and not d.failed_attempts
    failed = get_condition(d.status.conditions, "Failed")
    assert failed is not None and failed.reason == "PermanentFailure"
    assert "rank 1: bad shard" in failed.message and "{" not in (d.status.message or "")
    # A retryable report restarts, still with the clean message; plain text stays as it is.
    retry = PodView.from_body(_terminated(TrainerReport(state="Failed", failure_class="retryable").to_json()))
    assert retry is not None and not retry.permanent and retry.message == "trainer state Failed"
    plain = PodView.from_body(_terminated("Traceback ... {not json"))
    assert plain is not None and plain.message == "Traceback ... {not json" and not plain.permanent


def test_the_final_report_in_rank_0s_termination_message_wins_over_an_older_config_map_report() -> None:
    """The pod and ConfigMap watches are separate streams: the pods' end can arrive before the
    ConfigMap's last patch. The final report is also rank 0's termination message."""
    older = TrainerReport(
        state="Training", attempt=1, progress=ReportProgress(step=5, total_steps=10), time="2026-01-01T12:00:05Z"
    )
    final = TrainerReport(
        state="Succeeded",
        attempt=1,
        progress=ReportProgress(step=10, total_steps=10, eval_loss=0.7),
        artifacts=ReportArtifacts(manifest="s3://runs/out/team-a/tune/manifest.json"),
        time="2026-01-01T12:00:09Z",
    )
    rank0 = PodView.from_body(_terminated(final.to_json(), exit_code=0))
    assert rank0 is not None and rank0.report == final
    done = (replace(rank0, name="tune-a1-0", rank=0, phase="Succeeded"), PodView("tune-a1-1", 1, 1, "Succeeded", 0))
    d = decide(job(running()), Observed(done, older), T0)
    assert d.status.phase == "Succeeded"
    assert d.status.progress is not None and d.status.progress.step == 10 and d.status.progress.eval_loss == 0.7
    assert d.status.artifacts is not None and d.status.artifacts.manifest == "s3://runs/out/team-a/tune/manifest.json"
    # A newer ConfigMap report (the usual order) is kept when rank 0 left an older one.
    newer = older.model_copy(update={"time": "2026-01-01T12:00:10Z"})
    assert decide(job(running()), Observed(done, newer), T0).status.progress.step == 5  # type: ignore[union-attr]
