"""Storage locations: ``s3://bucket/key`` or an absolute local path; and the one scheme test for
every URI a job names (:func:`scheme_of`: ``s3``, ``hf``, ``pvc`` or ``path``).

Rule for every :class:`~kubepeft.storage.Store` method: a URI that starts with ``s3://`` or
``/`` is absolute and used as is; anything else is a path relative to the store's root
(``store.resolve("checkpoints/step-00000100")``). Relative paths may not contain ``..``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from kubepeft.storage.errors import PermanentStorageError

S3_SCHEME = "s3://"
HF_SCHEME = "hf://"
PVC_SCHEME = "pvc://"
Scheme = Literal["s3", "hf", "pvc", "path"]
_SCHEMES: tuple[tuple[str, Scheme], ...] = ((S3_SCHEME, "s3"), (HF_SCHEME, "hf"), (PVC_SCHEME, "pvc"))
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key (no leading slash; may be empty for the bucket's root)."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}" if self.key else f"{S3_SCHEME}{self.bucket}"

    def child(self, relative: str) -> S3Location:
        return S3Location(self.bucket, join_key(self.key, relative))

    @property
    def dir_prefix(self) -> str:
        """The key as a "folder" prefix for listings: ``a/b/`` (empty at the bucket root)."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""


def scheme_of(uri: str) -> Scheme:
    """The kind of location a URI names (an absolute path is ``path``)."""
    for prefix, scheme in _SCHEMES:
        if uri.startswith(prefix):
            return scheme
    return "path"


def is_s3(uri: str) -> bool:
    return scheme_of(uri) == "s3"


def is_absolute(uri: str) -> bool:
    return is_s3(uri) or uri.startswith("/")


def parse_s3(uri: str) -> S3Location:
    """``s3://bucket/a/b`` -> ``S3Location("bucket", "a/b")``; rejects malformed URIs."""
    if not is_s3(uri):
        raise PermanentStorageError(f"not an s3:// URI: {uri!r}", uri=uri, code="InvalidURI")
    rest = uri[len(S3_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise PermanentStorageError(f"invalid bucket name in {uri!r}", uri=uri, code="InvalidURI")
    key = key.strip("/")
    if any(part in (".", "..") for part in key.split("/") if key):
        raise PermanentStorageError(f"'.' and '..' are not allowed in {uri!r}", uri=uri, code="InvalidURI")
    return S3Location(bucket, re.sub("/+", "/", key))


def join_key(base: str, relative: str) -> str:
    """Join key parts with single slashes, no leading or trailing slash."""
    parts = [p for p in (base.strip("/"), relative.strip("/")) if p]
    return "/".join(parts)


def join(uri: str, *relative: str) -> str:
    """Append relative parts to an absolute URI (s3 or local)."""
    out = uri.rstrip("/") or "/"
    for part in relative:
        part = part.strip("/")
        if part:
            out = f"{out}/{part}" if out != "/" else f"/{part}"
    return out


def check_relative(path: str) -> str:
    """A clean relative path (``a/b``); rejects ``..`` segments and absolute paths."""
    norm = posixpath.normpath(path.strip("/")) if path.strip("/") else ""
    if norm == ".":
        norm = ""
    if norm.startswith("..") or path.startswith("/") or "\\" in path:
        raise PermanentStorageError(f"not a clean relative path: {path!r}", uri=path, code="InvalidURI")
    return norm


def resolve(root: str, uri: str) -> str:
    """The absolute form of ``uri`` (see the module docstring for the rule)."""
    if is_absolute(uri):
        return uri.rstrip("/") if uri != "/" else uri
    return join(root, check_relative(uri))
