"""Where a local run's storage is: the job's own endpoint, a flag, or the embedded S3 server.

Rule (pure, :func:`plan_storage`): when an ``s3://`` source without an endpoint of its own (or an
``s3://`` output) is in the job and neither the job (``output.endpoint``) nor ``--endpoint`` names
a server, the run starts the embedded SeaweedFS with a persistent data directory under the workdir
(``<workdir>/s3``), and those sources and the output use its credentials folder. A source naming its
own endpoint is read from there (with its own ``--credentials`` folder, or the standard AWS chain).
A job whose URIs are all local paths or volumes needs no server.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubepeft.api.models import PeftJobSpec
from kubepeft.local.access import on_default_endpoint
from kubepeft.sources import OUTPUT, Source, is_remote, job_sources
from kubepeft.storage.uri import S3_SCHEME, is_s3

S3_DATA_DIR = "s3"


def uses_default_s3(spec: PeftJobSpec) -> bool:
    """Some ``s3://`` source or the output is on the run's default endpoint."""
    return any(on_default_endpoint(source) for source in job_sources(spec))


@dataclass(frozen=True)
class StoragePlan:
    """``embedded``: start the embedded server and use its endpoint and credentials."""

    embedded: bool
    endpoint: str | None
    credentials_dir: Path | None
    embedded_data_dir: Path | None = None


def plan_storage(
    spec: PeftJobSpec, *, workdir: Path, endpoint: str | None, credentials_dir: Path | None
) -> StoragePlan:
    """Pure: which server and credentials a local run uses."""
    chosen = endpoint or spec.output.endpoint
    if chosen or not uses_default_s3(spec):
        return StoragePlan(embedded=False, endpoint=chosen, credentials_dir=credentials_dir)
    # The embedded server only knows its own generated keys: a --credentials-dir cannot apply.
    data_dir = workdir / S3_DATA_DIR
    return StoragePlan(embedded=True, endpoint=None, credentials_dir=None, embedded_data_dir=data_dir)


def _folder_for(source: Source, credentials_dir: Path | None, own: Mapping[str, Path]) -> Path | None:
    if source.name in own:
        return own[source.name]
    if source.scheme == "s3" and source.own_endpoint:
        return None  # as in the operator: a source on another endpoint gets none of the output's keys
    if source.scheme == "s3" and OUTPUT in own:
        return own[OUTPUT]  # as in the operator: an S3 input on the output's endpoint uses the output's keys
    return credentials_dir


def credentials_dirs(
    spec: PeftJobSpec, credentials_dir: Path | None, own: Mapping[str, Path] | None = None
) -> dict[str, str]:
    """The trainer config's ``credentials_dirs``, named as the operator names its mounts (one entry
    per remote source, from :func:`kubepeft.sources.job_sources`): a source's own ``--credentials``
    folder, else the run's one folder (``credentials_dir``) for sources on the default endpoint and
    hub sources. Local paths and volumes need none."""
    folders = {}
    for source in job_sources(spec):
        folder = _folder_for(source, credentials_dir, own or {})
        if folder is not None and is_remote(source.uri):
            folders[source.name] = str(folder)
    return folders


@dataclass(frozen=True)
class ResolvedStorage:
    endpoint: str | None
    credentials_dir: Path | None
    embedded: bool


@contextmanager
def storage_for(plan: StoragePlan, *, create_buckets: tuple[str, ...] = ()) -> Iterator[ResolvedStorage]:
    """The storage of a run; starts (and finally stops) the embedded server when the plan says so,
    creating ``create_buckets`` on it (the output's bucket: a fresh server has none)."""
    if not plan.embedded:
        yield ResolvedStorage(plan.endpoint, plan.credentials_dir, embedded=False)
        return
    from kubepeft.storage.seaweed import EmbeddedS3

    assert plan.embedded_data_dir is not None
    with EmbeddedS3(plan.embedded_data_dir) as server:
        for bucket in create_buckets:
            server.create_bucket(bucket)
        yield ResolvedStorage(server.endpoint, server.credentials_dir, embedded=True)


def bucket_of(uri: str) -> str | None:
    return uri[len(S3_SCHEME) :].split("/", 1)[0] if is_s3(uri) else None
