"""The API calls of the sweep controller, on the official client's generic transport.

Separate from the PeftJob reconciler's client on purpose (that one is the PeftJob controller's);
both use the same configuration. Blocking calls run in a thread pool.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from kubepeft.api.models import GROUP, PLURAL, VERSION
from kubepeft.api.sweep_models import PLURAL as SWEEP_PLURAL
from kubepeft_operator.sweep.logic import LABEL_SWEEP


class SweepApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


def _path(namespace: str, plural: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


class SweepApi:
    def __init__(self, configuration: kubernetes.client.Configuration, threads: int = 4) -> None:
        self._client = kubernetes.client.ApiClient(configuration)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kubepeft-sweep")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _sync(
        self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None, merge: bool = False
    ) -> dict[str, Any]:
        content_type = "application/merge-patch+json" if merge else "application/json"
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
            raise SweepApiError(exc.status or 0, exc.reason or "") from None
        return json.loads(response.data) if response.data else {}

    async def _call(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: self._sync(*args, **kwargs))

    async def get_sweep(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", _path(namespace, SWEEP_PLURAL, name))
        except SweepApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_trials(self, namespace: str, sweep: str) -> list[dict[str, Any]]:
        query = [("labelSelector", f"{LABEL_SWEEP}={sweep}")]
        return list((await self._call("GET", _path(namespace, PLURAL), query=query)).get("items") or [])

    async def get_progress(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        except SweepApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        except SweepApiError as exc:
            if exc.status == 404:
                return None
            raise

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
