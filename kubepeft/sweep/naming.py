"""Deterministic, DNS-safe trial names (pure).

A trial is ``<sweep>-t<index>``; when that would exceed the PeftJob name limit (63, so the name
fits a label value), the sweep part is cut and a 64-bit hash of the full sweep name keeps
different long sweeps apart.
"""

from __future__ import annotations

import hashlib

from kubepeft.api.models import MAX_NAME_LENGTH

HASH_CHARS = 16  # 64 bits of sha256


def trial_name(sweep: str, index: int, limit: int = MAX_NAME_LENGTH) -> str:
    suffix = f"-t{index}"
    name = sweep + suffix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(sweep.encode()).hexdigest()[:HASH_CHARS]
    keep = max(0, limit - len(suffix) - HASH_CHARS - 1)
    head = sweep[:keep].rstrip("-.")
    return f"{head}-{digest}{suffix}" if head else f"{digest}{suffix}"
