"""Store semantics, identical for S3 (real SeaweedFS) and local folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubepeft.storage import (
    MANIFEST_NAME,
    FileEntry,
    IncompleteError,
    IntegrityError,
    NotFoundError,
    PermanentStorageError,
    Store,
    sha256_file,
    write_manifest,
)
from tests.fixtures.s3 import make_tree

SIZES = {"empty.bin": 0, "one.txt": 1, "config.json": 700, "nested/deeper/weights.bin": 3 * 1024 * 1024 + 17}


def test_round_trip_preserves_every_file(any_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", SIZES)
    manifest = any_store.upload_dir(source, "adapter", metadata={"kind": "adapter", "step": 7})

    assert sorted(e.path for e in manifest.files) == sorted(SIZES)
    assert manifest.transfer is not None and manifest.transfer.transferred_files == len(SIZES)
    assert any_store.is_complete("adapter")

    fetched = any_store.download_dir("adapter", tmp_path / "dst")
    for relative in SIZES:
        assert (tmp_path / "dst" / relative).read_bytes() == (source / relative).read_bytes()
    assert fetched.metadata == {"kind": "adapter", "step": 7}
    assert fetched.files == manifest.files
    # The local copy carries its manifest too, written last; no temporary files are left behind.
    assert json.loads((tmp_path / "dst" / MANIFEST_NAME).read_text())["format"] == "kubepeft.dev/manifest/v1"
    assert sorted(p.name for p in (tmp_path / "dst").rglob("*") if p.is_file()) == sorted(
        [Path(r).name for r in SIZES] + [MANIFEST_NAME]
    )
    assert any_store.verify("adapter").files == manifest.files


def test_manifest_lists_size_and_sha256(any_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"a": 10, "b/c": 2000})
    any_store.upload_dir(source, "set", metadata={"kind": "checkpoint"})
    manifest = any_store.read_manifest("set")
    assert manifest is not None
    assert manifest.entry("b/c") == FileEntry("b/c", 2000, sha256_file(source / "b" / "c"))
    assert manifest.created.endswith("Z")


def test_prefix_without_manifest_is_incomplete_and_never_downloaded(any_store: Store, tmp_path: Path) -> None:
    any_store.put_bytes("partial/weights.bin", b"half a checkpoint")
    assert any_store.exists("partial/weights.bin")
    assert not any_store.is_complete("partial")
    assert any_store.read_manifest("partial") is None
    with pytest.raises(IncompleteError, match=r"no manifest\.json"):
        any_store.download_dir("partial", tmp_path / "dst")
    with pytest.raises(IncompleteError):
        any_store.verify("partial")
    assert not (tmp_path / "dst" / "weights.bin").exists()


def test_reupload_skips_identical_files_and_sends_changed_ones(any_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"same.bin": 4096, "changed.bin": 4096, "grown.bin": 10})
    any_store.upload_dir(source, "set", metadata={})
    (source / "changed.bin").write_bytes(b"x" * 4096)  # same size, different content
    (source / "grown.bin").write_bytes(b"y" * 11)
    (source / "new.bin").write_bytes(b"z")

    manifest = any_store.upload_dir(source, "set", metadata={})
    assert manifest.transfer is not None
    assert (manifest.transfer.transferred_files, manifest.transfer.skipped_files) == (3, 1)
    assert manifest.transfer.skipped_bytes == 4096
    any_store.download_dir("set", tmp_path / "dst")
    assert (tmp_path / "dst" / "changed.bin").read_bytes() == b"x" * 4096
    assert (tmp_path / "dst" / "new.bin").read_bytes() == b"z"


def test_download_skips_files_already_present_locally(any_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"a": 5000, "b": 6000})
    any_store.upload_dir(source, "set", metadata={})
    any_store.download_dir("set", tmp_path / "dst")
    (tmp_path / "dst" / "b").write_bytes(b"tampered locally")
    manifest = any_store.download_dir("set", tmp_path / "dst")
    assert manifest.transfer is not None
    assert (manifest.transfer.transferred_files, manifest.transfer.skipped_files) == (1, 1)
    assert (tmp_path / "dst" / "b").read_bytes() == (source / "b").read_bytes()


def test_corrupted_object_fails_verification_naming_the_file(any_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"good.bin": 1000, "model/bad.bin": 1000})
    any_store.upload_dir(source, "set", metadata={})
    # Same size, one flipped byte: only a content hash notices.
    corrupted = bytearray((source / "model" / "bad.bin").read_bytes())
    corrupted[500] ^= 0xFF
    any_store.put_bytes("set/model/bad.bin", bytes(corrupted))

    with pytest.raises(IntegrityError, match=r"model/bad\.bin: sha256") as caught:
        any_store.download_dir("set", tmp_path / "dst")
    assert "good.bin" not in str(caught.value)
    assert not (tmp_path / "dst" / "model" / "bad.bin").exists()  # never lands under its real name
    with pytest.raises(IntegrityError, match=r"model/bad\.bin"):
        any_store.verify("set")
    # Without verification the bytes come through as stored (the caller asked for that).
    any_store.download_dir("set", tmp_path / "raw", verify=False)
    assert (tmp_path / "raw" / "model" / "bad.bin").read_bytes() == bytes(corrupted)


def test_missing_object_fails_verification(any_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"a": 10, "b": 10})
    any_store.upload_dir(source, "set", metadata={})
    any_store.delete_prefix("set")
    any_store.upload_dir(make_tree(tmp_path / "src2", {"a": 10}), "set", metadata={})
    entries = [FileEntry("a", 10, sha256_file(tmp_path / "src2" / "a")), FileEntry("b", 10, "0" * 64)]
    write_manifest(any_store, "set", entries, {"kind": "test"})
    with pytest.raises(IntegrityError, match="b: missing"):
        any_store.verify("set")


def test_job_manifest_covers_several_sub_prefixes(any_store: Store, tmp_path: Path) -> None:
    adapter = any_store.upload_dir(make_tree(tmp_path / "a", {"adapter.safetensors": 3000}), "adapter", metadata={})
    merged = any_store.upload_dir(make_tree(tmp_path / "m", {"model.safetensors": 5000}), "merged", metadata={})
    job = write_manifest(
        any_store, "", adapter.prefixed("adapter") + merged.prefixed("merged"), {"kind": "job", "job": "ns/job"}
    )
    assert [e.path for e in job.files] == ["adapter/adapter.safetensors", "merged/model.safetensors"]
    assert any_store.verify("").metadata["kind"] == "job"
    fetched = any_store.download_dir("", tmp_path / "everything")
    assert (tmp_path / "everything" / "merged" / "model.safetensors").stat().st_size == 5000
    assert fetched.total_bytes == 8000


def test_bytes_files_listing_and_deletion(any_store: Store, tmp_path: Path) -> None:
    any_store.put_bytes("checkpoints/step-1/x", b"1")
    any_store.put_bytes("checkpoints/step-2/y", b"2")
    any_store.put_bytes("checkpoints/step-22/z", b"3")
    any_store.put_bytes("checkpoints/loose-file", b"4")
    assert [p.rsplit("/", 1)[-1] for p in any_store.list_prefixes("checkpoints")] == ["step-1", "step-2", "step-22"]
    assert any_store.get_bytes("checkpoints/step-2/y") == b"2"

    any_store.delete_prefix("checkpoints/step-2")
    # Deleting step-2 must not touch step-22, which shares its name as a string prefix.
    assert [p.rsplit("/", 1)[-1] for p in any_store.list_prefixes("checkpoints")] == ["step-1", "step-22"]
    assert any_store.get_bytes("checkpoints/step-22/z") == b"3"
    with pytest.raises(NotFoundError):
        any_store.get_bytes("checkpoints/step-2/y")

    (tmp_path / "f.bin").write_bytes(b"payload" * 1000)
    entry = any_store.upload_file(tmp_path / "f.bin", "single/f.bin")
    assert entry.size == 7000
    any_store.download_file("single/f.bin", tmp_path / "back" / "f.bin")
    assert (tmp_path / "back" / "f.bin").read_bytes() == b"payload" * 1000


def test_absolute_and_relative_uris_address_the_same_object(any_store: Store) -> None:
    any_store.put_bytes("dir/obj", b"data")
    absolute = any_store.resolve("dir/obj")
    assert absolute == any_store.root + "/dir/obj"
    assert any_store.get_bytes(absolute) == b"data"
    with pytest.raises(PermanentStorageError, match="relative path"):
        any_store.resolve("../escape")
