"""The chart's ValidatingAdmissionPolicy on a real API server: only a user who may `get` a Secret
(adapters' included) or a PersistentVolumeClaim may hand it to a PeftJob; images may be restricted
to allowed registries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import yaml
from kubepeft_testing.control_plane import ControlPlane

from tests.cluster.identities import Identity, service_account_identity
from tests.cluster.rest import Kube, KubeError
from tests.cluster.support import apply_crd, wait_for
from tests.deploy.support import of_kind, render
from tests.fixtures.api import REPO_ROOT
from tests.operator.scenario_support import peftsweep
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


def user(
    plane: ControlPlane, admin: Kube, namespace: str, name: str, *, secrets: bool, more: Sequence[dict[str, Any]] = ()
) -> Identity:
    """A ServiceAccount that may create PeftJobs in ``namespace``, and get Secrets or not (plus ``more`` rules)."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": ["kubepeft.dev"], "resources": ["peftjobs"], "verbs": ["create", "get", "update", "patch"]}
    ]
    if secrets:
        rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    rules.extend(more)
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


CLAIMS_RULE = {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]}
ADAPTERS = {"sources": [{"uri": "s3://runs/adapters/a", "credentialsSecretRef": {"name": "adapter-creds"}}]}
# Inputs from anywhere: the model on a claim, the dataset on its own endpoint with its own keys, an
# adapter with its own Secret, the output on a second claim.
ANYWHERE: dict[str, Any] = {
    "model": {"uri": "pvc://models/tiny-llama"},
    "dataset": {
        "uri": "s3://lake/train.jsonl",
        "endpoint": "https://lake.example.com",
        "region": "eu-west-1",
        "credentialsSecretRef": {"name": "lake-creds"},
    },
    "adapters": ADAPTERS,
    "volumes": [{"claimName": "models"}, {"claimName": "runs", "mountPath": "/data/runs"}],
    "output": {"uri": "pvc://runs/out"},
}


def claim(name: str, *modes: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": list(modes or ["ReadWriteMany"]), "resources": {"requests": {"storage": "1Gi"}}},
    }


def refusal(identity: Identity, namespace: str, admin: Kube, **changes: Any) -> KubeError | None:
    try:
        create(identity, namespace, "probe", **changes)
    except KubeError as error:
        return error if error.status == 403 else None
    admin.delete(JOBS.format(ns=namespace) + "/probe")
    return None


def test_adapters_secrets_and_declared_claims_need_the_users_own_right(
    control_plane: ControlPlane, admin: Kube, namespace: str, policy: object
) -> None:
    for name in ("s3-creds", "adapter-creds", "lake-creds"):
        admin.create(secret(name, *S3_KEYS), namespace)
    for name in ("models", "runs"):
        admin.create(claim(name), namespace)
    # May get the output's and the dataset's Secrets (by name) and every claim, not the adapter's.
    named = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["s3-creds", "lake-creds"]}
    partial = user(control_plane, admin, namespace, "partial", secrets=False, more=[named, CLAIMS_RULE])
    error = wait_for(lambda: refusal(partial, namespace, admin, **ANYWHERE), 30, what="the adapters rule in force")
    assert "spec.adapters.sources[0].credentialsSecretRef" in error.message and '"adapter-creds"' in error.message
    assert "partial" in error.message
    # Every Secret, but no claim: the claim is named.
    no_claims = user(control_plane, admin, namespace, "no-claims", secrets=True)
    error = refusal(no_claims, namespace, admin, **ANYWHERE)
    assert error is not None and "spec.volumes[0].claimName" in error.message and '"models"' in error.message
    # With both rights the job is admitted, as stored by the server (volumes and per-source access).
    full = user(control_plane, admin, namespace, "full", secrets=True, more=[CLAIMS_RULE])
    job = create(full, namespace, "anywhere", **ANYWHERE)
    assert job["spec"]["volumes"] == ANYWHERE["volumes"]
    assert job["spec"]["dataset"]["endpoint"] == "https://lake.example.com"
    assert job["spec"]["adapters"]["sources"][0]["credentialsSecretRef"]["name"] == "adapter-creds"


SWEEPS = "/apis/kubepeft.dev/v1alpha1/namespaces/{ns}/peftsweeps"
SWEEP_RULE = {"apiGroups": ["kubepeft.dev"], "resources": ["peftsweeps"], "verbs": ["create"]}


def test_a_sweeps_template_needs_the_same_rights_as_a_job(
    control_plane: ControlPlane, admin: Kube, namespace: str, policy: object
) -> None:
    """The operator creates the trials (and may get every Secret): the sweep itself is checked."""
    from kubepeft.api import sweep_crd

    apply_crd(admin, yaml.safe_load((REPO_ROOT / "crds" / sweep_crd.CRD_FILE).read_text(encoding="utf-8")))
    for name in ("model-creds", "s3-creds"):
        admin.create(secret(name, *S3_KEYS), namespace)
    outsider = user(control_plane, admin, namespace, "sweeper", secrets=False, more=[SWEEP_RULE])

    def refused() -> KubeError | None:
        try:
            outsider.kube.request("POST", SWEEPS.format(ns=namespace), peftsweep("probe"))
        except KubeError as error:
            return error if error.status == 403 else None
        admin.delete(SWEEPS.format(ns=namespace) + "/probe")
        return None

    error = wait_for(refused, 30, what="the policy in force for sweeps")
    assert "spec.template.model.credentialsSecretRef" in error.message and '"model-creds"' in error.message
    reader = user(control_plane, admin, namespace, "sweep-reader", secrets=True, more=[SWEEP_RULE])
    sweep = reader.kube.request("POST", SWEEPS.format(ns=namespace), peftsweep("allowed"))
    assert sweep["metadata"]["name"] == "allowed"
