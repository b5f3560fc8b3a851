"""Fixtures of the control-plane tier. Every test here is marked ``cluster``; without the
binaries (see :mod:`kubepeft_testing.control_plane`) the whole tier is skipped with one line."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubepeft_testing.control_plane import ControlPlane, missing_assets

from kubepeft.api import crd
from tests.cluster.identities import Identity, install_operator_rbac
from tests.cluster.kubelet import FakeKubelet
from tests.cluster.operator_process import OperatorProcess
from tests.cluster.rest import Kube
from tests.cluster.support import apply_crd
from tests.fixtures.api import REPO_ROOT

CRD_PATH = REPO_ROOT / "crds" / crd.CRD_FILE
CRD_PATH_IN_CHART = REPO_ROOT / "charts" / "kubepeft" / "crds" / crd.CRD_FILE
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.hookimpl(tryfirst=True)  # before `-m "not cluster"` is applied
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tier ``cluster``; without the binaries keep ONE skipped test (one line saying how
    to get them) and deselect the rest."""
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.cluster)
    problem = missing_assets()
    if not problem or not ours:
        return
    ours[0].add_marker(pytest.mark.skip(reason=problem))
    rest = set(ours[1:])
    config.hook.pytest_deselected(items=list(rest))
    items[:] = [item for item in items if item not in rest]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager for the whole session."""
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    with plane:
        yield plane


@pytest.fixture(scope="session")
def admin(control_plane: ControlPlane) -> Kube:
    """A client with the static admin token (system:masters)."""
    return Kube(control_plane.server, control_plane.admin_token, control_plane.ca_file)


@pytest.fixture(scope="session")
def peftjob_crd(admin: Kube) -> dict[str, object]:
    """The CRD from crds/, applied and Established."""
    return apply_crd(admin, yaml.safe_load(CRD_PATH.read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def operator_identity(control_plane: ControlPlane, admin: Kube, peftjob_crd: object) -> Identity:
    """The chart's RBAC (cluster-wide mode) applied; the operator ServiceAccount's token identity."""
    return install_operator_rbac(control_plane, admin)


@pytest.fixture
def namespace(admin: Kube, peftjob_crd: object) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security ``restricted``; deleted afterwards (not awaited)."""
    name = f"t-{secrets.token_hex(4)}"
    admin.ensure_namespace(name, RESTRICTED)
    yield name
    if admin.exists(f"/api/v1/namespaces/{name}"):  # a test may have deleted it itself
        admin.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def kubelet(admin: Kube, namespace: str) -> Iterator[FakeKubelet]:
    """A fake Ready node whose loop binds this namespace's pods and finishes graceful deletions."""
    fake = FakeKubelet(admin, namespace=namespace)
    fake.register_node()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def operator_process(control_plane: ControlPlane, operator_identity: Identity) -> Iterator[OperatorProcess]:
    """The real operator (not started yet) with the chart RBAC's token; stopped afterwards."""
    process = OperatorProcess(operator_identity.kubeconfig, control_plane.workdir / "operator-logs")
    yield process
    process.stop()
