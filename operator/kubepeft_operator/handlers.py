"""Thin kopf handlers: they only map an event to the PeftJob it concerns and trigger a reconcile.

Built into a registry by :func:`build_registry` (not module-level decorators), so tests can run
several operators, one after another, in one process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import kubernetes.client

from kubepeft.api.models import GROUP, PLURAL, VERSION
from kubepeft_operator import naming
from kubepeft_operator.cache import controller_job
from kubepeft_operator.reconciler import Reconciler
from kubepeft_operator.settings import OperatorSettings
from kubepeft_operator.sweep import handlers as sweep_handlers

PROGRESS_COMPONENT = "progress"


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf's credentials from the same client configuration the reconciler uses."""
    auth = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
    scheme, token = auth.split(" ", 1) if auth and " " in auth else ("Bearer", auth)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme if token else None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        username=configuration.username or None,
        password=configuration.password or None,
    )


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> kopf.OperatorSettings:
    # kopf's own bookkeeping goes to annotations, so .status keeps only our typed fields.
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    kopf_settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
    kopf_settings.posting.level = logging.INFO
    # Watch only our children server-side, not every pod and ConfigMap of the cluster.
    kopf_settings.watching.label_selectors["pods"] = naming.LABEL_JOB_NAME
    kopf_settings.watching.label_selectors["configmaps"] = naming.LABEL_JOB_NAME
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    if settings.max_workers > 0:
        kopf_settings.batching.worker_limit = settings.max_workers
    if settings.peering:
        kopf_settings.peering.name = settings.peering
        kopf_settings.peering.standalone = False
        kopf_settings.peering.mandatory = True
    else:
        kopf_settings.peering.standalone = True
    return kopf_settings


def build_registry(configuration: kubernetes.client.Configuration, settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler of the operator, registered in this order (kopf runs startup handlers in it)."""
    registry = kopf.OperatorRegistry()
    _register_start(registry, configuration, settings)
    sweep_handlers.register(registry)  # PeftSweeps: their own controller, same process
    _register_watches(registry)
    _register_resync(registry, settings)
    return registry


def _register_start(
    registry: kopf.OperatorRegistry, configuration: kubernetes.client.Configuration, settings: OperatorSettings
) -> None:
    """Login, and the watch cache primed before kopf's watches start."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    # The watch cache is primed by one LIST of pods and ConfigMaps at start-up (before kopf starts
    # its watches), then kept by the event handlers below. (kopf's own indexers would give the
    # same start-up guarantee, but their readiness barrier costs O(n^2) in the number of objects
    # listed: 40 s of a core for 3,500 objects, measured.)
    @kopf.on.startup(registry=registry)
    async def prime_cache(memo: kopf.Memo, **_: Any) -> None:
        await _reconciler(memo).prime_cache(settings.watch_namespaces)


def _register_watches(registry: kopf.OperatorRegistry) -> None:
    """PeftJobs and their children (pods, progress ConfigMaps), and namespaces: into the cache, then
    a reconcile of the job concerned."""

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler = _reconciler(memo)
        key = (body.metadata.namespace or "", body.metadata.name or "")
        reconciler.cache.observe_job(type, dict(body))  # kopf never mutates a raw body
        if type == "DELETED":
            reconciler.forget(key)
            return
        reconciler.queue.known.add(key)
        if reconciler.queue.is_own_write(key, body.metadata.get("resourceVersion")):
            return
        await reconciler.trigger(*key)

    @kopf.on.event("", "v1", "pods", labels={naming.LABEL_JOB_NAME: kopf.PRESENT}, registry=registry)
    async def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler = _reconciler(memo)
        reconciler.cache.observe_pod(type, dict(body))  # slimmed: a copy
        if job := controller_job(dict(body)):
            await reconciler.trigger(body.metadata.namespace or "", job)

    @kopf.on.event("", "v1", "configmaps", labels={naming.LABEL_JOB_NAME: kopf.PRESENT}, registry=registry)
    async def config_map_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        reconciler = _reconciler(memo)
        reconciler.cache.observe_config_map(type, dict(body))  # slimmed: a copy
        if type == "DELETED":
            return
        progress = body.metadata.labels.get(naming.LABEL_COMPONENT) == PROGRESS_COMPONENT
        if progress and (job := controller_job(dict(body))):
            await reconciler.trigger(body.metadata.namespace or "", job)

    # Namespaces being deleted: their jobs are left alone (creating children there is refused,
    # and retrying would fight the namespace controller). kopf lists and watches namespaces in
    # both modes anyway, so the chart already grants this.
    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        _reconciler(memo).cache.observe_namespace(type, dict(body))


def _register_resync(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    # A periodic resync of every known job (deadlines, TTLs, missed events), read from the cache.
    # Deliberately not a kopf timer: kopf puts a finalizer on objects with timers, and PeftJobs
    # need none.
    @kopf.on.startup(registry=registry)
    async def start_resync(memo: kopf.Memo, **_: Any) -> None:
        queue = _reconciler(memo).queue
        memo["resync_task"] = asyncio.get_running_loop().create_task(queue.resync_forever(settings.resync_seconds))

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
        if (task := memo.get("resync_task")) is not None:
            task.cancel()


def _reconciler(memo: kopf.Memo) -> Reconciler:
    reconciler: Reconciler = memo["reconciler"]
    return reconciler
