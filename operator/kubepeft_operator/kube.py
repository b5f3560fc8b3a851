"""Kubernetes API calls the reconciler makes: aiohttp on kopf's own event loop.

The official client loads the credentials (kubeconfig or in-cluster ServiceAccount, with its
token refresh); the requests go out through aiohttp, as kopf's own do: no thread pool, no model
(de)serialisation, bodies and answers are plain dicts. The Authorization header is built from
the loaded configuration on every request, whichever key the client version stored the token
under (``kubernetes==36.0.0`` stored it where its own ``auth_settings()`` never looked, so its
requests went out anonymous).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import kubernetes.client
import kubernetes.config

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


MAX_THROTTLED_RETRIES = 10


def _retry_after(value: str | None) -> float:
    """Seconds to wait after a 429: the server's ``Retry-After`` (1 s if absent), at most 10."""
    try:
        return min(10.0, max(0.1, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def _error(status: int, reason: str, text: str) -> KubeError:
    """A KubeError from the server's Status answer (reason, message, causes)."""
    message, causes = "", tuple[str, ...]()
    try:
        answer = json.loads(text or "{}")
        reason, message = answer.get("reason", reason), answer.get("message", "")
        causes = tuple(str(c.get("reason", "")) for c in (answer.get("details") or {}).get("causes") or [])
    except (ValueError, AttributeError):
        message = text[:500]
    return KubeError(status, reason, message, causes)


def _collection_path(api_version: str, plural: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def authorization_header(configuration: kubernetes.client.Configuration) -> str | None:
    """``Authorization`` for a request, from a loaded configuration (token refreshed if due)."""
    for key in ("authorization", "BearerToken"):
        if (value := configuration.get_api_key_with_prefix(key)) and isinstance(value, str):
            return value if " " in value.strip() else f"Bearer {value.strip()}"
    if configuration.username or configuration.password:
        return str(configuration.get_basic_auth_token())
    return None


def ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | bool:
    """TLS as the configuration says: its CA, its client certificate, or no verification."""
    if not configuration.host.startswith("https"):
        return False
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class KubeApi:
    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        connections: int = 8,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self._configuration = configuration
        self._connections = connections
        self._on_request = on_request
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on the running loop, at first use
            connector = aiohttp.TCPConnector(ssl=ssl_context(self._configuration), limit=self._connections)
            self._session = aiohttp.ClientSession(
                self._configuration.host.rstrip("/"),
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=30),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},  # audit logs tell us apart
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # --- transport ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; the answer's JSON, or :class:`KubeError` with the server's Status.

        A 429 (the server's priority and fairness limits, or a throttled etcd) is retried here
        after the ``Retry-After`` it names, as client-go does, up to :data:`MAX_THROTTLED_RETRIES`
        times: it is the server pacing a burst, not a failure to back off from.
        """
        data = json.dumps(body) if body is not None else None
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            if self._on_request is not None:
                self._on_request(method)
            headers = {"Content-Type": content_type}
            if auth := authorization_header(self._configuration):
                headers["Authorization"] = auth
            async with self._http().request(method, path, data=data, headers=headers, params=params) as response:
                text = await response.text()
                if response.status == 429 and attempt < MAX_THROTTLED_RETRIES:
                    await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
                    continue
                if response.status >= 400:
                    raise _error(response.status, response.reason or "", text)
            break
        return json.loads(text) if text else {}

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    # --- the calls the operator makes --------------------------------------------------------
    # Reads of jobs, pods and progress come from the watch cache; these are the writes, plus the
    # few reads the cache cannot answer (a job after a conflict, a Secret's keys, the owner of a
    # child that already existed, the access modes of a declared claim).

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

    async def claim_access_modes(self, namespace: str, name: str) -> tuple[str, ...] | None:
        """A PersistentVolumeClaim's access modes (``None`` if absent)."""
        claim = await self._get_or_none(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}")
        if claim is None:
            return None
        return tuple((claim.get("spec") or {}).get("accessModes") or ())

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create and return the stored object; ``None`` if one of that name already exists."""
        meta = obj["metadata"]
        plural = PLURALS[(obj["apiVersion"], obj["kind"])]
        try:
            return await self.request("POST", _collection_path(obj["apiVersion"], plural, meta["namespace"]), body=obj)
        except KubeError as exc:
            if exc.status == 409 and exc.reason == "AlreadyExists":
                return None
            raise

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await self.request(
                "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body={"propagationPolicy": "Background"}
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def delete_job(self, namespace: str, name: str, uid: str) -> None:
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            await self.request("DELETE", JOBS_PATH.format(namespace=namespace) + f"/{name}", body=body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise

    async def patch_job_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Patch ``.status`` (a merge patch), guarded by the resourceVersion we decided on; the new job."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self.request(
            "PATCH",
            JOBS_PATH.format(namespace=namespace) + f"/{name}/status",
            body=body,
            content_type="application/merge-patch+json",
        )

    async def patch_job_annotations(
        self, namespace: str, name: str, annotations: dict[str, str | None], resource_version: str
    ) -> dict[str, Any]:
        body = {"metadata": {"annotations": annotations, "resourceVersion": resource_version}}
        return await self.request(
            "PATCH",
            JOBS_PATH.format(namespace=namespace) + f"/{name}",
            body=body,
            content_type="application/merge-patch+json",
        )
