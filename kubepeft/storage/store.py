"""The Store: one API for S3 prefixes and local folders.

Subclasses (:mod:`.s3_store`, :mod:`.local_store`) implement a handful of primitive operations on
absolute URIs; everything with semantics -- manifests written last, resumable uploads, verified
downloads -- lives here once, so both backends behave the same.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepeft.storage.errors import (
    IncompleteError,
    IntegrityError,
    NotFoundError,
    PermanentStorageError,
    StorageError,
    classify,
)
from kubepeft.storage.manifest import (
    MANIFEST_NAME,
    PART_SUFFIX,
    FileEntry,
    Manifest,
    TransferStats,
    local_destination,
    scan_dir,
    sha256_file,
)
from kubepeft.storage.uri import join, resolve

log = logging.getLogger("kubepeft.storage")
PREFLIGHT_PREFIX = ".kubepeft-preflight-"


@dataclass(frozen=True)
class UploadItem:
    local_path: Path
    uri: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DownloadItem:
    uri: str
    local_path: Path
    size: int


class Store(ABC):
    """Artifact storage rooted at ``root`` (``s3://bucket/prefix`` or an absolute path).

    Every method takes a URI that is either absolute (``s3://...``, ``/...``) or relative to
    ``root``. Nothing is a result until its ``manifest.json`` exists.
    """

    def __init__(self, root: str, *, hash_workers: int = 4) -> None:
        self.root = root.rstrip("/") or "/"
        self._hash_workers = hash_workers

    # --- primitives (absolute URIs) -------------------------------------------------------

    @abstractmethod
    def _check_uri(self, uri: str) -> None:
        """Reject URIs of the other backend."""

    @abstractmethod
    def _remote_sha256(self, uri: str, size: int) -> str | None:
        """The sha256 of the object at ``uri`` if it exists with exactly ``size`` bytes, else None."""

    @abstractmethod
    def _put_files(self, items: Sequence[UploadItem]) -> None:
        """Upload in parallel; each object records its sha256 where the backend can."""

    @abstractmethod
    def _get_files(self, items: Sequence[DownloadItem]) -> None:
        """Download in parallel to exactly the given local paths."""

    @abstractmethod
    def _put_bytes(self, uri: str, data: bytes) -> None: ...

    @abstractmethod
    def _get_bytes(self, uri: str) -> bytes:
        """Raises :class:`NotFoundError` when absent."""

    @abstractmethod
    def _hash_objects(self, uris: Sequence[str]) -> list[tuple[int, str] | None]:
        """(size, sha256) of each object computed from its content; None when absent."""

    @abstractmethod
    def _exists(self, uri: str) -> bool: ...

    @abstractmethod
    def _list_prefixes(self, uri: str) -> list[str]:
        """Absolute URIs of the direct child "folders" of ``uri``."""

    @abstractmethod
    def _delete_prefix(self, uri: str) -> None: ...

    @abstractmethod
    def _delete(self, uri: str) -> None:
        """Delete one object; absent is fine."""

    @abstractmethod
    def _abort_incomplete(self, uri: str) -> int:
        """Discard unfinished uploads under ``uri`` (multipart uploads, temporary files)."""

    _secrets: list[str] = []

    # --- public API -------------------------------------------------------------------------

    def resolve(self, uri: str) -> str:
        """The absolute URI for ``uri`` (absolute as is, otherwise relative to the root)."""
        absolute = resolve(self.root, uri)
        self._check_uri(absolute)
        return absolute

    def _guard(self, action: str, uri: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:  # every backend failure leaves as a classified StorageError
            raise classify(exc, action=action, uri=uri, secrets=self._secrets) from None

    def upload_dir(self, local_dir: str | os.PathLike[str], uri: str, *, metadata: dict[str, Any]) -> Manifest:
        """Upload every file under ``local_dir`` to ``uri``, then write ``uri/manifest.json`` last.

        Resumable: a file whose object already exists with the same size and sha256 (recorded as
        object metadata at upload, so this works without a manifest after a crash) is skipped.
        An existing manifest is removed first, so the prefix reads as incomplete while it changes.
        """
        target = self.resolve(uri)
        source = Path(local_dir)
        if not source.is_dir():
            raise PermanentStorageError(
                f"upload {target}: {source} is not a directory", uri=target, code="NotADirectory"
            )
        started = time.monotonic()
        files = self._guard("list", str(source), lambda: scan_dir(source))
        manifest_uri = join(target, MANIFEST_NAME)
        self._guard("delete", manifest_uri, lambda: self._delete(manifest_uri))

        def prepare(item: tuple[Path, str]) -> tuple[FileEntry, UploadItem | None]:
            path, relative = item
            size, digest = self._guard("read", str(path), lambda: (path.stat().st_size, sha256_file(path)))
            object_uri = join(target, relative)
            entry = FileEntry(relative, size, digest)
            present = self._guard("inspect", object_uri, lambda: self._remote_sha256(object_uri, size))
            return entry, (None if present == digest else UploadItem(path, object_uri, size, digest))

        with ThreadPoolExecutor(max_workers=max(1, min(self._hash_workers, len(files)))) as pool:
            prepared = list(pool.map(prepare, files))
        entries = [entry for entry, _ in prepared]
        todo = [item for _, item in prepared if item is not None]
        try:
            self._guard("upload", target, lambda: self._put_files(todo))
        except StorageError:
            self._sweep_after_failure(target)
            raise

        manifest = Manifest(files=entries, metadata=dict(metadata))
        self._guard("write manifest", manifest_uri, lambda: self._put_bytes(manifest_uri, manifest.to_json().encode()))
        uploaded_bytes = sum(item.size for item in todo)
        manifest.transfer = TransferStats(
            transferred_files=len(todo),
            transferred_bytes=uploaded_bytes,
            skipped_files=len(entries) - len(todo),
            skipped_bytes=manifest.total_bytes - uploaded_bytes,
            seconds=time.monotonic() - started,
        )
        log.info(
            "uploaded %s: %d files (%d bytes) sent, %d files (%d bytes) already present, %.1fs",
            target,
            manifest.transfer.transferred_files,
            manifest.transfer.transferred_bytes,
            manifest.transfer.skipped_files,
            manifest.transfer.skipped_bytes,
            manifest.transfer.seconds,
        )
        return manifest

    def download_dir(self, uri: str, local_dir: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
        """Download the artifact set at ``uri`` into ``local_dir`` as its manifest lists it.

        Refuses a prefix without a manifest. Each file lands under a temporary name and is
        renamed into place only after its sha256 matched (with ``verify``); files already present
        locally with the right size and sha256 are kept. The manifest is written locally last.
        """
        source = self.resolve(uri)
        manifest = self.read_manifest(source)
        if manifest is None:
            raise IncompleteError(f"{source} has no {MANIFEST_NAME}: the upload never completed", uri=source)
        started = time.monotonic()
        dest_root = Path(local_dir)
        self._guard("create", str(dest_root), lambda: dest_root.mkdir(parents=True, exist_ok=True))
        dests, todo = self._local_plan(manifest, dest_root)
        items = [
            DownloadItem(join(source, e.path), dests[e.path].with_name(dests[e.path].name + PART_SUFFIX), e.size)
            for e in todo
        ]

        def make_folders() -> None:
            for item in items:
                item.local_path.parent.mkdir(parents=True, exist_ok=True)

        def put_in_place() -> None:
            for entry, item in zip(todo, items, strict=True):
                os.replace(item.local_path, dests[entry.path])

        try:
            self._guard("create", str(dest_root), make_folders)
            self._guard("download", source, lambda: self._get_files(items))
            if verify:
                self._guard("verify", str(dest_root), lambda: self._verify_local(todo, items))
            self._guard("write", str(dest_root), put_in_place)
        finally:
            for item in items:
                item.local_path.unlink(missing_ok=True)
        manifest_path = dest_root / MANIFEST_NAME
        self._guard("write", str(manifest_path), lambda: _atomic_write(manifest_path, manifest.to_json().encode()))
        fetched = sum(entry.size for entry in todo)
        manifest.transfer = TransferStats(
            transferred_files=len(todo),
            transferred_bytes=fetched,
            skipped_files=len(manifest.files) - len(todo),
            skipped_bytes=manifest.total_bytes - fetched,
            seconds=time.monotonic() - started,
        )
        log.info(
            "downloaded %s: %d files (%d bytes) fetched, %d already present",
            source,
            len(todo),
            fetched,
            manifest.transfer.skipped_files,
        )
        return manifest

    def _local_plan(self, manifest: Manifest, dest_root: Path) -> tuple[dict[str, Path], list[FileEntry]]:
        """Each entry's destination -- all checked before anything is written: inside ``dest_root``,
        symlinks included -- and the entries not already there with the right size and sha256."""
        dests = {entry.path: local_destination(dest_root, entry.path) for entry in manifest.files}

        def already_local(entry: FileEntry) -> bool:
            dest = dests[entry.path]
            return dest.is_file() and dest.stat().st_size == entry.size and sha256_file(dest) == entry.sha256

        with ThreadPoolExecutor(max_workers=max(1, min(self._hash_workers, len(manifest.files)))) as pool:
            present = self._guard("inspect", str(dest_root), lambda: list(pool.map(already_local, manifest.files)))
        return dests, [entry for entry, ok in zip(manifest.files, present, strict=True) if not ok]

    def _verify_local(self, entries: Sequence[FileEntry], items: Sequence[DownloadItem]) -> None:
        def check(pair: tuple[FileEntry, DownloadItem]) -> str | None:
            entry, item = pair
            size = item.local_path.stat().st_size
            if size != entry.size:
                return f"{entry.path}: size {size} != {entry.size}"
            digest = sha256_file(item.local_path)
            return None if digest == entry.sha256 else f"{entry.path}: sha256 {digest} != {entry.sha256}"

        with ThreadPoolExecutor(max_workers=max(1, min(self._hash_workers, len(entries)))) as pool:
            problems = [p for p in pool.map(check, zip(entries, items, strict=True)) if p]
        if problems:
            raise IntegrityError("integrity check failed: " + "; ".join(problems), uri=items[0].uri)

    def verify(self, uri: str) -> Manifest:
        """Check every file of the set at ``uri`` against its manifest, reading the stored bytes.

        Raises :class:`IncompleteError` without a manifest and :class:`IntegrityError` naming every
        missing or mismatching file.
        """
        source = self.resolve(uri)
        manifest = self.read_manifest(source)
        if manifest is None:
            raise IncompleteError(f"{source} has no {MANIFEST_NAME}: the upload never completed", uri=source)
        uris = [join(source, entry.path) for entry in manifest.files]
        results = self._guard("verify", source, lambda: self._hash_objects(uris))
        problems = []
        for entry, found in zip(manifest.files, results, strict=True):
            if found is None:
                problems.append(f"{entry.path}: missing")
            elif found[0] != entry.size:
                problems.append(f"{entry.path}: size {found[0]} != {entry.size}")
            elif found[1] != entry.sha256:
                problems.append(f"{entry.path}: sha256 {found[1]} != {entry.sha256}")
        if problems:
            raise IntegrityError(f"{source} does not match its manifest: " + "; ".join(problems), uri=source)
        return manifest

    def read_manifest(self, uri: str) -> Manifest | None:
        """The manifest of the set at ``uri`` (a prefix, or the manifest's own URI); None if absent."""
        source = self.resolve(uri)
        manifest_uri = source if source.endswith("/" + MANIFEST_NAME) else join(source, MANIFEST_NAME)
        try:
            data = self._guard("read", manifest_uri, lambda: self._get_bytes(manifest_uri))
        except NotFoundError:
            return None
        return Manifest.from_json(data)

    def is_complete(self, uri: str) -> bool:
        """Whether the set at ``uri`` has a (parseable) manifest."""
        return self.read_manifest(uri) is not None

    def write_manifest(self, uri: str, manifest: Manifest) -> str:
        """Write ``manifest`` as ``uri/manifest.json``; returns its URI. Call after the files exist."""
        manifest_uri = join(self.resolve(uri), MANIFEST_NAME)
        self._guard("write manifest", manifest_uri, lambda: self._put_bytes(manifest_uri, manifest.to_json().encode()))
        return manifest_uri

    def upload_file(self, local_path: str | os.PathLike[str], uri: str) -> FileEntry:
        """Upload one file (multipart when large); returns its size and sha256."""
        target = self.resolve(uri)
        path = Path(local_path)
        size = self._guard("stat", str(path), lambda: path.stat().st_size)
        digest = self._guard("read", str(path), lambda: sha256_file(path))
        self._guard("upload", target, lambda: self._put_files([UploadItem(path, target, size, digest)]))
        return FileEntry(path.name, size, digest)

    def download_file(self, uri: str, local_path: str | os.PathLike[str]) -> None:
        """Download one object (ranged, parallel when large); the file appears atomically."""
        source = self.resolve(uri)
        dest = Path(local_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        try:
            self._guard("download", source, lambda: self._get_files([DownloadItem(source, part, -1)]))
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def put_bytes(self, uri: str, data: bytes) -> None:
        target = self.resolve(uri)
        self._guard("write", target, lambda: self._put_bytes(target, data))

    def get_bytes(self, uri: str) -> bytes:
        source = self.resolve(uri)
        data: bytes = self._guard("read", source, lambda: self._get_bytes(source))
        return data

    def exists(self, uri: str) -> bool:
        """Whether one object (not a prefix) exists."""
        target = self.resolve(uri)
        return bool(self._guard("inspect", target, lambda: self._exists(target)))

    def list_prefixes(self, uri: str) -> list[str]:
        """Absolute URIs of the direct child folders of ``uri``, sorted."""
        target = self.resolve(uri)
        return sorted(self._guard("list", target, lambda: self._list_prefixes(target)))

    def check_writable(self, uri: str = "") -> None:
        """Preflight: write and delete a probe object under ``uri`` (default: the root).

        A read-only output, a missing bucket or wrong credentials then fail at once, as a
        classified error naming the output, instead of after hours of training."""
        target = self.resolve(uri or self.root)
        probe = join(target, f"{PREFLIGHT_PREFIX}{uuid.uuid4().hex}")
        try:
            self._guard("write", probe, lambda: self._put_bytes(probe, b"kubepeft preflight\n"))
            self._guard("delete", probe, lambda: self._delete(probe))
        except StorageError as error:
            raise type(error)(f"output {target} is not writable: {error}", uri=error.uri, code=error.code) from None

    def abort_incomplete_uploads(self, uri: str = "") -> int:
        """Discard unfinished uploads under ``uri`` (default: the root): multipart uploads of a
        process that was killed mid-transfer keep their parts (and their cost) until aborted.
        Returns how many were discarded."""
        target = self.resolve(uri or self.root)
        count: int = self._guard("abort uploads", target, lambda: self._abort_incomplete(target))
        if count:
            log.info("aborted %d unfinished upload(s) under %s", count, target)
        return count

    def _sweep_after_failure(self, target: str) -> None:
        """Best effort after a failed upload: the failure may also have prevented the transfer
        library's own abort of its multipart uploads."""
        try:
            self.abort_incomplete_uploads(target)
        except StorageError as error:
            log.warning("could not abort unfinished uploads under %s: %s", target, error)

    def delete_prefix(self, uri: str) -> None:
        """Delete everything under ``uri/`` (its manifest first, so it never looks complete-but-partial)."""
        target = self.resolve(uri)
        manifest_uri = join(target, MANIFEST_NAME)
        self._guard("delete", manifest_uri, lambda: self._delete(manifest_uri))
        self._guard("delete", target, lambda: self._delete_prefix(target))


def write_manifest(store: Store, uri: str, files: Iterable[FileEntry], metadata: dict[str, Any]) -> Manifest:
    """Write a manifest covering files that already exist under ``uri`` (possibly in several
    sub-prefixes, paths relative to ``uri``), e.g. the job manifest over ``adapter/`` and ``merged/``::

        entries = adapter_manifest.prefixed("adapter") + merged_manifest.prefixed("merged")
        write_manifest(store, job_root, entries, {"kind": "job", ...})
    """
    manifest = Manifest(files=list(files), metadata=dict(metadata))
    store.write_manifest(uri, manifest)
    return manifest


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, rename: readers see the old file or the new one."""
    tmp = path.with_name(path.name + PART_SUFFIX)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
