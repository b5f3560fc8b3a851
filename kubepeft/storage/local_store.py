"""Local-folder backend (a mounted volume): same semantics as S3, atomic writes via rename."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from kubepeft.storage.errors import NotFoundError, PermanentStorageError
from kubepeft.storage.manifest import PART_SUFFIX, sha256_file
from kubepeft.storage.store import DownloadItem, Store, UploadItem

COPY_BUFFER = 8 * 1024 * 1024
T = TypeVar("T")


class LocalStore(Store):
    def __init__(self, root: str, *, concurrency: int = 4) -> None:
        super().__init__(root)
        self.concurrency = concurrency

    def __repr__(self) -> str:
        return f"LocalStore(root={self.root!r})"

    def _check_uri(self, uri: str) -> None:
        if not uri.startswith("/"):
            raise PermanentStorageError(f"a local store cannot address {uri!r}", uri=uri, code="InvalidURI")

    def _parallel(self, fn: Callable[[T], None], items: Sequence[T]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(items)))) as pool:
            for _ in pool.map(fn, items):
                pass

    def _remote_sha256(self, uri: str, size: int) -> str | None:
        path = Path(uri)
        if not path.is_file() or path.stat().st_size != size:
            return None
        return sha256_file(path)  # local reads are cheap: hash instead of storing metadata

    def _put_files(self, items: Sequence[UploadItem]) -> None:
        def copy(item: UploadItem) -> None:
            with open(item.local_path, "rb") as source:
                _write_atomically(Path(item.uri), lambda out: shutil.copyfileobj(source, out, COPY_BUFFER))

        self._parallel(copy, items)

    def _get_files(self, items: Sequence[DownloadItem]) -> None:
        def copy(item: DownloadItem) -> None:
            try:
                _require_regular_file(item.uri, "download")
                shutil.copyfile(item.uri, item.local_path)
            except FileNotFoundError:
                raise NotFoundError(f"download {item.uri} failed: not found", uri=item.uri) from None

        self._parallel(copy, items)

    def _put_bytes(self, uri: str, data: bytes) -> None:
        _write_atomically(Path(uri), lambda out: out.write(data))

    def _get_bytes(self, uri: str) -> bytes:
        try:
            _require_regular_file(uri, "read")
            return Path(uri).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"read {uri} failed: not found", uri=uri) from None

    def _hash_objects(self, uris: Sequence[str]) -> list[tuple[int, str] | None]:
        def measure(uri: str) -> tuple[int, str] | None:
            path = Path(uri)
            return (path.stat().st_size, sha256_file(path)) if path.is_file() else None

        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(uris)))) as pool:
            return list(pool.map(measure, uris))

    def _exists(self, uri: str) -> bool:
        return Path(uri).is_file()

    def _list_prefixes(self, uri: str) -> list[str]:
        path = Path(uri)
        if not path.is_dir():
            return []
        return [str(child) for child in path.iterdir() if child.is_dir()]

    def _delete_prefix(self, uri: str) -> None:
        path = Path(uri)
        if path == Path(path.anchor):
            raise PermanentStorageError(f"refusing to delete {uri}", uri=uri, code="InvalidURI")
        if path.is_dir():
            shutil.rmtree(path)

    def _delete(self, uri: str) -> None:
        Path(uri).unlink(missing_ok=True)

    def _abort_incomplete(self, uri: str) -> int:
        """The temporary files of writes that never reached their rename (a killed process)."""
        root = Path(uri)
        leftovers = [p for p in root.rglob(f".*{PART_SUFFIX}") if p.is_file()] if root.is_dir() else []
        for path in leftovers:
            path.unlink(missing_ok=True)
        return len(leftovers)


def _require_regular_file(uri: str, action: str) -> None:
    """An object of a local store is a regular file: a planted symlink to /dev/zero or a FIFO
    would otherwise be read (or copied) forever."""
    if not stat.S_ISREG(os.stat(uri).st_mode):
        raise PermanentStorageError(f"{action} {uri} failed: not a regular file", uri=uri, code="NotARegularFile")


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
