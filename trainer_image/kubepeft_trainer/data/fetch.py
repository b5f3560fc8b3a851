"""Bring a dataset to the local disk: an S3 object or verified prefix, a hub snapshot, or a path."""

from __future__ import annotations

from pathlib import Path

from kubepeft.api.models import DatasetSpec
from kubepeft_trainer.sources import (
    StorageAccess,
    download_s3_object,
    download_s3_prefix,
    local_path,
    parse_hf_uri,
    read_hf_token,
    snapshot_from_hub,
)


def fetch_dataset(
    ds: DatasetSpec,
    workdir: Path,
    *,
    credentials_dir: str | None = None,
    endpoint: str | None = None,
    region: str = "us-east-1",
    force_path_style: bool = True,
) -> Path:
    """A local file or folder with the dataset.

    ``s3://…/data.jsonl`` naming one object is fetched as a file (a single object is its own unit);
    any other ``s3://`` URI is a prefix and must carry a manifest (verified file by file). ``hf://``
    datasets are snapshotted from the hub (token from the credentials folder) and read by
    :func:`~kubepeft_trainer.data.records.load_records` with ``datasets``.
    """
    uri = ds.uri
    workdir = Path(workdir)
    if uri.startswith("s3://"):
        access = StorageAccess(credentials_dir, endpoint, region, force_path_style)
        store = access.open_store(uri)
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if not uri.endswith("/") and store.exists(uri):
            return download_s3_object(uri, workdir / "dataset" / name, access)
        return download_s3_prefix(uri, workdir / "dataset", access, what="dataset")
    if uri.startswith("hf://"):
        ref = parse_hf_uri(uri, ds.revision)
        return snapshot_from_hub(ref, workdir, repo_type="dataset", token=read_hf_token(credentials_dir))
    return local_path(uri, what="dataset", want_dir=False)
