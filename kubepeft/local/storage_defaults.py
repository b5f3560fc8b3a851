"""Where a local run's storage is: the job's own endpoint, a flag, or the embedded S3 server.

Rule (pure, :func:`plan_storage`): when the job reads or writes ``s3://`` and neither the job
(``output.endpoint``) nor ``--endpoint`` names a server, the run starts the embedded SeaweedFS
with a persistent data directory under the workdir (``<workdir>/s3``), and every S3 source and the
output use its credentials folder. A job whose URIs are all local absolute paths needs no server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubepeft.api.models import PeftJobSpec

S3_DATA_DIR = "s3"
# Names under which the trainer config lists credential folders: the operator's mount names.
CREDENTIAL_SOURCES = ("model", "dataset", "output")


def job_uris(spec: PeftJobSpec) -> list[str]:
    """Every storage URI a job touches."""
    uris = [spec.model.uri, spec.output.uri]
    if spec.dataset is not None:
        uris.append(spec.dataset.uri)
    if spec.adapters is not None:
        uris.extend(source.uri for source in spec.adapters.sources)
    return uris


def uses_s3(spec: PeftJobSpec) -> bool:
    return any(uri.startswith("s3://") for uri in job_uris(spec))


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
    if chosen or not uses_s3(spec):
        return StoragePlan(embedded=False, endpoint=chosen, credentials_dir=credentials_dir)
    # The embedded server only knows its own generated keys: a --credentials-dir cannot apply.
    data_dir = workdir / S3_DATA_DIR
    return StoragePlan(embedded=True, endpoint=None, credentials_dir=None, embedded_data_dir=data_dir)


def credentials_dirs(spec: PeftJobSpec, credentials_dir: Path | None) -> dict[str, str]:
    """The trainer config's ``credentials_dirs``, as the operator fills it: one entry per remote
    source (model, dataset, output); locally they all read the one folder. Local paths need none."""
    if credentials_dir is None:
        return {}
    uris = {"model": spec.model.uri, "dataset": spec.dataset.uri if spec.dataset else None, "output": spec.output.uri}
    return {
        source: str(credentials_dir)
        for source in CREDENTIAL_SOURCES
        if (uri := uris[source]) is not None and not uri.startswith("/")
    }


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
    return uri[len("s3://") :].split("/", 1)[0] if uri.startswith("s3://") else None
