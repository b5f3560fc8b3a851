"""Checkpoint naming, discovery and retention under ``<job>/checkpoints/``.

A checkpoint is ``checkpoints/step-<8 digits>/`` and counts only once its manifest exists.
Retention keeps the newest ``keep`` complete checkpoints. It never deletes the newest complete
one, and deletes an older prefix (complete or an abandoned partial one) only when a newer
complete checkpoint exists -- a partial prefix newer than every complete one may be an upload
still in flight.
"""

from __future__ import annotations

import logging
import re

from kubepeft.storage.store import Store

log = logging.getLogger("kubepeft.storage")

CHECKPOINT_PREFIX = "step-"
_CHECKPOINT = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    """``step-00000100``: zero-padded so names sort like steps."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def parse_checkpoint_name(name: str) -> int | None:
    match = _CHECKPOINT.match(name.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def _checkpoint_prefixes(store: Store, checkpoints_uri: str) -> list[tuple[int, str]]:
    found = []
    for uri in store.list_prefixes(checkpoints_uri):
        step = parse_checkpoint_name(uri)
        if step is not None:
            found.append((step, uri))
    return sorted(found)


def complete_checkpoints(store: Store, checkpoints_uri: str) -> list[tuple[int, str]]:
    """(step, uri) of every checkpoint with a manifest, sorted by step."""
    return [(step, uri) for step, uri in _checkpoint_prefixes(store, checkpoints_uri) if store.is_complete(uri)]


def latest_checkpoint(store: Store, checkpoints_uri: str) -> tuple[int, str] | None:
    """The complete checkpoint with the highest step, or None."""
    for step, uri in reversed(_checkpoint_prefixes(store, checkpoints_uri)):
        if store.is_complete(uri):
            return step, uri
    return None


def apply_retention(store: Store, checkpoints_uri: str, keep: int) -> list[str]:
    """Delete checkpoints beyond the newest ``keep`` complete ones; returns the deleted URIs."""
    keep = max(1, keep)
    prefixes = _checkpoint_prefixes(store, checkpoints_uri)
    complete = [(step, uri) for step, uri in prefixes if store.is_complete(uri)]
    if not complete:
        return []
    kept = {uri for _, uri in complete[-keep:]}
    newest_complete_step = complete[-1][0]
    deleted = []
    for step, uri in prefixes:
        if uri in kept or step >= newest_complete_step:
            continue  # partial prefixes newer than the newest complete one may still be uploading
        store.delete_prefix(uri)
        deleted.append(uri)
    if deleted:
        log.info("retention under %s (keep %d): deleted %s", checkpoints_uri, keep, ", ".join(deleted))
    return deleted
