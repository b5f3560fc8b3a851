"""``open_store``: pick the backend from the root URI; ``open_store_for``: the same, for a location
described by an object (the job's output, one input source, the trainer config's output paths)."""

from __future__ import annotations

import os
from typing import Protocol

from kubepeft.storage.client import TransferTuning, credentials_in
from kubepeft.storage.errors import PermanentStorageError
from kubepeft.storage.local_store import LocalStore
from kubepeft.storage.s3_store import S3Store
from kubepeft.storage.store import Store
from kubepeft.storage.uri import is_s3, parse_s3


class StoreAccess(Protocol):
    """How an S3 location is reached: what ``OutputSpec``, ``kubepeft.sources.Source`` and the
    trainer config's ``StoragePaths`` all carry."""

    @property
    def endpoint(self) -> str | None: ...

    @property
    def region(self) -> str: ...

    @property
    def force_path_style(self) -> bool: ...


def open_store(
    root_uri: str,
    *,
    endpoint: str | None = None,
    region: str = "us-east-1",
    force_path_style: bool = True,
    credentials_dir: str | os.PathLike[str] | None = None,
    tuning: TransferTuning | None = None,
) -> Store:
    """A :class:`Store` rooted at ``s3://bucket/prefix`` or an absolute local path.

    S3 credentials: the files in ``credentials_dir`` when given and not empty, else the standard
    AWS chain.
    ``tuning`` defaults to this process's (:meth:`TransferTuning.of_process`).
    """
    if is_s3(root_uri):
        parse_s3(root_uri)
        credentials = credentials_in(credentials_dir) if credentials_dir else None
        return S3Store(
            root_uri,
            endpoint=endpoint,
            region=region,
            force_path_style=force_path_style,
            credentials=credentials,
            tuning=tuning or TransferTuning.of_process(),
        )
    if root_uri.startswith("/"):
        return LocalStore(os.path.normpath(root_uri))
    raise PermanentStorageError(
        f"storage root must be s3://bucket/prefix or an absolute path, got {root_uri!r}",
        uri=root_uri,
        code="InvalidURI",
    )


def open_store_for(
    uri: str,
    access: StoreAccess,
    *,
    credentials_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
) -> Store:
    """A store at ``uri`` reached as ``access`` says; ``endpoint`` replaces its endpoint when given
    (the operator's default endpoint, a local run's server)."""
    return open_store(
        uri,
        endpoint=endpoint or access.endpoint,
        region=access.region,
        force_path_style=access.force_path_style,
        credentials_dir=credentials_dir,
    )
