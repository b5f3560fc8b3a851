"""The manifest: the commit marker of an artifact set.

``<prefix>/manifest.json`` lists every file of the set with its size and sha256, plus metadata
saying what produced it. It is written last; a prefix without it is incomplete and never read as
a result. Paths in the manifest are relative to the manifest's folder, so one manifest may cover
files in several sub-prefixes (the job manifest lists ``adapter/...`` and ``merged/...``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubepeft.storage.errors import IntegrityError
from kubepeft.storage.uri import check_relative

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "kubepeft.dev/manifest/v1"
HASH_CHUNK = 8 * 1024 * 1024


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
    files: list[FileEntry]
    metadata: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: utc_now())
    format: str = MANIFEST_FORMAT
    # Not serialised: filled in by the transfer that produced or fetched this manifest.
    transfer: TransferStats | None = field(default=None, compare=False, repr=False)

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
        try:
            document = json.loads(text)
            fmt = document["format"]
            if not isinstance(fmt, str) or not fmt.startswith("kubepeft.dev/manifest/"):
                raise ValueError(f"unknown manifest format {fmt!r}")
            if fmt != MANIFEST_FORMAT:
                raise ValueError(f"unsupported manifest format {fmt!r} (this version reads {MANIFEST_FORMAT})")
            files = [
                FileEntry(path=check_relative(str(f["path"])), size=int(f["size"]), sha256=str(f["sha256"]).lower())
                for f in document["files"]
            ]
            return cls(files=files, metadata=dict(document.get("metadata", {})), created=str(document["created"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"invalid manifest: {exc}", code="InvalidManifest") from exc

    def prefixed(self, prefix: str) -> list[FileEntry]:
        """This manifest's entries as seen from the parent folder (``prefix/path``)."""
        prefix = check_relative(prefix)
        return [FileEntry(f"{prefix}/{e.path}" if prefix else e.path, e.size, e.sha256) for e in self.files]


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


PART_SUFFIX = ".kubepeft-part"
