"""One reconcile of one PeftSweep: read the sweep, its trials and their reports; plan (pure); act.

Status is written first (with the trials it is about to create, guarded by the resourceVersion
read), trials are created after: an operator stopped in between finds them in status and creates
the missing ones under the same deterministic names -- never a duplicate. Reconciles of one sweep
never overlap (a lock per sweep); triggers during a reconcile make it run once more.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from kubepeft.api.sweep_models import PeftSweepSpec, PeftSweepStatus
from kubepeft.contract import REPORT_KEY, TrainerReport
from kubepeft_operator.naming import progress_map_name
from kubepeft_operator.settings import OperatorSettings
from kubepeft_operator.sweep.api import SweepApi, SweepApiError
from kubepeft_operator.sweep.logic import SweepPlan, SweepRef, conditions, plan
from kubepeft_operator.sweep.report_pod import report_name, report_step

logger = logging.getLogger("kubepeft.operator.sweep")
EventSink = Callable[[dict[str, Any], str, str, str], None]


def _log_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    logger.info("%s %s %s: %s", type_, body["metadata"]["name"], reason, message)


def parse_report(config_map: dict[str, Any] | None) -> TrainerReport | None:
    text = ((config_map or {}).get("data") or {}).get(REPORT_KEY)
    if not text:
        return None
    try:
        return TrainerReport.model_validate_json(text)
    except ValueError:
        return None


class SweepReconciler:
    def __init__(
        self,
        api: SweepApi,
        settings: OperatorSettings,
        events: EventSink = _log_event,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api, self.settings, self.events, self.clock = api, settings, events, clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pending: set[tuple[str, str]] = set()

    async def trigger(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            self._pending.add(key)
            return
        async with lock:
            self._pending.add(key)
            while key in self._pending:
                self._pending.discard(key)
                try:
                    await self.reconcile(namespace, name)
                except SweepApiError as exc:
                    if exc.status != 409:  # a conflict means a newer event is on its way
                        logger.warning("sweep %s/%s: %s", namespace, name, exc)

    async def _observe(
        self, namespace: str, name: str, status: PeftSweepStatus
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        jobs = {j["metadata"]["name"]: j for j in await self.api.list_trials(namespace, name)}
        watched = [t.name for t in status.trials if t.name in jobs and t.phase not in ("Succeeded", "Failed", "Pruned")]
        maps = await asyncio.gather(*(self.api.get_progress(namespace, progress_map_name(n)) for n in watched))
        reports = {n: r for n, m in zip(watched, maps, strict=True) if (r := parse_report(m)) is not None}
        return jobs, reports

    async def _report(self, sweep: SweepRef, body: dict[str, Any], result: SweepPlan) -> list[dict[str, Any]]:
        """The report pod's part of the plan (updates ``result`` in place); objects to create."""
        if result.status.phase not in ("Succeeded", "Failed") or result.status.report is not None:
            return []
        try:
            spec = PeftSweepSpec.model_validate(body.get("spec") or {})
        except ValueError:
            return []  # an invalid spec has no trials to report on
        pod = await self.api.get_pod(sweep.namespace, report_name(sweep.name))
        status, objects, events = report_step(sweep, spec, result.status, pod, self.settings)
        result.status = status
        result.events.extend(events)
        return objects

    async def reconcile(self, namespace: str, name: str) -> SweepPlan | None:
        body = await self.api.get_sweep(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # trials go with it (garbage collection through the owner references)
        meta = body["metadata"]
        sweep = SweepRef(namespace, name, meta["uid"], int(meta.get("generation") or 0))
        status = PeftSweepStatus.model_validate(body.get("status") or {})
        jobs, reports = await self._observe(namespace, name, status)
        result = plan(sweep, body.get("spec") or {}, status, jobs, reports, self.clock())
        report_objects = await self._report(sweep, body, result)
        new = result.status
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        wire = new.model_copy(update={"conditions": conditions(new, now, sweep.generation)}).to_wire()
        if wire != (body.get("status") or {}):
            stale = {k: None for k in (body.get("status") or {}) if k not in wire}
            await self.api.patch_status(namespace, name, {**wire, **stale}, meta["resourceVersion"])
        for event in result.events:
            self.events(body, event.type, event.reason, event.message)
        for obj in report_objects:  # the input ConfigMap before the pod that mounts it
            await self.api.create_core(obj)
        await asyncio.gather(*(self.api.create_job(job) for job in result.create))
        await asyncio.gather(*(self.api.set_suspend(namespace, n, True) for n in result.suspend))
        await asyncio.gather(*(self.api.set_suspend(namespace, n, False) for n in result.resume))
        return result
