"""What only a local-folder store does: atomic writes and backend separation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubepeft.storage import PermanentStorageError, Store, open_store
from tests.fixtures.s3 import make_tree


def test_local_writes_leave_no_partial_files(local_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"a": 100_000, "b/c": 10})
    local_store.upload_dir(source, "set", metadata={})
    root = Path(local_store.root) / "set"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "a",
        "b/c",
        "manifest.json",
    ]


def test_local_store_rejects_s3_uris_and_relative_roots(local_store: Store) -> None:
    with pytest.raises(PermanentStorageError, match="local store cannot address"):
        local_store.put_bytes("s3://bucket/key", b"x")
    with pytest.raises(PermanentStorageError, match="absolute path"):
        open_store("relative/root")
