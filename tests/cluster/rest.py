"""A small JSON client for the tier: plain dicts in and out, the server's Status on errors.

The tier asserts on the server's exact answers (status codes, ``details.causes`` field paths),
so it talks HTTP through urllib3 with a bearer token instead of through a typed client. The
official ``kubernetes`` client is exercised on purpose in the authentication tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


class KubeError(Exception):
    """A non-2xx answer; ``body`` is the server's Status object."""

    def __init__(self, method: str, path: str, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body
        self.reason = str(body.get("reason", ""))
        self.message = str(body.get("message", ""))
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")

    @property
    def causes(self) -> list[dict[str, Any]]:
        return list((self.body.get("details") or {}).get("causes") or [])


class Kube:
    """Requests as one identity (a bearer token), trusting the API server's CA file."""

    def __init__(self, server: str, token: str, ca_file: Path | str, timeout: float = 30) -> None:
        self.server, self.token = server.rstrip("/"), token
        self._pool = urllib3.PoolManager(
            ca_certs=str(ca_file), cert_reqs="CERT_REQUIRED", timeout=urllib3.Timeout(total=timeout), retries=False
        )
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}

    @classmethod
    def from_kubeconfig(cls, path: Path | str) -> Kube:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        cluster = config["clusters"][0]["cluster"]
        return cls(cluster["server"], config["users"][0]["user"]["token"], cluster["certificate-authority"])

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        query = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (params or {}).items()}
        url = self.server + path
        if query:
            url += "?" + urlencode(query)
        answer = self._pool.request(method, url, body=data, headers=headers)
        payload = json.loads(answer.data) if answer.data else {}
        if answer.status >= 300:
            raise KubeError(method, path, answer.status, payload if isinstance(payload, dict) else {})
        return payload

    # --- paths ----------------------------------------------------------------------------

    def _resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) from discovery, cached per (apiVersion, kind)."""
        key = (api_version, kind)
        if key not in self._resources:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            for resource in self.request("GET", base)["resources"]:
                if "/" not in resource["name"]:
                    self._resources[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
        if key not in self._resources:
            raise LookupError(f"the server does not serve {kind} in {api_version}")
        return self._resources[key]

    def collection(self, api_version: str, kind: str, namespace: str | None = None) -> str:
        plural, namespaced = self._resource(api_version, kind)
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        if namespaced:
            return f"{base}/namespaces/{namespace or 'default'}/{plural}"
        return f"{base}/{plural}"

    def path_of(self, obj: dict[str, Any], namespace: str | None = None) -> str:
        meta = obj.get("metadata") or {}
        return f"{self.collection(obj['apiVersion'], obj['kind'], meta.get('namespace') or namespace)}/{meta['name']}"

    # --- verbs ----------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def items(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.get(path, **params).get("items") or [])

    def watch(self, path: str, timeout_seconds: int = 1, **params: Any) -> list[dict[str, Any]]:
        """The events of one short watch (the server closes it after ``timeout_seconds``)."""
        query = {"watch": "true", "timeoutSeconds": str(timeout_seconds), **{k: str(v) for k, v in params.items()}}
        answer = self._pool.request(
            "GET",
            f"{self.server}{path}?{urlencode(query)}",
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        if answer.status >= 300:
            raise KubeError("WATCH", path, answer.status, json.loads(answer.data) if answer.data else {})
        return [json.loads(line) for line in answer.data.splitlines() if line.strip()]

    def create(self, obj: dict[str, Any], namespace: str | None = None, **params: Any) -> Any:
        ns = (obj.get("metadata") or {}).get("namespace") or namespace
        return self.request("POST", self.collection(obj["apiVersion"], obj["kind"], ns), obj, params=params)

    def patch(self, path: str, body: Any, patch_type: str = "merge", **params: Any) -> Any:
        return self.request("PATCH", path, body, params=params, content_type=PATCH_TYPES[patch_type])

    def apply(self, obj: dict[str, Any], namespace: str | None = None, manager: str = "kubepeft-tests") -> Any:
        """Server-side apply (create or update), as ``kubectl apply --server-side --force-conflicts``."""
        return self.patch(self.path_of(obj, namespace), obj, "apply", fieldManager=manager, force=True)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        return dict(self.apply(body))
