"""Fetch an existing PEFT adapter (a starting point for training, or a merge-only input)."""

from __future__ import annotations

from pathlib import Path

from kubepeft.api.models import AdapterSource
from kubepeft_trainer.errors import PermanentTrainerError
from kubepeft_trainer.sources import (
    StorageAccess,
    download_s3_prefix,
    local_path,
    parse_hf_uri,
    read_hf_token,
    snapshot_from_hub,
)

ADAPTER_CONFIG = "adapter_config.json"


def fetch_adapter(
    source: AdapterSource,
    dest: Path,
    *,
    credentials_dir: str | None = None,
    endpoint: str | None = None,
    region: str = "us-east-1",
    force_path_style: bool = True,
) -> Path:
    """A local folder in PEFT's layout: a verified S3 prefix (downloaded into ``dest``), a hub
    snapshot, or a mounted path used in place. A folder without ``adapter_config.json`` is refused."""
    uri = source.uri
    if uri.startswith("s3://"):
        access = StorageAccess(credentials_dir, endpoint, region, force_path_style)
        path = download_s3_prefix(uri, Path(dest), access, what="adapter")
    elif uri.startswith("hf://"):
        ref = parse_hf_uri(uri)
        path = snapshot_from_hub(ref, Path(dest).parent, repo_type="model", token=read_hf_token(credentials_dir))
    else:
        path = local_path(uri, what="adapter", want_dir=True)
    if not (path / ADAPTER_CONFIG).is_file():
        raise PermanentTrainerError(
            f"adapter {uri}: no {ADAPTER_CONFIG}; expected a folder saved by peft's save_pretrained"
        )
    return path
