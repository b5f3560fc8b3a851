"""Checks before an attempt starts that need the cluster's answer (pure given that answer)."""

from __future__ import annotations

from collections.abc import Mapping

from kubepeft.api.models import PeftJobSpec
from kubepeft.sources import ADAPTER_PREFIX
from kubepeft_operator.lifecycle import Preflight
from kubepeft_operator.render.config import CredentialMount

SINGLE_POD_MODE = "ReadWriteOncePod"


def _field(source: str) -> str:
    """The spec field a credentials source comes from, as a user reads it."""
    if source.startswith(ADAPTER_PREFIX):
        return f"adapters.sources[{source.removeprefix(ADAPTER_PREFIX)}]"
    return source


def secrets_to_read(mounts: list[CredentialMount]) -> set[str]:
    """Secrets the spec names explicitly; the operator's default Secret is optional."""
    return {m.secret for m in mounts if m.explicit}


def check_secrets(
    mounts: list[CredentialMount], found: Mapping[str, frozenset[str] | None], namespace: str
) -> Preflight:
    """``found`` maps a Secret name to its key names (``None``: no such Secret). Values never pass here."""
    for mount in mounts:
        if not mount.explicit:
            continue
        keys = found.get(mount.secret)
        secret = f'Secret "{mount.secret}" (credentials for {_field(mount.source)})'
        if keys is None:
            return Preflight("SecretNotFound", f'{secret} not found in namespace "{namespace}"')
        missing = [key for key, _file in mount.items if key not in keys]
        if missing:
            return Preflight("SecretKeyNotFound", f"{secret} has no key(s) {', '.join(missing)}")
    return Preflight()


def claims_to_read(spec: PeftJobSpec) -> list[str]:
    """The PersistentVolumeClaims the workers mount."""
    return sorted({volume.claim_name for volume in spec.volumes or []})


def check_claims(spec: PeftJobSpec, found: Mapping[str, tuple[str, ...] | None], namespace: str) -> Preflight:
    """``found`` maps a claim name to its access modes (``None``: no such claim).

    A missing claim would leave the pods Pending with only a scheduler event; a single-pod claim
    can never be mounted by a gang of several workers. Both are refused before any pod exists.
    """
    for volume in spec.volumes or []:
        modes = found.get(volume.claim_name)
        if modes is None:
            return Preflight(
                "PersistentVolumeClaimNotFound",
                f'PersistentVolumeClaim "{volume.claim_name}" (spec.volumes) not found in namespace "{namespace}"',
            )
        if SINGLE_POD_MODE in modes and spec.resources.nodes > 1:
            return Preflight(
                "PersistentVolumeClaimAccessMode",
                f'PersistentVolumeClaim "{volume.claim_name}" is {SINGLE_POD_MODE}: its one pod cannot be all '
                f"{spec.resources.nodes} workers (use ReadOnlyMany, or ReadWriteMany for the output)",
            )
    return Preflight()
