"""Small helpers of the tier: CRDs, waiting, the dry-run verdict of a manifest."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.cluster.rest import Kube, KubeError

T = TypeVar("T")
CRD_API = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def wait_for(check: Callable[[], T | None], timeout: float = 30, interval: float = 0.2, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; its last value or exception in the error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (KubeError, AssertionError, KeyError) as error:
            last = error
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached after {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)


def condition(obj: dict[str, Any], kind: str) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def apply_crd(admin: Kube, crd: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    """Apply a CRD (server-side) and wait until it is Established and served."""
    admin.apply(crd)
    path = f"{CRD_API}/{crd['metadata']['name']}"

    def established() -> dict[str, Any] | None:
        obj: dict[str, Any] = admin.get(path)
        return obj if condition(obj, "Established") == "True" else None

    return wait_for(established, timeout, what=f"{crd['metadata']['name']} Established")


def dry_run_create(kube: Kube, doc: dict[str, Any], namespace: str) -> KubeError | None:
    """Create ``doc`` as a PeftJob with dryRun=All and strict field validation (as
    ``kubectl create --dry-run=server --validate=strict``): None when accepted, else the error."""
    from kubepeft.api.models import GROUP, PLURAL, VERSION

    try:
        kube.request(
            "POST",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
            doc,
            params={"dryRun": "All", "fieldValidation": "Strict"},
        )
    except KubeError as error:
        if error.status in (400, 422):
            return error
        raise
    return None
