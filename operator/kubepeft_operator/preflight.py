"""Checks before an attempt starts that need the cluster's answer (pure given that answer)."""

from __future__ import annotations

from collections.abc import Mapping

from kubepeft_operator.lifecycle import Preflight
from kubepeft_operator.render.config import CredentialMount


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
        if keys is None:
            return Preflight(
                "SecretNotFound",
                f'Secret "{mount.secret}" (credentials for {mount.source}) not found in namespace "{namespace}"',
            )
        missing = [key for key, _file in mount.items if key not in keys]
        if missing:
            return Preflight(
                "SecretKeyNotFound",
                f'Secret "{mount.secret}" (credentials for {mount.source}) has no key(s) {", ".join(missing)}',
            )
    return Preflight()
