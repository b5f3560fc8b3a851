"""A small Kubernetes API server for tests (aiohttp), served from its own thread.

Why our own and not kmock's ``KubernetesEmulator``: measured here, the plain emulator stamps
no uid/resourceVersion/generation, replays everything on every watch, ignores selectors and
``timeoutSeconds``, has no PUT, no separate status subresource, no garbage collection, answers
500 to a failed JSON-patch test, and reports core discovery as "/v1". Closing those gaps meant
replacing most of its request handling, so a ~600-line app whose every promise is pinned by
``tests/harness/test_apiserver.py`` was the smaller thing to own.

What it does: discovery (core "v1", named groups, our CRD), create/get/list/PUT/merge-
and JSON-patch/delete/deletecollection, the status subresource kept apart from the main object
(spec changes bump ``generation``, status writes do not), optimistic concurrency (409 on a
stale resourceVersion, 422 on a failed JSON-patch test), label and field selectors, watches
that honour ``resourceVersion`` (exactly the later events; 410 when too old),
``timeoutSeconds``, bookmarks and ``sendInitialEvents``, and ownerReference garbage collection
(background, foreground, orphan, dangling owners). PeftJobs are served from the generated CRD:
unknown fields are pruned, the rest defaulted and checked by ``kubepeft.api.validate`` (the
project's one validator: schema, CEL rules, and on updates the transition rules).

Not emulated (each covered by the control-plane tier, ``tests/cluster``): authentication/RBAC,
admission, defaulting of built-in kinds (beyond ``status.phase=Pending``; the first object in a
namespace creates the Namespace), graceful pod deletion, strategic merge of lists (treated as a
merge patch).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from kubepeft_testing.resources import DEFAULT_RESOURCES, ResourceType
from kubepeft_testing.schema import PEFTJOB_CRD, PEFTSWEEP_CRD, load_crd
from kubepeft_testing.selectors import SelectorError, parse_selector
from kubepeft_testing.store import ApiError, Obj, Store, Watch

T = TypeVar("T")
KUBE_VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0",
    "gitCommit": "harness",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}
DEFAULT_WATCH_TIMEOUT = 1800.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


class ApiServerApp:
    """The HTTP layer over :class:`Store`."""

    def __init__(self, store: Store, bookmark_interval: float = 30.0) -> None:
        self.store = store
        self.bookmark_interval = bookmark_interval
        self.watch_tasks: set[asyncio.Task[Any]] = set()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    # --- discovery ---------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[ResourceType]]:
        groups: dict[str, list[ResourceType]] = {}
        for rtype in self.store.resources.values():
            groups.setdefault(rtype.group, []).append(rtype)
        return groups

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = []
        for r in self.store.resources.values():
            if (r.group, r.version) != (group, version):
                continue
            resources.append(
                {
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(r.verbs),
                    "shortNames": list(r.short_names),
                    "categories": list(r.categories),
                }
            )
            if r.status_subresource:
                resources.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({group}/{version})")
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}

    def _discovery(self, parts: list[str]) -> Obj | None:
        if parts == ["version"]:
            return KUBE_VERSION
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return {"status": "ok"}
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if parts == ["apis"]:
            groups = []
            for group, rtypes in sorted(self._groups().items()):
                if not group:
                    continue
                versions = sorted({r.version for r in rtypes})
                entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
                groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        if len(parts) == 3 and parts[0] == "apis":
            return self._resource_list(parts[1], parts[2])
        return None

    # --- routing -----------------------------------------------------------------------------

    def _route(self, parts: list[str]) -> tuple[ResourceType, str | None, str | None, str | None]:
        """``(resource type, namespace, name, subresource)`` for a resource URL."""
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in self.store.resources:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = self.store.resource(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and rtype.status_subresource):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
        if namespace is not None and not rtype.namespaced:
            raise ApiError(404, "NotFound", f"{rtype.plural} is not namespaced")
        return rtype, namespace, name, sub

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        verb = request.method
        self.store.requests[verb] = self.store.requests.get(verb, 0) + 1
        try:
            if verb == "GET" and (found := self._discovery(parts)) is not None:
                return _json(found)
            rtype, namespace, name, sub = self._route(parts)
            self._audit(request, rtype, name, sub)
            if rtype.namespaced and name is not None and namespace is None:
                raise ApiError(404, "NotFound", "a namespaced object needs a namespace in its URL")
            if verb == "GET" and name is None:
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, rtype, namespace)
                return self._list(request, rtype, namespace)
            if verb == "GET":
                assert name is not None
                return _json(self.store.get(rtype, namespace, name))
            body = await self._body(request)
            if verb == "POST" and name is None:
                return _json(self.store.create(rtype, namespace, body), 201)
            if verb == "PUT" and name is not None:
                return _json(self.store.replace(rtype, namespace, name, body, sub))
            if verb == "PATCH" and name is not None:
                ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
                return _json(self.store.patch(rtype, namespace, name, body, ctype, sub))
            if verb == "DELETE":
                options = body if isinstance(body, dict) else {}
                propagation = request.query.get("propagationPolicy") or options.get("propagationPolicy")
                if name is not None:
                    gone = self.store.delete(rtype, namespace, name, propagation, options.get("preconditions"))
                    return _json(gone)
                items = self.store.list(rtype, namespace, *self._selectors(request))
                for item in items:
                    meta = item["metadata"]
                    self.store.delete(rtype, meta.get("namespace"), meta["name"], propagation)
                return _json(
                    {
                        "kind": f"{rtype.kind}List",
                        "apiVersion": rtype.api_version,
                        "metadata": {"resourceVersion": str(self.store.rv)},
                        "items": items,
                    }
                )
            raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported here")
        except ApiError as exc:
            return _error(exc)

    def _audit(self, request: web.Request, rtype: ResourceType, name: str | None, sub: str | None) -> None:
        """Record the request as RBAC sees it (the verb it authorizes, not the HTTP method)."""
        method = request.method
        if method == "GET":
            verb = "get" if name else ("watch" if request.query.get("watch") in ("true", "1") else "list")
        elif method == "DELETE":
            verb = "delete" if name else "deletecollection"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        resource = f"{rtype.plural}/{sub}" if sub else rtype.plural
        self.store.audit.append((request.headers.get("User-Agent", ""), verb, rtype.group, resource))

    async def _body(self, request: web.Request) -> Any:
        text = await request.text()
        if not text:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON: {exc}") from exc

    @staticmethod
    def _selectors(request: web.Request) -> tuple[Any, Any]:
        try:
            return (
                parse_selector(request.query.get("labelSelector")),
                parse_selector(request.query.get("fieldSelector")),
            )
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc

    def _list(self, request: web.Request, rtype: ResourceType, namespace: str | None) -> web.Response:
        items = self.store.list(rtype, namespace, *self._selectors(request))
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        limit = int(request.query.get("limit") or 0)
        offset = 0
        if token := request.query.get("continue"):
            rv_text, _, offset_text = base64.b64decode(token).decode().partition(":")
            offset, meta["resourceVersion"] = int(offset_text), rv_text
        if limit:
            if offset + limit < len(items):
                meta["continue"] = base64.b64encode(f"{meta['resourceVersion']}:{offset + limit}".encode()).decode()
                meta["remainingItemCount"] = len(items) - offset - limit
            items = items[offset : offset + limit]
        else:
            items = items[offset:]
        return _json({"kind": f"{rtype.kind}List", "apiVersion": rtype.api_version, "metadata": meta, "items": items})

    async def _watch(self, request: web.Request, rtype: ResourceType, namespace: str | None) -> web.StreamResponse:
        labels, fields = self._selectors(request)
        queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        watch = Watch(rtype.key, namespace, labels, fields, lambda t, o: queue.put_nowait((t, o)))
        since = request.query.get("resourceVersion") or ""
        initial_end = request.query.get("sendInitialEvents") == "true"
        expired: Obj | None = None
        # Snapshot and subscription happen in one step of the loop: nothing is lost or repeated.
        if since in ("", "0"):
            for obj in self.store.list(rtype, namespace, labels, fields):
                queue.put_nowait(("ADDED", obj))
        else:
            try:
                backlog = self.store.events_since(int(since))
            except ValueError:
                return _error(ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}"))
            except ApiError as exc:
                backlog, expired = [], exc.status()  # answered inside the stream, as Kubernetes does
            for event in backlog:
                watch.offer(event)
        if initial_end:
            queue.put_nowait(
                (
                    "BOOKMARK",
                    {
                        "kind": rtype.kind,
                        "apiVersion": rtype.api_version,
                        "metadata": {
                            "resourceVersion": str(self.store.rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
            )
        self.store.watches.add(watch)
        task = asyncio.current_task()
        assert task is not None
        self.watch_tasks.add(task)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        timeout = float(request.query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await response.prepare(request)
            if expired is not None:
                await response.write((json.dumps({"type": "ERROR", "object": expired}) + "\n").encode())
                return response
            while (left := deadline - loop.time()) > 0:
                try:
                    type_, obj = await asyncio.wait_for(queue.get(), min(left, self.bookmark_interval))
                except TimeoutError:
                    if not bookmarks or deadline - loop.time() <= 0:
                        continue
                    type_, obj = (
                        "BOOKMARK",
                        {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": {"resourceVersion": str(self.store.rv)},
                        },
                    )
                await response.write((json.dumps({"type": type_, "object": obj}) + "\n").encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watches.discard(watch)
            self.watch_tasks.discard(task)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response


class ApiServer:
    """The app on 127.0.0.1:<free port> in its own thread and loop; thread-safe helpers for tests."""

    def __init__(
        self,
        resources: list[ResourceType] | None = None,
        bookmark_interval: float = 30.0,
        history: int = 100_000,
        use_crd: bool = True,
        cel: bool = True,
    ) -> None:
        """``use_crd``: serve PeftJobs and PeftSweeps from the generated CRDs (schema pruning + validation).
        ``cel=False``: check PeftJobs against the schema only, without the CEL rules (cel-python costs
        ~20 ms an object; a benchmark of the operator turns it off, the tests keep it)."""
        resources = list(resources or DEFAULT_RESOURCES)
        schemas = {}
        for crd_file in (PEFTJOB_CRD, PEFTSWEEP_CRD) if use_crd else ():
            if not crd_file.exists():
                continue
            rtype, schema = load_crd(crd_file)
            resources = [r for r in resources if r.key != rtype.key] + [rtype]
            schemas[rtype.key] = schema
        self.store = Store(resources, history=history, schemas=schemas, cel=cel)
        for namespace in ("default", "kube-system"):
            self.store._ensure_namespace(namespace)
        self._app = ApiServerApp(self.store, bookmark_interval)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-apiserver", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> ApiServer:
        self._thread.start()
        self.url = self._call_async(self._start())
        return self

    async def _start(self) -> str:
        self._runner = web.AppRunner(self._app.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{port}"

    def drop_watches(self) -> int:
        """End every open watch stream, as an API server restart would; returns how many."""

        async def drop() -> int:
            tasks = list(self._app.watch_tasks)
            for task in tasks:
                task.cancel()
            return len(tasks)

        return int(self._call_async(drop()))

    def stop(self) -> None:
        if self._runner is not None:
            self.drop_watches()
            with contextlib.suppress(Exception):
                self._call_async(self._runner.cleanup(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- thread-safe access to the store (runs on the server's loop) -------------------------

    def _call_async(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def run() -> T:
            return fn(*args, **kwargs)

        return self._call_async(run())  # type: ignore[no-any-return]

    def rtype(self, plural: str, group: str | None = None) -> ResourceType:
        matches = [
            r for r in self.store.resources.values() if r.plural == plural and (group is None or r.group == group)
        ]
        if not matches:
            raise KeyError(plural)
        matches.sort(key=lambda r: r.group != "")  # core first
        return matches[0]

    def create(self, plural: str, namespace: str | None, body: Obj, group: str | None = None) -> Obj:
        return self.call(self.store.create, self.rtype(plural, group), namespace, body)

    def get(self, plural: str, namespace: str | None, name: str, group: str | None = None) -> Obj | None:
        def get_or_none() -> Obj | None:
            try:
                return self.store.get(self.rtype(plural, group), namespace, name)
            except ApiError:
                return None

        return self.call(get_or_none)

    def list(self, plural: str, namespace: str | None = None, labels: str = "", group: str | None = None) -> list[Obj]:
        return self.call(self.store.list, self.rtype(plural, group), namespace, parse_selector(labels))

    def patch_status(self, plural: str, namespace: str | None, name: str, status: Obj, group: str | None = None) -> Obj:
        return self.call(
            self.store.patch,
            self.rtype(plural, group),
            namespace,
            name,
            {"status": status},
            "application/merge-patch+json",
            "status",
        )

    def delete(
        self, plural: str, namespace: str | None, name: str, group: str | None = None, propagation: str | None = None
    ) -> Obj:
        return self.call(self.store.delete, self.rtype(plural, group), namespace, name, propagation)

    def kubeconfig(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "harness", "cluster": {"server": self.url}}],
            "users": [{"name": "harness", "user": {"token": "harness-token"}}],
            "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": "harness"}}],
            "current-context": "harness",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig()))
        return path
