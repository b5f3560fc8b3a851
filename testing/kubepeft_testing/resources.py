"""The resource types the test API server serves, and name validation as the API server does it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kubepeft.api import models


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # "subdomain" (RFC 1123, 253), "label" (RFC 1123, 63) or "label1035" (services).
    name_rule: str = "subdomain"
    verbs: tuple[str, ...] = field(
        default=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    )

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)


CORE = [
    ResourceType("", "v1", "pods", "Pod", status_subresource=True, short_names=("po",)),
    ResourceType("", "v1", "services", "Service", status_subresource=True, short_names=("svc",), name_rule="label1035"),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType(
        "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status_subresource=True, short_names=("pvc",)
    ),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType("", "v1", "events", "Event", short_names=("ev",)),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True, name_rule="label"),
]
OTHER = [
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("events.k8s.io", "v1", "events", "Event"),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
]
PEFTJOBS = ResourceType(
    models.GROUP,
    models.VERSION,
    models.PLURAL,
    models.KIND,
    status_subresource=True,
    short_names=tuple(models.SHORT_NAMES),
    categories=tuple(models.CATEGORIES),
)
DEFAULT_RESOURCES = [*CORE, *OTHER, PEFTJOBS]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def name_errors(rule: str, name: str) -> list[str]:
    if rule == "subdomain":
        ok = len(name) <= 253 and bool(_SUBDOMAIN.match(name))
    elif rule == "label1035":
        ok = len(name) <= 63 and bool(_LABEL1035.match(name))
    else:
        ok = len(name) <= 63 and bool(_LABEL1123.match(name))
    return [] if ok else [f"metadata.name: Invalid value: {name!r}: not a valid {rule} name"]


def label_errors(labels: dict[str, str]) -> list[str]:
    errors = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
            errors.append(f"metadata.labels: Invalid value: {key!r}: bad prefix")
        if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
            errors.append(f"metadata.labels: Invalid value: {key!r}: bad name")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(f"metadata.labels: Invalid value: {value!r}: must be 63 characters or less")
    return errors


def pod_errors(obj: dict) -> list[str]:
    spec = obj.get("spec") or {}
    errors = []
    for field_name in ("hostname", "subdomain"):
        value = spec.get(field_name)
        if value is not None and (len(value) > 63 or not _LABEL1123.match(value)):
            errors.append(f"spec.{field_name}: Invalid value: {value!r}: must be a DNS label")
    if not spec.get("containers"):
        errors.append("spec.containers: Required value")
    # One of the real server's affinity rules: a required node affinity needs a term to match.
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if required is not None and not required.get("nodeSelectorTerms"):
        errors.append(
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: "
            "Required value: must have at least one node selector term"
        )
    return errors
