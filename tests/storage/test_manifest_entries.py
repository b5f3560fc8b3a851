"""A manifest is input too: bad entries are refused, downloads stay inside their target.

Stored manifests are written by hand here (as an attacker or a broken writer would) and read
back through the real stores (SeaweedFS S3 and a local folder).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kubepeft.storage import FileEntry, IntegrityError, Manifest, PermanentStorageError, Store, write_manifest
from kubepeft.storage.manifest import MANIFEST_FORMAT, local_destination
from tests.fixtures.s3 import make_tree

DATA = b"payload"
DIGEST = hashlib.sha256(DATA).hexdigest()


def manifest_text(*paths: Any, size: Any = len(DATA), sha256: Any = DIGEST) -> str:
    files = [{"path": path, "size": size, "sha256": sha256} for path in paths]
    return json.dumps({"format": MANIFEST_FORMAT, "created": "2026-01-01T00:00:00Z", "metadata": {}, "files": files})


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty path"),
        (".", "'.', '..' or an empty segment"),
        ("..", "'.', '..' or an empty segment"),
        ("a/../../b", "'.', '..' or an empty segment"),
        ("a/./b", "'.', '..' or an empty segment"),
        ("a//b", "'.', '..' or an empty segment"),
        ("a/", "'.', '..' or an empty segment"),
        ("/etc/passwd", "absolute path"),
        ("a\\b", "contains a backslash"),
        ("a\0b", "contains a NUL character"),
        ("manifest.json", "the manifest's own name"),
        ("w.bin.kubepeft-part", "the temporary suffix .kubepeft-part"),
        (7, "must be a string, got int"),
    ],
)
def test_bad_entry_paths_are_refused_naming_the_entry(path: Any, reason: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        Manifest.from_json(manifest_text(path))
    assert str(caught.value) == f"invalid manifest: entry {path!r}: {reason}"
    assert caught.value.code == "InvalidManifest" and not caught.value.retryable


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (manifest_text("a", "a"), "invalid manifest: entry 'a' is listed twice"),
        (manifest_text("a", "a/b"), "invalid manifest: entry 'a' is a file and the folder of 'a/b'"),
        (manifest_text("a", size=-1), "invalid manifest: entry 'a': size must be a non-negative integer, got -1"),
        (manifest_text("a", size=1.5), "invalid manifest: entry 'a': size must be a non-negative integer, got 1.5"),
        (manifest_text("a", size=True), "invalid manifest: entry 'a': size must be a non-negative integer, got True"),
        (manifest_text("a", sha256="abc"), "invalid manifest: entry 'a': sha256 must be 64 hex digits"),
        (manifest_text("a").replace('"size": 7', '"size": NaN'), "invalid manifest: NaN is not JSON"),
        ("[1, 2]", "invalid manifest: expected an object, got list"),
        ('{"format": "kubepeft.dev/manifest/v1"}', "invalid manifest: missing 'files'"),
        ('{"format": "kubepeft.dev/manifest/v1", "files": ["a"]}', "invalid manifest: a file entry must be an object"),
        ("[" * 100_000 + "]" * 100_000, "invalid manifest: maximum recursion depth exceeded"),
    ],
)
def test_malformed_manifests_are_integrity_errors(text: str, message: str) -> None:
    with pytest.raises(IntegrityError) as caught:
        Manifest.from_json(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_writers_refuse_duplicate_entries_before_writing(local_store: Store) -> None:
    entry = FileEntry("a", len(DATA), DIGEST)
    with pytest.raises(IntegrityError, match="entry 'a' is listed twice"):
        write_manifest(local_store, "set", [entry, entry], {})
    assert not local_store.is_complete("set")


def _plant(store: Store, prefix: str, text: str, *paths: str) -> None:
    for path in paths:
        store.put_bytes(f"{prefix}/{path}", DATA)
    store.put_bytes(f"{prefix}/manifest.json", text.encode())


@pytest.mark.parametrize("path", [".", "a/../../escaped", "/tmp/escaped", "x\0y", "a//b"])
def test_a_planted_manifest_cannot_write_outside_the_target(any_store: Store, tmp_path: Path, path: str) -> None:
    _plant(any_store, "set", manifest_text(path))
    target = tmp_path / "parent" / "dst"
    target.parent.mkdir()
    with pytest.raises(IntegrityError, match="invalid manifest: entry "):
        any_store.download_dir("set", target)
    # Nothing beside the target (a '.' entry used to land as a sibling temporary file).
    assert [p.name for p in target.parent.iterdir()] in ([], ["dst"])
    assert not target.exists() or list(target.iterdir()) == []


def test_a_symlink_in_the_target_cannot_redirect_a_download(any_store: Store, tmp_path: Path) -> None:
    _plant(any_store, "set", manifest_text("adapter/weights.bin"), "adapter/weights.bin")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "dst"
    target.mkdir()
    (target / "adapter").symlink_to(outside)
    with pytest.raises(IntegrityError, match=r"entry 'adapter/weights.bin' resolves to .*, outside "):
        any_store.download_dir("set", target)
    assert list(outside.iterdir()) == []


def test_duplicate_entries_in_a_stored_manifest_are_refused(any_store: Store, tmp_path: Path) -> None:
    _plant(any_store, "set", manifest_text("a", "a"), "a")
    with pytest.raises(IntegrityError, match="entry 'a' is listed twice"):
        any_store.download_dir("set", tmp_path / "dst")
    with pytest.raises(IntegrityError, match="entry 'a' is listed twice"):
        any_store.verify("set")


def test_file_system_errors_of_a_download_are_classified(local_store: Store, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"a/b.bin": 10})
    local_store.upload_dir(source, "set", metadata={})
    (tmp_path / "file").write_bytes(b"not a folder")
    with pytest.raises(PermanentStorageError) as caught:
        local_store.download_dir("set", tmp_path / "file" / "dst")
    assert str(caught.value) == f"create {tmp_path / 'file' / 'dst'} failed: Not a directory"
    assert caught.value.code in ("ENOTDIR", "EEXIST")


def test_local_destination_is_inside_the_root(tmp_path: Path) -> None:
    assert local_destination(tmp_path, "a/b") == tmp_path / "a" / "b"
    with pytest.raises(IntegrityError):
        local_destination(tmp_path, "a/../..")


@pytest.mark.timeout(60)
def test_a_local_set_with_device_files_is_refused_not_read_forever(local_store: Store, tmp_path: Path) -> None:
    root = Path(local_store.root)
    (root / "set").mkdir(parents=True)
    (root / "set" / "weights.bin").symlink_to("/dev/zero")
    (root / "set" / "manifest.json").write_text(manifest_text("weights.bin"))
    with pytest.raises(PermanentStorageError, match=r"download .*weights.bin failed: not a regular file"):
        local_store.download_dir("set", tmp_path / "dst")
    (root / "bad").mkdir()
    (root / "bad" / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(PermanentStorageError, match=r"read .*manifest.json failed: not a regular file"):
        local_store.verify("bad")
