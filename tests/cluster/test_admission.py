"""The chart's ValidatingAdmissionPolicy on a real API server: only a user who may `get` a Secret
may hand it to a PeftJob; images may be restricted to allowed registries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubepeft_testing.control_plane import ControlPlane

from tests.cluster.identities import Identity, service_account_identity
from tests.cluster.rest import Kube, KubeError
from tests.cluster.support import wait_for
from tests.deploy.support import of_kind, render
from tests.operator.support import S3_KEYS, peftjob, secret

pytestmark = pytest.mark.cluster
JOBS = "/apis/kubepeft.dev/v1alpha1/namespaces/{ns}/peftjobs"
REGISTRY = "registry.example.com/ml"


@pytest.fixture
def policy(admin: Kube, peftjob_crd: object) -> Iterator[list[dict[str, Any]]]:
    objects = render({"admissionPolicy": {"allowedImageRegistries": [REGISTRY]}})
    installed = of_kind(objects, "ValidatingAdmissionPolicy") + of_kind(objects, "ValidatingAdmissionPolicyBinding")
    for obj in installed:
        admin.apply(obj)
    yield installed
    for obj in reversed(installed):
        admin.delete(admin.path_of(obj))


def user(plane: ControlPlane, admin: Kube, namespace: str, name: str, *, secrets: bool) -> Identity:
    """A ServiceAccount that may create PeftJobs in ``namespace``, and get Secrets or not."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": ["kubepeft.dev"], "resources": ["peftjobs"], "verbs": ["create", "get", "update", "patch"]}
    ]
    if secrets:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    meta = {"name": name, "namespace": namespace}
    admin.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta})
    admin.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules})
    admin.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
    )
    return service_account_identity(plane, admin, namespace, name)


def create(identity: Identity, namespace: str, name: str, **changes: Any) -> Any:
    return identity.kube.request("POST", JOBS.format(ns=namespace), peftjob(name, **changes))


def test_only_a_user_who_may_read_a_secret_may_hand_it_to_a_job(
    control_plane: ControlPlane, admin: Kube, namespace: str, policy: object
) -> None:
    for name in ("model-creds", "s3-creds"):
        admin.create(secret(name, *S3_KEYS), namespace)
    reader = user(control_plane, admin, namespace, "reader", secrets=True)
    outsider = user(control_plane, admin, namespace, "outsider", secrets=False)

    # The policy takes effect asynchronously after it is created: wait for the first refusal.
    def refused() -> KubeError | None:
        try:
            create(outsider, namespace, "probe")
        except KubeError as error:
            return error if error.status == 403 else None
        admin.delete(JOBS.format(ns=namespace) + "/probe")
        return None

    error = wait_for(refused, 30, what="the admission policy in force")
    assert "spec.model.credentialsSecretRef" in error.message and "model-creds" in error.message
    assert "system:serviceaccount:" in error.message and "outsider" in error.message
    assert create(reader, namespace, "allowed")["metadata"]["name"] == "allowed"
    # A job without Secret references needs no Secret rights.
    bare = {"uri": "s3://runs/out"}
    assert create(outsider, namespace, "no-secrets", model={"uri": "s3://models/tiny"}, output=bare)


def test_images_can_be_restricted_to_allowed_registries(
    control_plane: ControlPlane, admin: Kube, namespace: str, policy: object
) -> None:
    reader = user(control_plane, admin, namespace, "imager", secrets=True)
    for name in ("model-creds", "s3-creds"):
        admin.create(secret(name, *S3_KEYS), namespace)
    resources = {"nodes": 1, "gpusPerNode": 0}

    def refused() -> KubeError | None:
        try:
            create(reader, namespace, "evil-image", resources={**resources, "image": "docker.io/evil/miner:1"})
        except KubeError as error:
            return error if error.status == 403 else None
        admin.delete(JOBS.format(ns=namespace) + "/evil-image")
        return None

    error = wait_for(refused, 30, what="the image rule in force")
    assert "spec.resources.image" in error.message and REGISTRY in error.message
    ok = create(reader, namespace, "good-image", resources={**resources, "image": f"{REGISTRY}/trainer:1"})
    assert ok["metadata"]["name"] == "good-image"
