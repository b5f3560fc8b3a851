"""Kubernetes API calls the reconciler makes (the official client, off the event loop).

Bodies and answers are plain dicts: no model (de)serialisation, which is most of the client's
cost. Every call runs in a small thread pool so the kopf loop never blocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from kubepeft.api.models import GROUP, PLURAL, VERSION

PLURALS = {
    ("v1", "Pod"): "pods",
    ("v1", "Service"): "services",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Secret"): "secrets",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
}
USER_AGENT = "kubepeft-operator"
JOBS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        self.causes = causes
        """The ``reason`` of each ``details.causes`` entry of the server's Status."""

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing can be created in it any more."""
        return self.status == 403 and (
            "NamespaceTerminating" in self.causes or "because it is being terminated" in self.message
        )


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster service account when running in a pod, else the kubeconfig (``$KUBECONFIG``)."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def _collection_path(api_version: str, plural: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


class KubeApi:
    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        threads: int = 8,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._on_request = on_request
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, threads)
        self._client = kubernetes.client.ApiClient(configuration)
        self._client.user_agent = USER_AGENT  # audit logs tell the operator's requests apart
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubepeft-kube")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # --- transport ---------------------------------------------------------------------------

    def _call_sync(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        try:
            response = self._client.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=30,
            )
        except ApiException as exc:
            reason, message, causes = exc.reason or "", "", tuple[str, ...]()
            try:
                status = json.loads(exc.body or "{}")
                reason, message = status.get("reason", reason), status.get("message", "")
                causes = tuple(str(c.get("reason", "")) for c in (status.get("details") or {}).get("causes") or [])
            except (ValueError, AttributeError):
                pass
            raise KubeError(exc.status or 0, reason, message, causes) from None
        data = response.data
        return json.loads(data) if data else {}

    async def _call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self._on_request is not None:
            self._on_request(args[0])
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._call_sync(*args, **kwargs))

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    # --- the calls the operator makes --------------------------------------------------------
    # Reads of jobs, pods and progress come from the watch cache; these are the writes, plus the
    # few reads the cache cannot answer (a job after a conflict, a Secret's keys, the owner of a
    # child that already existed).

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(JOBS_PATH.format(namespace=namespace) + f"/{name}")

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        path = _collection_path(api_version, PLURALS[(api_version, kind)], namespace) + f"/{name}"
        return await self._get_or_none(path)

    async def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """Key names of a Secret (``None`` if absent). Values are read by the client but never kept."""
        secret = await self._get_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if secret is None:
            return None
        return frozenset(secret.get("data") or {}) | frozenset(secret.get("stringData") or {})

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create and return the stored object; ``None`` if one of that name already exists."""
        meta = obj["metadata"]
        plural = PLURALS[(obj["apiVersion"], obj["kind"])]
        try:
            return await self._call("POST", _collection_path(obj["apiVersion"], plural, meta["namespace"]), body=obj)
        except KubeError as exc:
            if exc.status == 409 and exc.reason == "AlreadyExists":
                return None
            raise

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body={"propagationPolicy": "Background"}
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def delete_job(self, namespace: str, name: str, uid: str) -> None:
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            await self._call("DELETE", JOBS_PATH.format(namespace=namespace) + f"/{name}", body=body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    async def patch_job_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Patch ``.status`` (a merge patch), guarded by the resourceVersion we decided on; the new job."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self._call(
            "PATCH",
            JOBS_PATH.format(namespace=namespace) + f"/{name}/status",
            body=body,
            content_type="application/merge-patch+json",
        )

    async def patch_job_annotations(
        self, namespace: str, name: str, annotations: dict[str, str | None], resource_version: str
    ) -> dict[str, Any]:
        body = {"metadata": {"annotations": annotations, "resourceVersion": resource_version}}
        return await self._call(
            "PATCH",
            JOBS_PATH.format(namespace=namespace) + f"/{name}",
            body=body,
            content_type="application/merge-patch+json",
        )
