"""Authentication and authorization on the real server: the operator's ServiceAccount under the
chart's RBAC, the trainer's least-privilege identity, and the official client's token handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.config.incluster_config
import pytest
import yaml
from kubepeft_operator import naming
from kubepeft_operator.render import JobIdentity, owner_reference, render_job_children
from kubepeft_operator.settings import OperatorSettings
from kubepeft_testing.control_plane import ControlPlane

from kubepeft.api import models
from tests.cluster.identities import Identity, can_i, service_account_identity, who_am_i
from tests.cluster.rest import Kube, KubeError
from tests.fixtures.api import REPO_ROOT

pytestmark = pytest.mark.cluster

JOBS = f"/apis/{models.GROUP}/{models.VERSION}"


def create_job(admin: Kube, namespace: str, name: str = "rbac-probe") -> dict[str, Any]:
    doc = yaml.safe_load((REPO_ROOT / "examples" / "tiny-lora.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    return dict(admin.request("POST", f"{JOBS}/namespaces/{namespace}/{models.PLURAL}", doc))


@pytest.fixture
def trainer(control_plane: ControlPlane, admin: Kube, namespace: str) -> tuple[Identity, JobIdentity]:
    """A job's children rendered by the operator's pure renderers, applied as admin; the trainer's token."""
    body = create_job(admin, namespace)
    job = JobIdentity.from_body(body)
    spec = models.PeftJob.model_validate(body).spec
    for child in render_job_children(job, spec, OperatorSettings()):
        admin.create(child, namespace)
    identity = service_account_identity(control_plane, admin, namespace, naming.trainer_account_name(job.name))
    return identity, job


def test_the_trainer_can_patch_its_own_progress_map(trainer: tuple[Identity, JobIdentity]) -> None:
    identity, job = trainer
    assert who_am_i(identity.kube) == identity.username
    path = f"/api/v1/namespaces/{job.namespace}/configmaps/{naming.progress_map_name(job.name)}"
    patched = identity.kube.patch(path, {"data": {"report.json": '{"step": 3}'}})
    assert patched["data"]["report.json"] == '{"step": 3}'
    assert identity.kube.get(path)["data"]["report.json"] == '{"step": 3}'


@pytest.mark.parametrize(
    ("method", "what"),
    [
        ("GET", "secrets"),
        ("GET", "pods"),
        ("PATCH", "config"),
        ("GET", "config"),
        ("PATCH", "other"),
        ("DELETE", "progress"),
        ("GET", "peftjobs"),
    ],
)
def test_the_trainer_is_denied_everything_else(
    trainer: tuple[Identity, JobIdentity], admin: Kube, method: str, what: str
) -> None:
    identity, job = trainer
    ns = job.namespace
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}, "data": {}}, ns)
    admin.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "stringData": {"k": "v"}}, ns)
    paths = {
        "secrets": f"/api/v1/namespaces/{ns}/secrets",
        "pods": f"/api/v1/namespaces/{ns}/pods",
        "config": f"/api/v1/namespaces/{ns}/configmaps/{naming.config_map_name(job.name)}",
        "other": f"/api/v1/namespaces/{ns}/configmaps/other",
        "progress": f"/api/v1/namespaces/{ns}/configmaps/{naming.progress_map_name(job.name)}",
        "peftjobs": f"{JOBS}/namespaces/{ns}/{models.PLURAL}",
    }
    body = {"data": {"x": "y"}} if method == "PATCH" else None
    content = "application/merge-patch+json" if method == "PATCH" else "application/json"
    with pytest.raises(KubeError) as denied:
        identity.kube.request(method, paths[what], body, content_type=content)
    assert denied.value.status == 403, denied.value
    assert identity.username in denied.value.message


def test_access_reviews_agree_with_the_real_requests(trainer: tuple[Identity, JobIdentity]) -> None:
    identity, job = trainer
    progress = naming.progress_map_name(job.name)
    assert can_i(identity.kube, "patch", "configmaps", job.namespace, progress)
    assert not can_i(identity.kube, "patch", "configmaps", job.namespace, naming.config_map_name(job.name))
    assert not can_i(identity.kube, "list", "pods", job.namespace)
    assert not can_i(identity.kube, "get", "secrets", job.namespace, "s3")


def test_the_operator_token_from_the_chart_rbac_can_list_and_watch_jobs(
    operator_identity: Identity, admin: Kube, namespace: str
) -> None:
    create_job(admin, namespace, "listed")
    kube = operator_identity.kube
    assert who_am_i(kube) == "system:serviceaccount:kubepeft-system:kubepeft"
    names = [job["metadata"]["name"] for job in kube.items(f"{JOBS}/{models.PLURAL}")]
    assert "listed" in names
    events = kube.watch(f"{JOBS}/{models.PLURAL}", resourceVersion=0)
    assert "listed" in [event["object"]["metadata"]["name"] for event in events if event["type"] == "ADDED"]
    for verb, resource, group in [
        ("watch", models.PLURAL, models.GROUP),
        ("patch", f"{models.PLURAL}/status", models.GROUP),
        ("create", "pods", ""),
        ("create", "rolebindings", "rbac.authorization.k8s.io"),
        ("create", "events", ""),
        ("update", f"{models.PLURAL}/finalizers", models.GROUP),
    ]:
        assert can_i(kube, verb, resource, namespace, group=group), (verb, resource)
    assert not can_i(kube, "list", "secrets", namespace)


def test_the_operator_may_set_block_owner_deletion(operator_identity: Identity, admin: Kube, namespace: str) -> None:
    """The server enforces OwnerReferencesPermissionEnforcement (as OpenShift does): a child with
    blockOwnerDeletion needs `update` on peftjobs/finalizers, which the chart grants."""
    job = JobIdentity.from_body(create_job(admin, namespace, "owner"))
    reference = owner_reference(job)
    assert reference["blockOwnerDeletion"] is True
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "ownerReferences": [reference]}}
    created = operator_identity.kube.create(child, namespace)
    assert created["metadata"]["ownerReferences"][0]["uid"] == job.uid


# --- the official client (what the operator uses) ------------------------------------------


def official_username(configuration: kubernetes.client.Configuration) -> str:
    with kubernetes.client.ApiClient(configuration) as api:
        review = kubernetes.client.AuthenticationV1Api(api).create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview()
        )
        kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(models.GROUP, models.VERSION, models.PLURAL)
    return str(review.status.user_info.username)


def test_the_official_client_authenticates_with_a_token_kubeconfig(operator_identity: Identity) -> None:
    """kubernetes==36.0.0 sent these requests as system:anonymous (its auth_settings ignored the token)."""
    configuration = kubernetes.client.Configuration()
    kubeconfig = str(operator_identity.kubeconfig)
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    assert official_username(configuration) == operator_identity.username


def test_the_official_client_authenticates_in_cluster(
    operator_identity: Identity, control_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file, ca_file = tmp_path / "token", tmp_path / "ca.crt"
    token_file.write_text(operator_identity.token)
    ca_file.write_bytes(control_plane.ca_file.read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(control_plane.port))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(token_file))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(ca_file))
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_incluster_config(client_configuration=configuration)
    assert official_username(configuration) == operator_identity.username


def test_a_wrong_token_is_refused_not_anonymous(control_plane: ControlPlane) -> None:
    kube = Kube(control_plane.server, "not-a-token", control_plane.ca_file)
    with pytest.raises(KubeError) as refused:
        kube.get(f"{JOBS}/{models.PLURAL}")
    assert refused.value.status == 401


def test_without_the_finalizers_grant_block_owner_deletion_is_refused(
    control_plane: ControlPlane, admin: Kube, namespace: str
) -> None:
    """What the chart's RBAC lacked before: the same create, without `update` on peftjobs/finalizers."""
    job = JobIdentity.from_body(create_job(admin, namespace, "owner"))
    rules = [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [models.GROUP], "resources": [models.PLURAL], "verbs": ["get"]},
    ]
    rbac = "rbac.authorization.k8s.io/v1"
    admin.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "narrow"}}, namespace)
    admin.create({"apiVersion": rbac, "kind": "Role", "metadata": {"name": "narrow"}, "rules": rules}, namespace)
    binding = {
        "apiVersion": rbac,
        "kind": "RoleBinding",
        "metadata": {"name": "narrow"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "narrow"},
        "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": namespace}],
    }
    admin.create(binding, namespace)
    narrow = service_account_identity(control_plane, admin, namespace, "narrow")
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "owned", "ownerReferences": [owner_reference(job)]},
    }
    with pytest.raises(KubeError) as refused:
        narrow.kube.create(child, namespace)
    assert refused.value.status == 403 and "blockOwnerDeletion" in refused.value.message
