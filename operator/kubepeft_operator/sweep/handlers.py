"""Thin kopf handlers of the sweep controller: map events to the sweep they concern, trigger it.

A trial's progress reaches its PeftJob's status (the PeftJob reconciler copies it), so trial
PeftJob events are enough to follow trials; no ConfigMap watch of its own.
"""

from __future__ import annotations

from typing import Any

import kopf

from kubepeft.api.models import GROUP, PLURAL, VERSION
from kubepeft.api.sweep_models import KIND
from kubepeft.api.sweep_models import PLURAL as SWEEP_PLURAL
from kubepeft_operator.sweep.logic import LABEL_SWEEP

MEMO_KEY = "sweep_reconciler"


def owner_sweep(body: kopf.Body | dict[str, Any]) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return str(ref.get("name"))
    return None


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the sweep handlers to an operator's registry (the reconciler comes from the memo)."""

    @kopf.on.event(GROUP, VERSION, SWEEP_PLURAL, registry=registry)
    async def sweep_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type != "DELETED" and MEMO_KEY in memo:
            await memo[MEMO_KEY].trigger(body.metadata.namespace, body.metadata.name)

    @kopf.on.event(GROUP, VERSION, PLURAL, labels={LABEL_SWEEP: kopf.PRESENT}, registry=registry)
    async def trial_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if MEMO_KEY in memo and (sweep := owner_sweep(body)):
            await memo[MEMO_KEY].trigger(body.metadata.namespace, sweep)

    @kopf.on.event("", "v1", "pods", labels={LABEL_SWEEP: kopf.PRESENT}, registry=registry)
    async def report_pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # The report pod of a finished sweep (trial pods belong to their PeftJobs).
        sweep = (body.metadata.labels or {}).get(LABEL_SWEEP)
        if type != "DELETED" and MEMO_KEY in memo and sweep:
            await memo[MEMO_KEY].trigger(body.metadata.namespace, sweep)
