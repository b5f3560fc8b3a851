"""One reconcile of one PeftJob: observe (the watch cache), decide (pure), act (API writes).

Reads come from :class:`~kubepeft_operator.cache.WatchCache`, so a reconcile or a resync costs
no GET; the work queue (:mod:`kubepeft_operator.workqueue`) coalesces triggers, backs off after
failures and resyncs. Writes go status first, children after, so an operator stopped at any
point finds a status that tells it what is still to be created.

How a write the API server refuses is handled:

- 400/422 (the rendered object is invalid): the job fails as ``InvalidSpec``;
- 403 because the namespace is being deleted: nothing more is done for the job;
- any other 403 (quota, admission, a missing PriorityClass): ``FailedCreate`` in status and as an
  Event, then retried with backoff;
- 409 on create: the object exists; it is ours only if its controller owner reference carries
  this job's uid, otherwise the job fails as ``NameConflict``, the other object untouched.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from kubepeft.api.models import GROUP, PLURAL, VERSION, PeftJobSpec
from kubepeft_operator import naming
from kubepeft_operator.cache import WatchCache, controller_job, controller_uid
from kubepeft_operator.kube import JOBS_PATH, KubeApi, KubeError
from kubepeft_operator.lifecycle import (
    CreatePods,
    Decision,
    DeleteJob,
    DeletePods,
    JobView,
    Observed,
    PodView,
    Preflight,
    create_refused,
    decide,
    name_conflict,
    reject,
)
from kubepeft_operator.metrics import Metrics
from kubepeft_operator.preflight import check_claims, check_secrets, claims_to_read, secrets_to_read
from kubepeft_operator.render import JobIdentity, credential_mounts, render_job_children, render_workers
from kubepeft_operator.settings import OperatorSettings
from kubepeft_operator.status import (
    FINISHED_PHASES,
    failed_attempts_from_annotation,
    failed_attempts_to_annotation,
    parse_report,
    rfc3339,
    spec_from_wire,
    status_from_wire,
    status_to_wire,
)
from kubepeft_operator.workqueue import Retry, WorkQueue

logger = logging.getLogger("kubepeft.operator")
Key = tuple[str, str]
EventSink = Callable[[dict[str, Any], str, str, str], None]
INVALID_STATUSES = (400, 422)
"""Answers to a create that say the object itself is wrong: a retry sends the same object."""
SECRET_KEYS_TTL = 60.0
"""How long a Secret's key names, once found, are trusted without asking again."""
TERMINATING_NAMESPACE_PAUSE = 30.0
"""How long the jobs of a namespace being deleted are left alone before trying again."""


def _log_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    logger.info("%s %s/%s %s: %s", type_, body["metadata"].get("namespace"), body["metadata"]["name"], reason, message)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) turning ``old`` into ``new``: nested objects are patched
    key by key, so a key dropped at any depth is sent as null (a merge patch would keep it)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            if nested := status_patch(before, value):
                patch[key] = nested
        elif before != value or key not in old:
            patch[key] = value
    patch.update({k: None for k in old if k not in new})
    return patch


class CreateRefused(Exception):
    """The API server refused a child for a reason that may pass (HTTP 403); retried with backoff."""


class _Refusal(Exception):
    """A child could not be created. ``kind``: ``invalid`` (400/422), ``forbidden`` (403),
    ``terminating`` (403, the namespace is being deleted), ``leftover`` (a deleted job's of the same
    name, not collected yet) or ``conflict`` (someone else's)."""

    def __init__(self, kind: str, message: str, error: KubeError | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.error = kind, message, error


class Reconciler:
    def __init__(
        self,
        kube: KubeApi,
        settings: OperatorSettings,
        metrics: Metrics | None = None,
        events: EventSink = _log_event,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        cache: WatchCache | None = None,
    ) -> None:
        self.kube, self.settings, self.events, self.clock = kube, settings, events, clock
        self.metrics = metrics or Metrics()
        self.cache = cache or WatchCache()
        self.queue: WorkQueue[Key] = WorkQueue(self._work, on_failure=self._failed)
        self._secret_keys: dict[Key, tuple[frozenset[str], float]] = {}
        self._terminating: dict[str, float] = {}
        """Namespaces being deleted (monotonic time seen): nothing can be created there."""

    # --- what the handlers call --------------------------------------------------------------

    async def trigger(self, namespace: str, name: str) -> None:
        await self.queue.trigger((namespace, name))

    def forget(self, key: Key) -> None:
        # The cache keeps the job's pods: they leave it with their own DELETED events (a pod event
        # can come before its job's first event, and must not lose the job's pods).
        self.queue.forget(key)
        self.metrics.set_phase(key, None)

    async def prime_cache(self, namespaces: tuple[str, ...]) -> None:
        """Fill the cache with every PeftJob and every pod and ConfigMap labelled as a job's child
        (one LIST each per watched namespace, or cluster-wide), so no reconcile sees a job
        without its pods."""
        selector = {"labelSelector": naming.LABEL_JOB_NAME}
        for namespace in namespaces or (None,):
            prefix = f"/api/v1/namespaces/{namespace}" if namespace else "/api/v1"
            jobs_path = JOBS_PATH.format(namespace=namespace) if namespace else f"/apis/{GROUP}/{VERSION}/{PLURAL}"
            jobs, pods, config_maps = await asyncio.gather(
                self.kube.request("GET", jobs_path),
                self.kube.request("GET", f"{prefix}/pods", params=selector),
                self.kube.request("GET", f"{prefix}/configmaps", params=selector),
            )
            for job in jobs.get("items") or []:
                self.cache.observe_job("ADDED", job)
            for pod in pods.get("items") or []:
                self.cache.observe_pod("ADDED", pod)
            for config_map in config_maps.get("items") or []:
                self.cache.observe_config_map("ADDED", config_map)
        logger.info("watch cache primed: %s", self.cache.sizes())

    # --- the work ----------------------------------------------------------------------------

    async def _work(self, key: Key) -> None:
        started = time.perf_counter()
        try:
            await self.reconcile(*key)
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    def _failed(self, key: Key, exc: BaseException, delay: float) -> None:
        self.metrics.reconcile_errors.inc()
        logger.warning("reconcile of %s/%s failed (%s); retrying in %.1fs", *key, exc, delay)

    async def reconcile(self, namespace: str, name: str) -> Decision | None:
        key = (namespace, name)
        body = self.cache.job(namespace, name)
        if body is None:
            self.forget(key)
            return None
        if body["metadata"].get("deletionTimestamp"):
            return None  # going away; its children follow by garbage collection
        if self.namespace_terminating(namespace):
            return None  # its namespace is being deleted: the job will be gone soon, do not fight that
        job = self.job_view(body)
        observed = self.observe(job)
        now = self.clock()
        decision = decide(job, observed, now)
        if decision.needs_preflight and job.spec is not None:
            preflight = await self.preflight(namespace, job.spec)
            observed = Observed(pods=observed.pods, report=observed.report, preflight=preflight)
            decision = decide(job, observed, now)
        body = await self.write_status(body, job, decision)
        try:
            await self.perform(body, job, decision)
        except _Refusal as refusal:
            await self.refused(body, job, decision, refusal)
        return decision

    def namespace_terminating(self, namespace: str) -> bool:
        """Known from the namespaces watch, or from a create the server refused for that reason."""
        if self.cache.namespace_terminating(namespace):
            return True
        seen = self._terminating.get(namespace)
        return seen is not None and time.monotonic() - seen < TERMINATING_NAMESPACE_PAUSE

    def job_view(self, body: dict[str, Any]) -> JobView:
        meta = body["metadata"]
        spec, spec_error = spec_from_wire(body.get("spec"))
        return JobView(
            name=meta["name"],
            namespace=meta.get("namespace") or "",
            uid=meta["uid"],
            generation=meta.get("generation"),
            spec=spec,
            spec_error=spec_error,
            status=status_from_wire(body.get("status")),
            failed_attempts=failed_attempts_from_annotation(
                (meta.get("annotations") or {}).get(naming.ANNOTATION_FAILED_ATTEMPTS)
            ),
        )

    def observe(self, job: JobView) -> Observed:
        """The job's pods (those it controls) and the trainer's latest report, from the cache."""
        pods = [
            view
            for pod in self.cache.pods_of(job.namespace, job.name)
            if controller_uid(pod) == job.uid and (view := PodView.from_body(pod)) is not None
        ]
        report = None
        if job.status.attempts > 0 and job.status.phase not in FINISHED_PHASES:
            progress = self.cache.config_map(job.namespace, naming.progress_map_name(job.name))
            if progress is not None and controller_uid(progress) == job.uid:
                report = parse_report(progress.get("data"))
        return Observed(pods=tuple(pods), report=report)

    async def preflight(self, namespace: str, spec: PeftJobSpec) -> Preflight:
        mounts = credential_mounts(spec, self.settings)
        names = sorted(secrets_to_read(mounts))
        keys = await asyncio.gather(*(self.secret_keys(namespace, name) for name in names))
        secrets = check_secrets(mounts, dict(zip(names, keys, strict=True)), namespace)
        if not secrets.ok:
            return secrets
        claims = claims_to_read(spec)
        modes = await asyncio.gather(*(self.kube.claim_access_modes(namespace, claim) for claim in claims))
        return check_claims(spec, dict(zip(claims, modes, strict=True)), namespace)

    async def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """A Secret's key names; a found Secret is trusted for a minute (a burst of jobs naming
        one Secret reads it once). A missing one is asked again every time."""
        now = time.monotonic()
        cached = self._secret_keys.get((namespace, name))
        if cached is not None and now - cached[1] < SECRET_KEYS_TTL:
            return cached[0]
        keys = await self.kube.secret_keys(namespace, name)
        if keys is not None:
            self._secret_keys[(namespace, name)] = (keys, now)
        return keys

    # --- acting ------------------------------------------------------------------------------

    async def write_status(self, body: dict[str, Any], job: JobView, decision: Decision) -> dict[str, Any]:
        """Annotations and status as decided, then the decision's Events; the job as now stored."""
        key = (job.namespace, job.name)
        try:
            if decision.failed_attempts != job.failed_attempts:
                value = failed_attempts_to_annotation(decision.failed_attempts)
                body = await self.kube.patch_job_annotations(
                    job.namespace,
                    job.name,
                    {naming.ANNOTATION_FAILED_ATTEMPTS: value},
                    body["metadata"]["resourceVersion"],
                )
                self.cache.observe_job("MODIFIED", body)
            if patch := status_patch(body.get("status") or {}, status_to_wire(decision.status)):
                body = await self.kube.patch_job_status(
                    job.namespace, job.name, patch, body["metadata"]["resourceVersion"]
                )
                self.cache.observe_job("MODIFIED", body)
                self.queue.wrote(key, body["metadata"]["resourceVersion"])
        except KubeError as exc:
            if exc.status != 409:
                raise
            # The job changed since the cache saw it: read it once, then decide again.
            fresh = await self.kube.get_job(job.namespace, job.name)
            if fresh is not None:
                self.cache.observe_job("MODIFIED", fresh)
            raise Retry() from exc
        for event in decision.events:
            self.events(body, event.type, event.reason, event.message)
        self.metrics.set_phase(key, decision.status.phase)
        if decision.restarted:
            self.metrics.restarts.inc()
        return body

    async def perform(self, body: dict[str, Any], job: JobView, decision: Decision) -> None:
        identity = JobIdentity.from_body(body)
        for action in decision.actions:
            if isinstance(action, CreatePods) and job.spec is not None:
                await self.create_attempt(identity, job.spec, action)
            elif isinstance(action, DeletePods):
                logger.info("deleting %s in %s: %s", ", ".join(action.names), job.namespace, action.why)
                await asyncio.gather(*(self.kube.delete_pod(job.namespace, n) for n in action.names))
                when = rfc3339(self.clock())
                for pod in action.names:
                    self.cache.mark_terminating(job.namespace, pod, when)
            elif isinstance(action, DeleteJob):
                logger.info("deleting PeftJob %s/%s: %s", job.namespace, job.name, action.why)
                await self.kube.delete_job(job.namespace, job.name, job.uid)
        if decision.requeue_after is not None:
            self.queue.requeue((job.namespace, job.name), decision.requeue_after + 0.05)

    async def refused(self, body: dict[str, Any], job: JobView, decision: Decision, refusal: _Refusal) -> None:
        """Record why a child could not be created; retry later where that may pass."""
        if refusal.kind == "terminating":
            logger.info("namespace %s is being deleted: leaving its jobs alone", job.namespace)
            self._terminating[job.namespace] = time.monotonic()
            return
        after = JobView(
            name=job.name,
            namespace=job.namespace,
            uid=job.uid,
            generation=job.generation,
            spec=job.spec,
            spec_error=job.spec_error,
            status=decision.status,
            failed_attempts=decision.failed_attempts,
        )
        now = self.clock()
        if refusal.kind == "invalid":
            follow = reject(after, Observed(), now, refusal.message)
        elif refusal.kind == "conflict":
            follow = name_conflict(after, now, refusal.message)
        elif refusal.kind == "leftover":
            follow = create_refused(after, now, refusal.message, reason="PreviousJobLeftovers")
        else:
            follow = create_refused(after, now, refusal.message)
        await self.write_status(body, after, follow)
        if refusal.kind in ("forbidden", "leftover"):
            raise CreateRefused(refusal.message)

    # --- creating an attempt -----------------------------------------------------------------

    async def create_attempt(self, job: JobIdentity, spec: PeftJobSpec, action: CreatePods) -> None:
        """The attempt's children, then its pods, in three waves (each concurrent inside).

        Order matters on a real server: the RoleBinding is refused while its Role does not exist
        yet (the RBAC escalation check reads the Role), and a pod is refused while its
        ServiceAccount does not. And pods come last, so that an operator killed at any point
        finds, when pods exist, every other child too (it does not look for them again).
        """
        children = render_job_children(job, spec, self.settings)
        pods = [
            p
            for p in render_workers(job, spec, self.settings, action.attempt)
            if int(p["metadata"]["labels"][naming.LABEL_RANK]) in action.ranks
        ]
        await self.ensure(job, [c for c in children if c["kind"] != "RoleBinding"])
        await self.ensure(job, [c for c in children if c["kind"] == "RoleBinding"])
        created = await self.ensure(job, pods)
        if any(created) and len(action.ranks) == spec.resources.nodes:
            self.metrics.attempts.inc()

    async def ensure(self, job: JobIdentity, objects: list[dict[str, Any]]) -> list[bool]:
        """Create each object; one that exists must be this job's. ``True`` where created now."""
        results = await asyncio.gather(*(self._create(job, obj) for obj in objects), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [bool(r) for r in results]

    async def _create(self, job: JobIdentity, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        what = f'{obj["kind"]} "{meta["name"]}"'
        try:
            stored = await self.kube.create(obj)
        except KubeError as exc:
            if exc.namespace_terminating:
                raise _Refusal("terminating", str(exc), exc) from None
            if exc.status in INVALID_STATUSES:
                raise _Refusal(
                    "invalid", f"the API server refused an object this spec renders: {exc.message or exc.reason}", exc
                ) from None
            if exc.status == 403:
                raise _Refusal("forbidden", f"cannot create {what}: {exc.message or exc.reason}", exc) from None
            raise
        if stored is not None:
            if obj["kind"] == "Pod":
                self.cache.observe_pod("ADDED", stored)
            return True
        existing = await self._existing(obj)
        if existing is None:
            return False  # gone again since: the next reconcile creates it
        if controller_uid(existing) == job.uid:
            return False
        if controller_job(existing) == job.name:
            # A child of a deleted PeftJob of the same name: the garbage collector removes it
            # (its owner's uid no longer exists). Wait for that; it is not a conflict.
            raise _Refusal(
                "leftover", f"{what} of an earlier PeftJob named {job.name!r} is still being garbage-collected"
            )
        raise _Refusal(
            "conflict",
            f"{what} already exists and is not controlled by this PeftJob (uid {job.uid}); "
            "it was left untouched: delete it or rename the job",
        )

    async def _existing(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The object of that name that is in the way. Pods and ConfigMaps come from the cache,
        which holds every one labelled as a job's child: one not there is someone else's."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if obj["kind"] == "Pod":
            return self.cache.pod(namespace, name) or _FOREIGN
        if obj["kind"] == "ConfigMap":
            return self.cache.config_map(namespace, name) or _FOREIGN
        return await self.kube.get(obj["apiVersion"], obj["kind"], namespace, name)


_FOREIGN: dict[str, Any] = {"metadata": {"ownerReferences": []}}
"""Stands for an object that exists but is not in the cache: it is not labelled as any job's."""
