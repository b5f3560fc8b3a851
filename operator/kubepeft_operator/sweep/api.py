"""The API calls of the sweep controller, over the operator's one transport (:class:`KubeApi`).

Separate calls from the PeftJob reconciler's (that one is the PeftJob controller's), same
connection pool, credentials and request counting.
"""

from __future__ import annotations

from typing import Any

from kubepeft.api.models import GROUP, PLURAL, VERSION
from kubepeft.api.sweep_models import PLURAL as SWEEP_PLURAL
from kubepeft_operator.kube import KubeApi, KubeError
from kubepeft_operator.sweep.logic import LABEL_SWEEP


class SweepApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _path(namespace: str, plural: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


class SweepApi:
    def __init__(self, kube: KubeApi) -> None:
        self._kube = kube

    async def _call(
        self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None, merge: bool = False
    ) -> dict[str, Any]:
        content_type = "application/merge-patch+json" if merge else "application/json"
        try:
            return await self._kube.request(method, path, body, content_type, dict(query or []))
        except KubeError as exc:
            raise SweepApiError(exc.status, exc.message or exc.reason) from None

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", path)
        except SweepApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def get_sweep(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(_path(namespace, SWEEP_PLURAL, name))

    async def list_trials(self, namespace: str, sweep: str) -> list[dict[str, Any]]:
        query = [("labelSelector", f"{LABEL_SWEEP}={sweep}")]
        return list((await self._call("GET", _path(namespace, PLURAL), query=query)).get("items") or [])

    async def get_progress(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")

    async def create_core(self, body: dict[str, Any]) -> bool:
        """Create a core/v1 object (the report's ConfigMap and Pod); False if it exists."""
        plural = {"ConfigMap": "configmaps", "Pod": "pods"}[body["kind"]]
        try:
            await self._call("POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/{plural}", body=body)
            return True
        except SweepApiError as exc:
            if exc.status == 409:
                return False
            raise

    async def create_job(self, body: dict[str, Any]) -> bool:
        try:
            await self._call("POST", _path(body["metadata"]["namespace"], PLURAL), body=body)
            return True
        except SweepApiError as exc:
            if exc.status == 409:
                return False  # deterministic names: it exists already (ownership is checked on observe)
            raise

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        body = {"spec": {"runPolicy": {"suspend": suspend}}}
        await self._call("PATCH", _path(namespace, PLURAL, name), body=body, merge=True)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any], resource_version: str) -> None:
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        await self._call("PATCH", _path(namespace, SWEEP_PLURAL, name) + "/status", body=body, merge=True)
