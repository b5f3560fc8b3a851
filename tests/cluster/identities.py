"""Identities on the tier's server: the chart's operator RBAC, ServiceAccount tokens, kubeconfigs.

The chart is rendered with the real Helm SDK (as in tests/deploy) and its ServiceAccount and
RBAC objects are applied as admin; the operator then runs with a token minted for that
ServiceAccount through TokenRequest, exactly as it would in its pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepeft_testing.control_plane import ControlPlane, write_kubeconfig

from tests.cluster.rest import Kube
from tests.deploy.support import RELEASE_NAMESPACE, render

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@dataclass(frozen=True)
class Identity:
    """A ServiceAccount with a token, its kubeconfig and a client acting as it."""

    namespace: str
    name: str
    token: str
    kubeconfig: Path
    kube: Kube

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


def chart_rbac(values: dict[str, Any] | None = None, namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC objects, rendered by Helm."""
    return [obj for obj in render(values or {}, namespace=namespace) if obj["kind"] in RBAC_KINDS]


def apply_all(kube: Kube, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
    for obj in objects:
        kube.apply(obj, namespace)


def request_token(kube: Kube, namespace: str, service_account: str, seconds: int = 3600) -> str:
    """A bound ServiceAccount token through TokenRequest (``kubectl create token``)."""
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}}
    return str(kube.request("POST", path, body)["status"]["token"])


def service_account_identity(plane: ControlPlane, admin: Kube, namespace: str, name: str) -> Identity:
    token = request_token(admin, namespace, name)
    path = write_kubeconfig(plane.workdir / f"{namespace}.{name}.kubeconfig", plane.server, plane.ca_file, token, name)
    return Identity(namespace, name, token, path, Kube(plane.server, token, plane.ca_file))


def install_operator_rbac(
    plane: ControlPlane, admin: Kube, values: dict[str, Any] | None = None, namespace: str = RELEASE_NAMESPACE
) -> Identity:
    """Apply the chart's RBAC for the operator; return the operator ServiceAccount's identity."""
    admin.ensure_namespace(namespace)
    objects = chart_rbac(values, namespace)
    for watched in (values or {}).get("watchNamespaces") or []:
        admin.ensure_namespace(watched)
    apply_all(admin, objects, namespace)
    (account,) = [obj for obj in objects if obj["kind"] == "ServiceAccount"]
    return service_account_identity(plane, admin, namespace, account["metadata"]["name"])


def who_am_i(kube: Kube) -> str:
    """The username the server authenticated these credentials as (SelfSubjectReview)."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    answer = kube.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body)
    return str(answer["status"]["userInfo"]["username"])


def can_i(kube: Kube, verb: str, resource: str, namespace: str, name: str = "", group: str = "") -> bool:
    """SelfSubjectAccessReview: may these credentials do ``verb`` on ``resource``?"""
    attributes = {"verb": verb, "resource": resource, "namespace": namespace, "group": group}
    if name:
        attributes["name"] = name
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    answer = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body)
    return bool(answer["status"].get("allowed"))
