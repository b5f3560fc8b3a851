"""The object store behind the test API server: the semantics, no HTTP.

Everything runs on the server's one event loop, so each operation is atomic: a write, its
resourceVersion and its watch event happen in one step, and a watch that starts at a
resourceVersion gets exactly the events after it (no replay, no loss).
"""

from __future__ import annotations

import builtins
import copy
import datetime
import itertools
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubepeft.api import models
from kubepeft_testing.patching import PatchConflict, PatchInvalid, json_patch, merge_patch
from kubepeft_testing.resources import DEFAULT_RESOURCES, ResourceType, label_errors, name_errors, pod_errors
from kubepeft_testing.schema import peftjob_errors, prune, validation_errors
from kubepeft_testing.selectors import Requirement, fields_match, labels_match

Obj = dict[str, Any]
ObjKey = tuple[tuple[str, str, str], str, str]  # (resource key, namespace, name)


class ApiError(Exception):
    """An API error answered as a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.kind, self.name = code, reason, message, kind, name

    def status(self) -> Obj:
        details: Obj = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": details,
            "code": self.code,
        }


@dataclass
class WatchEvent:
    rv: int
    rtype: tuple[str, str, str]
    type: str  # ADDED / MODIFIED / DELETED
    obj: Obj
    old: Obj | None


@dataclass(eq=False)
class Watch:
    rtype: tuple[str, str, str]
    namespace: str | None
    labels: tuple[Requirement, ...]
    fields: tuple[Requirement, ...]
    deliver: Callable[[str, Obj], None]

    def _matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def offer(self, event: WatchEvent) -> None:
        if event.rtype != self.rtype:
            return
        now_matches = self._matches(event.obj)
        was_matching = self._matches(event.old)
        if event.type == "MODIFIED":
            # As in Kubernetes: an object entering the selection is ADDED, one leaving it DELETED.
            if now_matches and not was_matching:
                self.deliver("ADDED", event.obj)
            elif was_matching and not now_matches:
                self.deliver("DELETED", event.obj)
            elif now_matches:
                self.deliver("MODIFIED", event.obj)
        elif now_matches:
            self.deliver(event.type, event.obj)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _essence(obj: Obj) -> Obj:
    """What counts for ``metadata.generation``: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    def __init__(
        self,
        resources: Iterable[ResourceType] = DEFAULT_RESOURCES,
        history: int = 100_000,
        schemas: dict[tuple[str, str, str], Obj] | None = None,
        cel: bool = True,
    ) -> None:
        self.resources: dict[tuple[str, str, str], ResourceType] = {r.key: r for r in resources}
        self.cel = cel
        """Evaluate PeftJob CEL rules (through kubepeft.api.validate) on creates and spec updates."""
        self.schemas = dict(schemas or {})
        """openAPIV3Schema per custom resource: unknown fields are pruned, the rest validated."""
        self.objects: dict[ObjKey, Obj] = {}
        self._by_type: dict[tuple[str, str, str], set[ObjKey]] = {}
        self._uids: dict[str, ObjKey] = {}
        self.rv = 0
        self.history: deque[WatchEvent] = deque(maxlen=history)
        self.watches: set[Watch] = set()
        self._uid_source = (str(uuid.UUID(int=i, version=4)) for i in itertools.count(1))
        self.requests: dict[str, int] = {}
        self.audit: list[tuple[str, str, str, str]] = []
        """Each resource request: (User-Agent, RBAC verb, API group, resource[/subresource])."""

    # --- lookup ------------------------------------------------------------------------------

    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        try:
            return self.resources[(group, version, plural)]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})") from None

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> ObjKey:
        return (rtype.key, (namespace or "") if rtype.namespaced else "", name)

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.objects.get(self._key(rtype, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found', kind=rtype.plural, name=name)
        return copy.deepcopy(obj)

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        labels: tuple[Requirement, ...] = (),
        fields: tuple[Requirement, ...] = (),
    ) -> builtins.list[Obj]:
        items = []
        for key in sorted(self._by_type.get(rtype.key, ())):
            obj = self.objects[key]
            if namespace is not None and rtype.namespaced and key[1] != namespace:
                continue
            if labels_match(labels, obj) and fields_match(fields, obj):
                items.append(copy.deepcopy(obj))
        return items

    # --- events ------------------------------------------------------------------------------

    def _emit(self, rtype: ResourceType, type_: str, obj: Obj, old: Obj | None) -> None:
        event = WatchEvent(self.rv, rtype.key, type_, copy.deepcopy(obj), old)
        self.history.append(event)
        for watch in list(self.watches):
            watch.offer(event)

    def events_since(self, rv: int) -> builtins.list[WatchEvent]:
        """Events after ``rv``; raises 410 Gone when the history no longer reaches back that far."""
        if self.history and rv < self.history[0].rv - 1:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.history[0].rv - 1})")
        return [e for e in self.history if e.rv > rv]

    def _bump(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    # --- writes ------------------------------------------------------------------------------

    def _validate(self, rtype: ResourceType, obj: Obj, old: Obj | None = None, status_only: bool = False) -> None:
        if obj.get("kind") not in (None, rtype.kind) or obj.get("apiVersion") not in (None, rtype.api_version):
            raise ApiError(
                400, "BadRequest", f"the object is a {obj.get('apiVersion')}/{obj.get('kind')}, not {rtype.kind}"
            )
        meta = obj["metadata"]
        errors = name_errors(rtype.name_rule, meta.get("name", ""))
        if (schema := self.schemas.get(rtype.key)) is not None:
            for key in [k for k in obj if k not in ("apiVersion", "kind", "metadata")]:
                pruned = prune(obj[key], schema.get("properties", {}).get(key, {"type": "object", "properties": {}}))
                obj[key] = pruned
            if rtype.group == models.GROUP and rtype.kind == models.KIND:
                errors += peftjob_errors(obj, old, cel=self.cel and not status_only, schema=schema)
            else:
                errors += validation_errors(obj, schema)
        errors += label_errors(meta.get("labels") or {})
        if rtype.kind == "Pod" and rtype.group == "":
            errors += pod_errors(obj)
        if errors:
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind} "{meta.get("name")}" is invalid: ' + "; ".join(errors),
                kind=rtype.kind,
                name=meta.get("name", ""),
            )

    def create(self, rtype: ResourceType, namespace: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            if not namespace:
                raise ApiError(400, "BadRequest", "a namespace is required")
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400, "BadRequest", "the namespace of the provided object does not match the namespace sent"
                )
            meta["namespace"] = namespace
            self._ensure_namespace(namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "metadata.name: Required value", kind=rtype.kind)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        self._validate(rtype, obj)
        key = self._key(rtype, namespace, meta["name"])
        if key in self.objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.plural} "{meta["name"]}" already exists',
                kind=rtype.plural,
                name=meta["name"],
            )
        for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(server_field, None)
        meta["uid"] = next(self._uid_source)
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if rtype.status_subresource:
            # The status of a new object is the server's, never the client's.
            obj["status"] = {"phase": "Pending"} if rtype.kind == "Pod" and rtype.group == "" else {}
        self._bump(obj)
        self.objects[key] = obj
        self._by_type.setdefault(rtype.key, set()).add(key)
        self._uids[meta["uid"]] = key
        self._emit(rtype, "ADDED", obj, None)
        refs = meta.get("ownerReferences") or []
        if refs and not any(r.get("uid") in self._uids for r in refs):
            # The garbage collector removes objects whose owners are all gone (a create racing a delete).
            self.delete(rtype, namespace, meta["name"], "Background")
        return copy.deepcopy(obj)

    def _ensure_namespace(self, namespace: str) -> None:
        """A harness convenience: the first object in a namespace creates it (a real server answers 404)."""
        ns_type = self.resources.get(("", "v1", "namespaces"))
        if ns_type is not None and (ns_type.key, "", namespace) not in self.objects:
            self.create(ns_type, None, {"metadata": {"name": namespace}})

    def _check_preconditions(self, rtype: ResourceType, current: Obj, new_rv: str | None) -> None:
        if new_rv not in (None, "") and new_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{current["metadata"]["name"]}": '
                "the object has been modified; please apply your changes to the latest version and try again",
                kind=rtype.plural,
                name=current["metadata"]["name"],
            )

    def _commit(self, rtype: ResourceType, current: Obj, new: Obj, subresource: str | None) -> Obj:
        """Store ``new`` in place of ``current`` with the API server's rules for what may change."""
        meta_now = current["metadata"]
        if subresource == "status":
            # /status changes the status stanza only.
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status", {})
            new = merged
        else:
            new = copy.deepcopy(new)
            if rtype.status_subresource:
                new["status"] = copy.deepcopy(current.get("status", {}))
        meta = new.setdefault("metadata", {})
        for immutable in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp", "generation"):
            if immutable in meta_now:
                meta[immutable] = meta_now[immutable]
            else:
                meta.pop(immutable, None)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        self._validate(rtype, new, current, status_only=subresource == "status")
        if _essence(new) != _essence(current):
            meta["generation"] = meta_now.get("generation", 1) + 1
        meta["resourceVersion"] = meta_now["resourceVersion"]
        key = self._key(rtype, meta_now.get("namespace"), meta_now["name"])
        if new == current:
            return copy.deepcopy(current)  # a no-op write changes nothing, not even the resourceVersion
        if meta_now.get("deletionTimestamp") and not meta.get("finalizers"):
            gone = self._remove(rtype, key, current)
            self._collect_dependents(meta_now["uid"], "Background")
            return gone
        self._bump(new)
        self.objects[key] = new
        self._emit(rtype, "MODIFIED", new, current)
        return copy.deepcopy(new)

    def replace(self, rtype: ResourceType, namespace: str | None, name: str, body: Obj, subresource: str | None) -> Obj:
        current = self.objects.get(self._key(rtype, namespace, name))
        if current is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found', kind=rtype.plural, name=name)
        if (body.get("metadata") or {}).get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name in the URL")
        self._check_preconditions(rtype, current, (body.get("metadata") or {}).get("resourceVersion"))
        return self._commit(rtype, current, body, subresource)

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        content_type: str,
        subresource: str | None,
    ) -> Obj:
        current = self.objects.get(self._key(rtype, namespace, name))
        if current is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found', kind=rtype.plural, name=name)
        try:
            if content_type == "application/json-patch+json":
                new = json_patch(current, patch)
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise PatchInvalid("a merge patch must be a JSON object")
                self._check_preconditions(rtype, current, (patch.get("metadata") or {}).get("resourceVersion"))
                new = merge_patch(current, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type: {content_type}")
        except PatchConflict as exc:
            raise ApiError(422, "Invalid", str(exc), kind=rtype.kind, name=name) from exc
        except PatchInvalid as exc:
            raise ApiError(422, "Invalid", str(exc), kind=rtype.kind, name=name) from exc
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patch does not yield an object")
        new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._commit(rtype, current, new, subresource)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        propagation: str | None = None,
        preconditions: Obj | None = None,
    ) -> Obj:
        key = self._key(rtype, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise ApiError(404, "NotFound", f'{rtype.plural} "{name}" not found', kind=rtype.plural, name=name)
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}")
        self._check_preconditions(rtype, current, pre.get("resourceVersion"))
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return copy.deepcopy(current)
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            self._bump(marked)
            self.objects[key] = marked
            self._emit(rtype, "MODIFIED", marked, current)
            return copy.deepcopy(marked)
        uid = current["metadata"]["uid"]
        if propagation == "Foreground":
            self._collect_dependents(uid, "Foreground")
        result = self._remove(rtype, key, current)
        if propagation == "Orphan":
            self._orphan(uid)
        elif propagation != "Foreground":
            self._collect_dependents(uid, "Background")
        return result

    def _remove(self, rtype: ResourceType, key: ObjKey, current: Obj) -> Obj:
        gone = copy.deepcopy(current)
        self._bump(gone)
        del self.objects[key]
        self._by_type[rtype.key].discard(key)
        self._uids.pop(current["metadata"]["uid"], None)
        self._emit(rtype, "DELETED", gone, current)
        return gone

    # --- garbage collection ------------------------------------------------------------------

    def _collect_dependents(self, owner_uid: str, propagation: str) -> None:
        """Delete every object whose owners (by uid) are all gone, recursively."""
        alive = self._uids
        for key, obj in list(self.objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            if any(r.get("uid") in alive and r.get("uid") != owner_uid for r in refs):
                continue  # another owner keeps it alive
            if key in self.objects:
                self.delete(self.resources[key[0]], key[1] or None, key[2], propagation)

    def _orphan(self, owner_uid: str) -> None:
        for key, obj in list(self.objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs):
                new = copy.deepcopy(obj)
                remaining = [r for r in refs if r.get("uid") != owner_uid]
                if remaining:
                    new["metadata"]["ownerReferences"] = remaining
                else:
                    del new["metadata"]["ownerReferences"]
                self._bump(new)
                self.objects[key] = new
                self._emit(self.resources[key[0]], "MODIFIED", new, obj)
