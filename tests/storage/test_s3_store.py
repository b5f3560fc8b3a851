"""What only the S3 backend does: multipart, object metadata, checksums, ordering on the wire."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kubepeft.storage import MANIFEST_NAME, PermanentStorageError, Store, TransferTuning, sha256_file
from kubepeft.storage.seaweed import EmbeddedS3
from tests.fixtures.s3 import make_tree, open_s3_store

MB = 1024 * 1024


def _count_calls(store: Store, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every ``operation`` request the store's client sends."""
    seen: list[dict[str, Any]] = []
    client = store.client  # type: ignore[attr-defined]
    client.meta.events.register(f"before-parameter-build.s3.{operation}", lambda params, **_: seen.append(params))
    return seen


def test_large_files_use_multipart_and_ranged_downloads(s3_server: EmbeddedS3, s3_bucket: str, tmp_path: Path) -> None:
    store = open_s3_store(
        s3_server,
        f"s3://{s3_bucket}/big",
        tuning=TransferTuning(multipart_threshold=8 * MB, part_size=8 * MB, concurrency=4),
    )
    source = make_tree(tmp_path / "src", {"empty": 0, "small.json": 300, "shard-1.bin": 65 * MB + 3})
    parts = _count_calls(store, "UploadPart")
    ranged_gets = _count_calls(store, "GetObject")

    manifest = store.upload_dir(source, "set", metadata={"kind": "merged"})
    assert len(parts) == 9  # ceil(65 MB / 8 MB): multipart really used
    assert {p["ChecksumAlgorithm"] for p in parts} == {"SHA256"}  # the server checks every part

    head = s3_server.client().head_object(Bucket=s3_bucket, Key="big/set/shard-1.bin")  # type: ignore[attr-defined]
    assert head["Metadata"]["sha256"] == sha256_file(source / "shard-1.bin")

    store.download_dir("set", tmp_path / "dst")
    assert sum(1 for p in ranged_gets if "Range" in p) >= 9
    assert sha256_file(tmp_path / "dst" / "shard-1.bin") == manifest.entry("shard-1.bin").sha256  # type: ignore[union-attr]


def test_manifest_is_written_after_every_file(s3_store: Store, s3_server: EmbeddedS3, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {f"f{i}": 1000 for i in range(5)})
    s3_store.upload_dir(source, "set", metadata={"v": 1})
    puts = _count_calls(s3_store, "PutObject")
    deletes = _count_calls(s3_store, "DeleteObject")
    (source / "f0").write_bytes(b"changed")
    s3_store.upload_dir(source, "set", metadata={"v": 2})
    # The old manifest goes first (the prefix reads incomplete while it changes), the new one last.
    assert [d["Key"].rsplit("/", 1)[-1] for d in deletes] == [MANIFEST_NAME]
    assert [p["Key"].rsplit("/", 1)[-1] for p in puts] == ["f0", MANIFEST_NAME]


def test_single_part_uploads_carry_our_sha256_as_checksum(s3_store: Store, tmp_path: Path) -> None:
    puts = _count_calls(s3_store, "PutObject")
    s3_store.upload_dir(make_tree(tmp_path / "src", {"a": 1234}), "set", metadata={})
    data_put = next(p for p in puts if p["Key"].endswith("/a"))
    assert data_put["ChecksumSHA256"] and data_put["Metadata"]["sha256"] == sha256_file(tmp_path / "src" / "a")


def test_s3_store_rejects_local_paths(s3_store: Store) -> None:
    with pytest.raises(PermanentStorageError, match="S3 store cannot address"):
        s3_store.exists(os.sep + "tmp")
