"""One reconcile of one PeftJob: observe (API reads), decide (pure), act (API writes).

Triggers for the same job coalesce: while a reconcile runs, further triggers only mark it
dirty and it runs once more; so bursts of pod events cost one or two reconciles, and two
reconciles of one job never overlap. Writes go status first, children after, so an operator
stopped at any point finds a status that tells it what is still to be created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubepeft.api.models import PeftJobSpec
from kubepeft_operator import naming
from kubepeft_operator.kube import KubeApi, KubeError
from kubepeft_operator.lifecycle import (
    CreatePods,
    Decision,
    DeleteJob,
    DeletePods,
    JobView,
    Observed,
    PodView,
    Preflight,
    decide,
    reject,
)
from kubepeft_operator.metrics import Metrics
from kubepeft_operator.preflight import check_secrets, secrets_to_read
from kubepeft_operator.render import JobIdentity, credential_mounts, render_job_children, render_workers
from kubepeft_operator.settings import OperatorSettings
from kubepeft_operator.status import (
    FINISHED_PHASES,
    failed_attempts_from_annotation,
    failed_attempts_to_annotation,
    parse_report,
    spec_from_wire,
    status_from_wire,
    status_to_wire,
)

logger = logging.getLogger("kubepeft.operator")
Key = tuple[str, str]
EventSink = Callable[[dict[str, Any], str, str, str], None]
MAX_ERROR_BACKOFF = 60.0
INVALID_STATUSES = (400, 422)
"""Answers to a create that say the object itself is wrong: a retry sends the same object."""


def _log_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    logger.info("%s %s/%s %s: %s", type_, body["metadata"].get("namespace"), body["metadata"]["name"], reason, message)


@dataclass
class _KeyState:
    running: bool = False
    pending: bool = False
    errors: int = 0


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``old`` into ``new`` at the top level (dropped keys become null)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


class Reconciler:
    def __init__(
        self,
        kube: KubeApi,
        settings: OperatorSettings,
        metrics: Metrics | None = None,
        events: EventSink = _log_event,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.kube, self.settings, self.events, self.clock = kube, settings, events, clock
        self.metrics = metrics or Metrics()
        self._states: dict[Key, _KeyState] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._own_versions: dict[Key, str] = {}
        self.known: set[Key] = set()
        """Jobs seen in the watch stream (kopf lists them all at start-up)."""

    # --- triggering --------------------------------------------------------------------------

    def is_own_write(self, key: Key, resource_version: str | None) -> bool:
        """The event shows nothing but our own last status write (skip: we already acted on it)."""
        return resource_version is not None and self._own_versions.get(key) == resource_version

    def forget(self, key: Key) -> None:
        self.known.discard(key)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        self._own_versions.pop(key, None)
        self.metrics.set_phase(key, None)

    async def trigger(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        state = self._states.setdefault(key, _KeyState())
        if state.running:
            state.pending = True
            return
        state.running = True
        try:
            state.pending = True
            while state.pending:
                state.pending = False
                await self._reconcile_guarded(key, state)
        finally:
            state.running = False
            if not state.pending and key not in self._timers and not state.errors:
                self._states.pop(key, None)

    async def resync_forever(self, interval: float) -> None:
        """Reconcile every known job each ``interval`` seconds, spread over the interval."""
        while True:
            keys = sorted(self.known)
            if not keys:
                await asyncio.sleep(interval)
                continue
            for key in keys:
                if key in self.known:
                    asyncio.get_running_loop().create_task(self.trigger(*key))
                await asyncio.sleep(interval / len(keys))

    def requeue(self, key: Key, delay: float) -> None:
        if (timer := self._timers.get(key)) is not None:
            if timer.when() <= asyncio.get_running_loop().time() + delay:
                return
            timer.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            asyncio.get_running_loop().create_task(self.trigger(*key))

        self._timers[key] = asyncio.get_running_loop().call_later(max(0.0, delay), fire)

    async def _reconcile_guarded(self, key: Key, state: _KeyState) -> None:
        started = time.perf_counter()
        try:
            await self.reconcile(*key)
            state.errors = 0
        except KubeError as exc:
            if exc.status == 409:  # the job changed under us: read again and decide again
                state.pending = True
                return
            self._failed(key, state, exc)
        except Exception as exc:  # a reconcile must never kill the operator; retry with backoff
            self._failed(key, state, exc)
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    def _failed(self, key: Key, state: _KeyState, exc: Exception) -> None:
        state.errors += 1
        self.metrics.reconcile_errors.inc()
        delay = min(MAX_ERROR_BACKOFF, 0.5 * 2 ** (state.errors - 1))
        logger.warning("reconcile of %s/%s failed (%s); retrying in %.1fs", *key, exc, delay)
        self.requeue(key, delay)

    # --- one reconcile -----------------------------------------------------------------------

    async def preflight(self, namespace: str, spec: PeftJobSpec) -> Preflight:
        mounts = credential_mounts(spec, self.settings)
        names = sorted(secrets_to_read(mounts))
        keys = await asyncio.gather(*(self.kube.secret_keys(namespace, name) for name in names))
        return check_secrets(mounts, dict(zip(names, keys, strict=True)), namespace)

    async def reconcile(self, namespace: str, name: str) -> Decision | None:
        key = (namespace, name)
        body = await self.kube.get_job(namespace, name)
        if body is None:
            self.forget(key)
            return None
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None  # going away; its children follow by garbage collection
        spec, spec_error = spec_from_wire(body.get("spec"))
        status = status_from_wire(body.get("status"))
        job = JobView(
            name=name,
            namespace=namespace,
            uid=meta["uid"],
            generation=meta.get("generation"),
            spec=spec,
            spec_error=spec_error,
            status=status,
            failed_attempts=failed_attempts_from_annotation(
                (meta.get("annotations") or {}).get(naming.ANNOTATION_FAILED_ATTEMPTS)
            ),
        )
        pods: list[PodView] = []
        report = None
        if status.attempts > 0:
            # Pods first, then the report: a pod seen Succeeded had written its final report.
            for pod in await self.kube.list_job_pods(namespace, name):
                owners = pod["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == job.uid for ref in owners) and (view := PodView.from_body(pod)):
                    pods.append(view)
            if status.phase not in FINISHED_PHASES:
                progress = await self.kube.get_config_map(namespace, naming.progress_map_name(name))
                report = parse_report((progress or {}).get("data"))
        now = self.clock()
        observed = Observed(pods=tuple(pods), report=report)
        decision = decide(job, observed, now)
        if decision.needs_preflight and spec is not None:
            observed = Observed(pods=tuple(pods), report=report, preflight=await self.preflight(namespace, spec))
            decision = decide(job, observed, now)
        await self.act(body, job, spec, decision)
        return decision

    async def act(self, body: dict[str, Any], job: JobView, spec: PeftJobSpec | None, decision: Decision) -> None:
        key = (job.namespace, job.name)
        version = body["metadata"]["resourceVersion"]
        if decision.failed_attempts != job.failed_attempts:
            value = failed_attempts_to_annotation(decision.failed_attempts)
            version = await self.kube.patch_job_annotations(
                job.namespace, job.name, {naming.ANNOTATION_FAILED_ATTEMPTS: value}
            )
        old = body.get("status") or {}
        new = status_to_wire(decision.status)
        if patch := status_patch(old, new):
            version = await self.kube.patch_job_status(job.namespace, job.name, patch, version)
            self._own_versions[key] = version
        for event in decision.events:
            self.events(body, event.type, event.reason, event.message)
        identity = JobIdentity.from_body(body)
        for action in decision.actions:
            if isinstance(action, CreatePods) and spec is not None:
                try:
                    await self._create_pods(identity, spec, action)
                except KubeError as exc:
                    if exc.status not in INVALID_STATUSES:
                        raise
                    await self._reject(body, job, decision, version, exc)
                    return
            elif isinstance(action, DeletePods):
                logger.info("deleting %s in %s: %s", ", ".join(action.names), job.namespace, action.why)
                await asyncio.gather(*(self.kube.delete_pod(job.namespace, n) for n in action.names))
            elif isinstance(action, DeleteJob):
                logger.info("deleting PeftJob %s/%s: %s", job.namespace, job.name, action.why)
                await self.kube.delete_job(job.namespace, job.name, job.uid)
        if decision.restarted:
            self.metrics.restarts.inc()
        self.metrics.set_phase(key, decision.status.phase)
        if decision.requeue_after is not None:
            self.requeue(key, decision.requeue_after + 0.05)

    async def _reject(
        self, body: dict[str, Any], job: JobView, decision: Decision, version: str, exc: KubeError
    ) -> None:
        """Fail the job whose rendered children the API server refused (e.g. an invalid affinity).

        Pods of the attempt created before the refusal are deleted by the next reconcile (their
        creation triggers one), as for any finished job.
        """
        now_job = dataclasses.replace(job, status=decision.status, failed_attempts=decision.failed_attempts)
        message = f"the API server refused an object this spec renders: {exc.message or exc.reason}"
        rejection = reject(now_job, Observed(), self.clock(), message)
        current = {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
        current["status"] = status_to_wire(decision.status)
        await self.act(current, now_job, None, rejection)

    async def _create_pods(self, job: JobIdentity, spec: PeftJobSpec, action: CreatePods) -> None:
        # The pods need the ConfigMap, the ServiceAccount and the Service; create those first,
        # concurrently (idempotent: an existing child is left as it is).
        await asyncio.gather(*(self.kube.create(child) for child in render_job_children(job, spec, self.settings)))
        pods = [
            p
            for p in render_workers(job, spec, self.settings, action.attempt)
            if int(p["metadata"]["labels"][naming.LABEL_RANK]) in action.ranks
        ]
        created = await asyncio.gather(*(self.kube.create(pod) for pod in pods))
        if any(created) and len(action.ranks) == spec.resources.nodes:
            self.metrics.attempts.inc()
