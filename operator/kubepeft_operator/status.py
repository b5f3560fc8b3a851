"""Status building blocks: metav1 conditions, trainer report -> progress/artifacts, wire forms."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kubepeft.api.models import Artifacts, Condition, PeftJobSpec, PeftJobStatus, Progress
from kubepeft.contract import REPORT_KEY, TrainerReport

FINISHED_PHASES = ("Succeeded", "Failed")


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> list[Condition]:
    """Upsert one condition; ``lastTransitionTime`` moves only when ``status`` changes."""
    result = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            result.append(condition)
            continue
        found = True
        changed = condition.status != status
        result.append(
            condition.model_copy(
                update={
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "observed_generation": generation,
                    "last_transition_time": rfc3339(now) if changed else condition.last_transition_time,
                }
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,  # type: ignore[arg-type]
                reason=reason,
                message=message,
                last_transition_time=rfc3339(now),
                observed_generation=generation,
            )
        )
    return result


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def parse_report(data: Mapping[str, str] | None) -> TrainerReport | None:
    """The trainer's latest report from the progress ConfigMap; a torn or foreign value is ignored."""
    text = (data or {}).get(REPORT_KEY)
    if not text:
        return None
    try:
        return TrainerReport.model_validate_json(text)
    except (ValidationError, ValueError):
        return None


def parse_termination_report(message: str | None) -> TrainerReport | None:
    """A container's termination message as the trainer's final report; ``None`` for plain text."""
    text = (message or "").strip()
    if not text.startswith("{"):
        return None
    return parse_report({REPORT_KEY: text})


def newest_report(*reports: TrainerReport | None) -> TrainerReport | None:
    """The latest of some reports by their time (on a tie, the first given)."""
    found = [r for r in reports if r is not None]
    return max(found, key=lambda r: r.time) if found else None


def progress_from_report(report: TrainerReport) -> Progress:
    """The report's progress as the status's: the same fields, plus what only the status has."""
    p = report.progress
    return Progress(
        **p.model_dump(),
        display=f"{p.step}/{p.total_steps}",  # the printer column
        last_update_time=report.time or None,
    )


def artifacts_from_report(report: TrainerReport) -> Artifacts | None:
    """The report's artifacts (the status's own class), or None when it names none yet."""
    named = report.artifacts.model_dump(exclude_none=True)
    return Artifacts(**named) if named else None


def status_from_wire(raw: Mapping[str, Any] | None) -> PeftJobStatus:
    """The stored status; fields this version does not know (e.g. kopf's) are dropped."""
    known = {k: v for k, v in (raw or {}).items() if k in _STATUS_WIRE_FIELDS}
    try:
        return PeftJobStatus.model_validate(known)
    except ValidationError:
        return PeftJobStatus()


def status_to_wire(status: PeftJobStatus) -> dict[str, Any]:
    return status.to_wire()


def spec_from_wire(raw: Mapping[str, Any] | None) -> tuple[PeftJobSpec | None, str | None]:
    """The spec as the typed model, or a readable error (for clusters without the CRD's CEL)."""
    try:
        return PeftJobSpec.model_validate(dict(raw or {})), None
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            path = ".".join(str(part) for part in error["loc"])
            problems.append(f"spec.{path}: {error['msg']}" if path else f"spec: {error['msg']}")
        return None, "; ".join(problems)


def failed_attempts_from_annotation(value: str | None) -> frozenset[int]:
    attempts = set()
    for part in (value or "").split(","):
        if part.strip().isdigit():
            attempts.add(int(part))
    return frozenset(attempts)


def failed_attempts_to_annotation(attempts: frozenset[int]) -> str:
    return ",".join(str(a) for a in sorted(attempts))


_STATUS_WIRE_FIELDS = {field.alias or name for name, field in PeftJobStatus.model_fields.items()} | set(
    PeftJobStatus.model_fields
)
