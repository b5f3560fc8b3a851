"""The pure lifecycle decision: (job, observed pods, latest report, now) -> actions + new status.

No I/O here. The reconciler observes, calls :func:`decide`, then performs the actions in order.
Everything the decision needs survives an operator restart: the status (phase, attempts,
times), the failed-attempt set (an annotation), and pod labels (attempt, rank).

Phases: Created -> Running -> Succeeded | Failed, with Restarting (a new attempt after a
retryable failure) and Suspended. A finished job never comes back to life.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Literal

from kubepeft.api.models import PeftJobSpec, PeftJobStatus
from kubepeft.contract import EXIT_PERMANENT, TrainerReport
from kubepeft_operator import naming
from kubepeft_operator.status import (
    FINISHED_PHASES,
    artifacts_from_report,
    get_condition,
    newest_report,
    parse_termination_report,
    parse_time,
    progress_from_report,
    rfc3339,
    set_condition,
)

MESSAGE_LIMIT = 1024


# --- what is observed -----------------------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """One worker pod as the decision sees it."""

    name: str
    attempt: int
    rank: int
    phase: str = "Pending"
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    gated: bool = False
    terminating: bool = False
    permanent: bool = False
    """Its termination message is a trainer report classifying the failure as permanent."""
    report: TrainerReport | None = field(default=None, compare=False)
    """The trainer's final report, when its termination message is one."""

    @property
    def failed(self) -> bool:
        return self.phase == "Failed" or (self.exit_code is not None and self.exit_code != 0)

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded" and not self.failed

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.terminating

    @property
    def alive(self) -> bool:
        return self.phase not in ("Succeeded", "Failed")

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PodView | None:
        """``None`` for a pod without our attempt/rank labels (not one of ours)."""
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        try:
            attempt, rank = int(labels[naming.LABEL_ATTEMPT]), int(labels[naming.LABEL_RANK])
        except (KeyError, ValueError):
            return None
        status = body.get("status") or {}
        exit_code, reason, message = None, status.get("reason") or "", status.get("message") or ""
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                exit_code = terminated.get("exitCode")
                reason = terminated.get("reason") or reason
                message = terminated.get("message") or message
                if exit_code:
                    break
        # The trainer's termination message is its final report (JSON): keep its message only.
        report = parse_termination_report(message)
        if report is not None:
            message = report.message or f"trainer state {report.state}"
        return cls(
            name=meta.get("name", ""),
            attempt=attempt,
            rank=rank,
            phase=status.get("phase") or "Pending",
            exit_code=exit_code,
            reason=reason,
            message=message.strip(),
            permanent=report is not None and report.failure_class == "permanent",
            report=report,
            gated=bool((body.get("spec") or {}).get("schedulingGates")),
            terminating=bool(meta.get("deletionTimestamp")),
        )


@dataclass(frozen=True)
class Preflight:
    """The outcome of checks that need I/O (referenced Secrets and keys exist)."""

    reason: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class JobView:
    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: PeftJobSpec | None
    spec_error: str | None
    status: PeftJobStatus
    failed_attempts: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodView, ...] = ()
    report: TrainerReport | None = None
    preflight: Preflight | None = None
    """``None``: not checked yet; the decision asks for it when it wants to start an attempt."""


# --- what to do -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePods:
    """Ensure the job's children, then create these ranks' pods of ``attempt``."""

    attempt: int
    ranks: tuple[int, ...]


@dataclass(frozen=True)
class DeletePods:
    names: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class DeleteJob:
    why: str


Action = CreatePods | DeletePods | DeleteJob


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    status: PeftJobStatus
    failed_attempts: frozenset[int]
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    needs_preflight: bool = False
    restarted: bool = False
    """A retryable failure started a new attempt (for the restarts metric)."""


# --- the decision ---------------------------------------------------------------------------


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


class _Decider:
    def __init__(self, job: JobView, observed: Observed, now: datetime.datetime) -> None:
        self.job, self.observed, self.now = job, observed, now
        status = job.status.model_copy(deep=True)
        status.observed_generation = job.generation
        self.d = Decision(status=status, failed_attempts=job.failed_attempts)
        self.st = status
        attempt = status.attempts
        self.waiting_for = 0
        """Pods of earlier attempts still terminating; the new attempt's pods wait for them."""
        self.current = {p.rank: p for p in observed.pods if p.attempt == attempt}
        self.stale = [p for p in observed.pods if p.attempt != attempt]

    # small helpers

    def condition(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.st.conditions = set_condition(
            self.st.conditions, type_, status, reason, _clip(message), self.now, self.job.generation
        )

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.d.events.append(Event(type_, reason, _clip(message)))

    def delete(self, pods: list[PodView], why: str) -> None:
        names = tuple(p.name for p in pods if not p.terminating)
        if names:
            self.d.actions.append(DeletePods(names, why))

    def report(self) -> TrainerReport | None:
        """The trainer's newest report: the progress ConfigMap's, or the final one rank 0 of this
        attempt left as its termination message. The pod and ConfigMap watches are separate
        streams: a pod's end can arrive before the ConfigMap's last patch."""
        rank0 = self.current.get(0)
        return newest_report(rank0.report if rank0 else None, self.observed.report)

    def create_pods(self, attempt: int, ranks: tuple[int, ...]) -> None:
        """Create the ranks' pods, but only once no pod of an earlier attempt exists.

        The next attempt's pods take the same hostnames under the same headless Service; while a
        pod of the previous attempt is still terminating (a real kubelet grants it its grace
        period), rank 0's DNS name could resolve to the dying pod. The deletion events of the old
        pods trigger the reconcile that creates the new ones.
        """
        leftovers = [p for p in self.observed.pods if p.attempt < attempt]
        if leftovers:
            self.waiting_for = len(leftovers)
            return
        self.d.actions.append(CreatePods(attempt, ranks))

    def current_report(self) -> TrainerReport | None:
        report = self.report()
        return report if report is not None and report.attempt in (0, self.st.attempts) else None

    # transitions

    def fail(self, reason: str, message: str) -> Decision:
        self.st.phase = "Failed"
        self.st.message = _clip(message)
        self.st.completion_time = self.st.completion_time or rfc3339(self.now)
        self.condition("Failed", "True", reason, message)
        self.condition("Running", "False", "Failed", "the job failed")
        if self.st.attempts and any(c.type == "Restarting" for c in self.st.conditions):
            self.condition("Restarting", "False", "Failed", "the job failed")
        self.delete([p for p in self.current.values() if p.alive], "the job failed")
        self.event("Warning", reason, message)
        self.ttl()
        return self.d

    def succeed(self) -> Decision:
        nodes = len(self.current)
        self.st.phase = "Succeeded"
        self.st.completion_time = rfc3339(self.now)
        self.st.message = f"all {nodes} worker(s) of attempt {self.st.attempts} exited 0"
        self.condition("Succeeded", "True", "Completed", self.st.message)
        self.condition("Running", "False", "Completed", "training finished")
        if any(c.type == "Restarting" for c in self.st.conditions):
            self.condition("Restarting", "False", "Completed", "training finished")
        self.event("Normal", "Succeeded", self.st.message)
        self.ttl()
        return self.d

    def ttl(self) -> None:
        spec = self.job.spec
        ttl = spec.run_policy.ttl_seconds_after_finished if spec else None
        done = parse_time(self.st.completion_time)
        if ttl is None or done is None:
            return
        left = (done + datetime.timedelta(seconds=ttl) - self.now).total_seconds()
        if left <= 0:
            self.d.actions.append(DeleteJob(f"ttlSecondsAfterFinished={ttl} elapsed"))
        else:
            self.d.requeue_after = left

    def start_attempt(self, attempt: int, kind: Literal["first", "restart", "resume"], why: str = "") -> Decision:
        preflight = self.observed.preflight
        if preflight is None:
            self.d.needs_preflight = True
            return self.d
        if not preflight.ok:
            assert preflight.reason is not None
            return self.fail(preflight.reason, preflight.message)
        assert self.job.spec is not None
        nodes = self.job.spec.resources.nodes
        self.st.attempts = attempt
        if self.st.start_time is None or kind == "resume":
            self.st.start_time = rfc3339(self.now)
        self.create_pods(attempt, tuple(range(nodes)))
        if kind == "first":
            self.st.phase = "Created"
            self.st.message = f"attempt 1 created: {nodes} worker(s)"
            self.condition("Created", "True", "ChildrenCreated", self.st.message)
            self.condition("Running", "False", "Starting", "waiting for workers")
            self.event("Normal", "Created", self.st.message)
        elif kind == "restart":
            self.st.phase = "Restarting"
            self.st.message = f"attempt {attempt} started after a retryable failure: {why}"
            self.condition("Restarting", "True", "WorkerFailed", self.st.message)
            self.condition("Running", "False", "Restarting", "a new attempt is starting")
            self.event("Warning", "Restarting", self.st.message)
            self.d.restarted = True
        else:
            self.st.phase = "Created"
            self.st.message = f"resumed: attempt {attempt} created, resuming from the latest checkpoint"
            self.condition("Suspended", "False", "Resumed", self.st.message)
            self.condition("Running", "False", "Starting", "waiting for workers")
            self.event("Normal", "Resumed", self.st.message)
        if self.waiting_for:
            self.st.message = f"{self.st.message}; {self.waiting_message()}"
        return self.d

    def waiting_message(self) -> str:
        return f"attempt {self.st.attempts} waits for {self.waiting_for} pod(s) of an earlier attempt to terminate"

    def worker_failure(self, pod: PodView | None, vanished: list[str]) -> Decision:
        assert self.job.spec is not None
        report = self.current_report()
        report_failed = report is not None and report.state == "Failed"
        if pod is not None:
            detail = (report.message if report_failed and report and report.message else "") or pod.message
            what = f"worker rank {pod.rank} ({pod.name}) exited with code {pod.exit_code}"
            if pod.exit_code is None:
                what = f"worker rank {pod.rank} ({pod.name}) failed ({pod.reason or 'no reason given'})"
            summary = f"{what}: {detail}" if detail else what
        else:
            summary = f"worker pod(s) {', '.join(vanished)} disappeared while running"
        permanent = (pod is not None and (pod.exit_code == EXIT_PERMANENT or pod.permanent)) or (
            report_failed and report is not None and report.failure_class == "permanent"
        )
        if permanent:
            return self.fail("PermanentFailure", f"{summary} (permanent: not retried)")
        failed = self.job.failed_attempts | {self.st.attempts}
        self.d.failed_attempts = failed
        limit = self.job.spec.run_policy.backoff_limit
        if len(failed) > limit:
            return self.fail(
                "BackoffLimitExceeded", f"{len(failed)} attempt(s) failed, backoffLimit is {limit}; last: {summary}"
            )
        self.delete(list(self.current.values()), f"attempt {self.st.attempts} failed")
        return self.start_attempt(self.st.attempts + 1, "restart", f"{summary} (retry {len(failed)} of {limit})")

    def decide(self) -> Decision:
        if self.stale:
            self.delete(self.stale, "pods of an earlier attempt")
        self.absorb_report()
        if self.st.phase in FINISHED_PHASES:
            self.delete([p for p in self.current.values() if p.alive], "the job has finished")
            self.ttl()
            return self.d
        spec = self.job.spec
        if spec is None:
            return self.fail("InvalidSpec", f"the spec is invalid: {self.job.spec_error}")
        for step in (self.suspension, self.deadline):
            if (decided := step(spec)) is not None:
                return decided
        if self.st.attempts == 0:
            return self.start_attempt(1, "first")
        return self.follow_workers(spec)

    def absorb_report(self) -> None:
        """The trainer's last report (progress, the loss before training, artifacts) into the status."""
        if (report := self.report()) is None:
            return
        st = self.st
        st.progress = progress_from_report(report)
        if report.eval_loss_before is not None:
            st.eval_loss_before = report.eval_loss_before
        if (artifacts := artifacts_from_report(report)) is not None:
            st.artifacts = artifacts

    def suspension(self, spec: PeftJobSpec) -> Decision | None:
        """Suspend (delete the workers, keep checkpoints) or resume; None when neither applies."""
        st = self.st
        if spec.run_policy.suspend:
            if st.phase != "Suspended":
                self.delete(list(self.current.values()), "the job is suspended")
                st.phase = "Suspended"
                st.message = "suspended: workers deleted, checkpoints kept"
                self.condition("Suspended", "True", "Suspended", st.message)
                self.condition("Running", "False", "Suspended", st.message)
                self.event("Normal", "Suspended", st.message)
            else:
                self.delete([p for p in self.current.values() if p.alive], "the job is suspended")
            return self.d
        if st.phase == "Suspended":
            self.delete(list(self.current.values()), "pods of the suspended attempt")
            return self.start_attempt(st.attempts + 1, "resume")
        return None

    def deadline(self, spec: PeftJobSpec) -> Decision | None:
        """Fail a job past activeDeadlineSeconds; otherwise requeue when the deadline falls."""
        deadline = spec.run_policy.active_deadline_seconds
        started = parse_time(self.st.start_time)
        if deadline and started is not None:
            left = (started + datetime.timedelta(seconds=deadline) - self.now).total_seconds()
            if left <= 0:
                return self.fail("DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds={deadline}")
            self.d.requeue_after = left
        return None

    def follow_workers(self, spec: PeftJobSpec) -> Decision:
        """The current attempt's pods: a failure, missing workers, success, or how far along they are."""
        st, nodes = self.st, spec.resources.nodes
        failures = sorted((p for p in self.current.values() if p.failed), key=lambda p: p.rank)
        if failures:
            return self.worker_failure(failures[0], [])
        missing = [rank for rank in range(nodes) if rank not in self.current]
        if missing:
            return self.missing_workers(missing)
        pods = list(self.current.values())
        created = get_condition(st.conditions, "Created")
        if created is not None and created.status == "False":
            self.condition(
                "Created", "True", "ChildrenCreated", f"attempt {st.attempts}: all {nodes} worker(s) created"
            )
        if all(p.succeeded for p in pods):
            return self.succeed()
        if all(p.running or p.succeeded for p in pods):
            return self.all_running(nodes)
        running = sum(1 for p in pods if p.running or p.succeeded)
        gated = sum(1 for p in pods if p.gated)
        if running or gated or st.phase != "Created":
            # (Freshly created pods leave the creation message: one status write fewer per job.)
            waiting = f"attempt {st.attempts}: waiting for workers, {running}/{nodes} running"
            st.message = waiting + (f", {gated} gated (queued)" if gated else "")
        return self.d

    def missing_workers(self, missing: list[int]) -> Decision:
        """Ranks without a pod: lost while running (a worker failure), or not created yet."""
        st = self.st
        if st.phase == "Running":
            names = [naming.worker_pod_name(self.job.name, st.attempts, r) for r in missing]
            return self.worker_failure(None, names)
        # Not created yet: the previous attempt's pods are still terminating, or the operator
        # stopped between the status write and the pods.
        self.create_pods(st.attempts, tuple(missing))
        if self.waiting_for:
            st.message = self.waiting_message()
        return self.d

    def all_running(self, nodes: int) -> Decision:
        """Every worker runs (or is done): the job is Running, said once."""
        st = self.st
        if st.phase != "Running":
            st.phase = "Running"
            st.message = f"attempt {st.attempts}: all {nodes} worker(s) running"
            self.condition("Running", "True", "WorkersRunning", st.message)
            if any(c.type == "Restarting" for c in st.conditions):
                self.condition("Restarting", "False", "WorkersRunning", st.message)
            self.event("Normal", "Running", st.message)
        return self.d


def decide(job: JobView, observed: Observed, now: datetime.datetime) -> Decision:
    """Pure: what to do next for one job, and its new status."""
    decision = _Decider(job, observed, now).decide()
    if decision.status.phase in FINISHED_PHASES and decision.status.progress is not None:
        decision.status.progress.eta_seconds = None  # nothing is left to estimate
    return decision


def create_refused(job: JobView, now: datetime.datetime, message: str, reason: str = "FailedCreate") -> Decision:
    """Pure: a child cannot be created yet, for a reason that may pass (HTTP 403: a ResourceQuota,
    a missing PriorityClass, an admission policy; or ``PreviousJobLeftovers``: a deleted job's
    child of the same name not collected yet). The attempt stays, the ``Created`` condition and an
    Event say why (once per distinct message), and the reconcile is retried with backoff."""
    decider = _Decider(job, Observed(), now)
    message = _clip(message)
    previous = get_condition(job.status.conditions, "Created")
    decider.st.message = f"attempt {job.status.attempts}: {message} (retrying)"
    decider.condition("Created", "False", reason, message)
    if previous is None or previous.reason != reason or previous.message != message:
        decider.event("Warning", reason, message)
    return decider.d


def name_conflict(job: JobView, now: datetime.datetime, message: str) -> Decision:
    """Pure: a child's name is taken by an object this job does not control. Nothing of the other
    object is touched; the job fails (a rename of the job is the way out)."""
    return _Decider(job, Observed(), now).fail("NameConflict", message)


def reject(job: JobView, observed: Observed, now: datetime.datetime, message: str) -> Decision:
    """Pure: the API server refused an object the spec renders (HTTP 400/422): retrying the same
    objects cannot help, so the job fails as ``InvalidSpec`` instead of retrying forever."""
    return _Decider(job, observed, now).fail("InvalidSpec", message)
