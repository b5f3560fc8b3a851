"""Checkpoint discovery and retention (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepeft.storage import (
    Store,
    apply_retention,
    checkpoint_name,
    complete_checkpoints,
    latest_checkpoint,
    parse_checkpoint_name,
)
from tests.fixtures.s3 import make_tree


def _checkpoint(store: Store, tmp_path: Path, step: int, *, complete: bool = True) -> str:
    uri = f"checkpoints/{checkpoint_name(step)}"
    if complete:
        source = make_tree(tmp_path / f"ckpt-{step}", {"adapter.bin": 100 + step, "optimizer.pt": 50})
        store.upload_dir(source, uri, metadata={"kind": "checkpoint", "step": step})
    else:  # what a crash mid-upload leaves: files without a manifest
        store.put_bytes(f"{uri}/adapter.bin", b"partial")
    return store.resolve(uri)


def test_checkpoint_names_sort_like_steps() -> None:
    assert checkpoint_name(100) == "step-00000100"
    assert parse_checkpoint_name("s3://b/job/checkpoints/step-00000100") == 100
    assert parse_checkpoint_name("step-1x") is None
    assert sorted(checkpoint_name(s) for s in (9, 10, 100)) == [checkpoint_name(s) for s in (9, 10, 100)]
    with pytest.raises(ValueError):
        checkpoint_name(-1)


def test_only_checkpoints_with_a_manifest_count(any_store: Store, tmp_path: Path) -> None:
    assert latest_checkpoint(any_store, "checkpoints") is None
    first = _checkpoint(any_store, tmp_path, 10)
    second = _checkpoint(any_store, tmp_path, 20)
    _checkpoint(any_store, tmp_path, 30, complete=False)
    assert complete_checkpoints(any_store, "checkpoints") == [(10, first), (20, second)]
    assert latest_checkpoint(any_store, "checkpoints") == (20, second)


def test_retention_keeps_newest_complete_and_spares_inflight(any_store: Store, tmp_path: Path) -> None:
    c10 = _checkpoint(any_store, tmp_path, 10)
    p15 = _checkpoint(any_store, tmp_path, 15, complete=False)  # abandoned partial, older than a complete one
    c20 = _checkpoint(any_store, tmp_path, 20)
    c30 = _checkpoint(any_store, tmp_path, 30)
    p40 = _checkpoint(any_store, tmp_path, 40, complete=False)  # may still be uploading

    deleted = apply_retention(any_store, "checkpoints", keep=2)
    assert deleted == [c10, p15]
    assert [uri for _, uri in complete_checkpoints(any_store, "checkpoints")] == [c20, c30]
    assert any_store.exists(f"{p40}/adapter.bin")
    assert apply_retention(any_store, "checkpoints", keep=2) == []  # idempotent


def test_retention_never_deletes_the_newest_complete_checkpoint(any_store: Store, tmp_path: Path) -> None:
    c10 = _checkpoint(any_store, tmp_path, 10)
    _checkpoint(any_store, tmp_path, 20, complete=False)
    # keep=0 is treated as 1, and the partial newer prefix is not a reason to drop step 10.
    assert apply_retention(any_store, "checkpoints", keep=0) == []
    assert latest_checkpoint(any_store, "checkpoints") == (10, c10)


def test_retention_without_any_complete_checkpoint_deletes_nothing(any_store: Store, tmp_path: Path) -> None:
    p10 = _checkpoint(any_store, tmp_path, 10, complete=False)
    assert apply_retention(any_store, "checkpoints", keep=1) == []
    assert any_store.exists(f"{p10}/adapter.bin")
