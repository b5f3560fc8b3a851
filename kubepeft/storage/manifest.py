"""The manifest: the commit marker of an artifact set.

``<prefix>/manifest.json`` lists every file of the set with its size and sha256, plus metadata
saying what produced it. It is written last; a prefix without it is incomplete and never read as
a result. Paths in the manifest are relative to the manifest's folder, so one manifest may cover
files in several sub-prefixes (the job manifest lists ``adapter/...`` and ``merged/...``).

A manifest read from storage is input like any other: every entry must be a clean relative path
(not empty, no ``.``/``..``/empty segments, not absolute, no NUL or backslash, not the manifest's
own name, not a temporary ``.kubepeft-part`` name), listed once, and never both a file and a folder;
sizes are non-negative integers and digests 64 hex digits. A download writes each entry only where
:func:`local_destination` says, inside the target folder even after symlinks resolve.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubepeft.storage.errors import IntegrityError
from kubepeft.storage.uri import check_relative

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "kubepeft.dev/manifest/v1"
HASH_CHUNK = 8 * 1024 * 1024
PART_SUFFIX = ".kubepeft-part"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _invalid(message: str) -> IntegrityError:
    return IntegrityError(f"invalid manifest: {message}", code="InvalidManifest")


def entry_path_problem(path: object) -> str | None:
    """Why ``path`` cannot name a file of an artifact set, or None when it can."""
    if not isinstance(path, str):
        return f"must be a string, got {type(path).__name__}"
    if not path:
        return "empty path"
    if "\0" in path:
        return "contains a NUL character"
    if path.startswith("/"):
        return "absolute path"
    if "\\" in path:
        return "contains a backslash"
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        return "'.', '..' or an empty segment"
    if path == MANIFEST_NAME:
        return "the manifest's own name"
    if path.endswith(PART_SUFFIX):
        return f"the temporary suffix {PART_SUFFIX}"
    return None


def check_entries(entries: Iterable[FileEntry]) -> None:
    """Raise :class:`IntegrityError` unless every path is clean, listed once, and no path is both
    a file and the folder of another (a download could not create both)."""
    paths: set[str] = set()
    for entry in entries:
        problem = entry_path_problem(entry.path)
        if problem is not None:
            raise _invalid(f"entry {entry.path!r}: {problem}")
        if entry.path in paths:
            raise _invalid(f"entry {entry.path!r} is listed twice")
        paths.add(entry.path)
    for path in paths:
        parts = path.split("/")
        for cut in range(1, len(parts)):
            folder = "/".join(parts[:cut])
            if folder in paths:
                raise _invalid(f"entry {folder!r} is a file and the folder of {path!r}")


def local_destination(root: str | os.PathLike[str], path: str) -> Path:
    """Where the entry ``path`` of a downloaded set lands: ``root/path``, refused unless it is
    inside ``root`` once symlinks already on disk are resolved (a planted link cannot redirect it)."""
    problem = entry_path_problem(path)
    if problem is not None:
        raise _invalid(f"entry {path!r}: {problem}")
    destination = Path(root) / path
    real_root = os.path.realpath(root)
    real = os.path.realpath(destination)
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise _invalid(f"entry {path!r} resolves to {real}, outside {real_root}")
    return destination


@dataclass(frozen=True)
class FileEntry:
    """One file of an artifact set: path relative to the manifest's folder, size, sha256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class TransferStats:
    """What one upload_dir/download_dir moved and what it found already in place."""

    transferred_files: int = 0
    transferred_bytes: int = 0
    skipped_files: int = 0
    skipped_bytes: int = 0
    seconds: float = 0.0


@dataclass
class Manifest:
    """The entries of an artifact set (checked on construction, see :func:`check_entries`)."""

    files: list[FileEntry]
    metadata: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: utc_now())
    format: str = MANIFEST_FORMAT
    # Not serialised: filled in by the transfer that produced or fetched this manifest.
    transfer: TransferStats | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_entries(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def entry(self, path: str) -> FileEntry | None:
        return next((entry for entry in self.files if entry.path == path), None)

    def to_json(self) -> str:
        document = {
            "format": self.format,
            "created": self.created,
            "metadata": self.metadata,
            "files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in self.files],
        }
        return json.dumps(document, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse a stored manifest; anything malformed is an :class:`IntegrityError` (never a
        ``KeyError``, ``RecursionError`` or a NaN size), with the entry that is wrong."""
        try:
            document = json.loads(text, parse_constant=_no_constant)
            if not isinstance(document, dict):
                raise ValueError(f"expected an object, got {type(document).__name__}")
            fmt = document["format"]
            if not isinstance(fmt, str) or not fmt.startswith("kubepeft.dev/manifest/"):
                raise ValueError(f"unknown manifest format {fmt!r}")
            if fmt != MANIFEST_FORMAT:
                raise ValueError(f"unsupported manifest format {fmt!r} (this version reads {MANIFEST_FORMAT})")
            files = [_entry_from_json(item) for item in document["files"]]
            metadata = document.get("metadata", {})
            if not isinstance(metadata, dict):
                raise ValueError(f"metadata must be an object, got {type(metadata).__name__}")
            return cls(files=files, metadata=metadata, created=str(document["created"]))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise _invalid(str(exc) if not isinstance(exc, KeyError) else f"missing {exc}") from None

    def prefixed(self, prefix: str) -> list[FileEntry]:
        """This manifest's entries as seen from the parent folder (``prefix/path``)."""
        prefix = check_relative(prefix)
        return [FileEntry(f"{prefix}/{e.path}" if prefix else e.path, e.size, e.sha256) for e in self.files]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _entry_from_json(item: Any) -> FileEntry:
    if not isinstance(item, dict):
        raise ValueError(f"a file entry must be an object, got {type(item).__name__}")
    path, size, digest = item["path"], item["size"], item["sha256"]
    problem = entry_path_problem(path)
    if problem is not None:
        raise ValueError(f"entry {path!r}: {problem}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"entry {path!r}: size must be a non-negative integer, got {size!r}")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
        raise ValueError(f"entry {path!r}: sha256 must be 64 hex digits")
    return FileEntry(path=path, size=size, sha256=digest.lower())


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def scan_dir(local_dir: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """Every regular file under ``local_dir`` as (absolute path, relative posix path), sorted.

    The manifest itself and temporary ``.part`` files of an interrupted download are excluded.
    """
    root = Path(local_dir)
    out: list[tuple[Path, str]] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if relative == MANIFEST_NAME or path.name.endswith(PART_SUFFIX):
            continue
        out.append((path, relative))
    return out
