"""Where inputs come from: ``s3://`` prefixes and objects (through kubepeft.storage, verified
against their manifest), ``hf://org/name[@revision]`` on the Hugging Face hub, and local paths.

Shared by model, adapter and dataset fetching so that every input obeys the same rules.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubepeft_trainer.errors import PermanentTrainerError, RetryableTrainerError

if TYPE_CHECKING:
    from kubepeft.storage import Store

log = logging.getLogger(__name__)

HF_TOKEN_FILE = "HF_TOKEN"
HF_SCHEME = "hf://"


@dataclass(frozen=True)
class StorageAccess:
    """How to reach S3 inputs: the output's endpoint and region, and a credentials folder."""

    credentials_dir: str | None = None
    endpoint: str | None = None
    region: str = "us-east-1"
    force_path_style: bool = True

    def open_store(self, uri: str) -> Store:
        from kubepeft.storage import open_store

        return open_store(
            uri,
            endpoint=self.endpoint,
            region=self.region,
            force_path_style=self.force_path_style,
            credentials_dir=self.credentials_dir,
        )


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None


def parse_hf_uri(uri: str, revision: str | None = None) -> HubRef:
    """``hf://org/name@rev`` -> (``org/name``, ``rev``); an explicit ``revision`` field wins over ``@rev``."""
    if not uri.startswith(HF_SCHEME):
        raise PermanentTrainerError(f"{uri!r} is not an hf:// URI")
    repo, _, at_revision = uri[len(HF_SCHEME) :].partition("@")
    repo = repo.strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise PermanentTrainerError(f"{uri!r}: expected hf://<org>/<name>[@<revision>]")
    return HubRef(repo, revision or at_revision or None)


def read_hf_token(credentials_dir: str | None) -> str | None:
    """The hub token from the mounted secret folder (file ``HF_TOKEN``), or None."""
    if not credentials_dir:
        return None
    path = Path(credentials_dir) / HF_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PermanentTrainerError(f"cannot read hub token file {path}: {exc.strerror}") from None
    return token or None


def hub_cache_dir(workdir: Path) -> Path:
    """The hub cache: ``$HF_HUB_CACHE`` when set (a persistent volume), else inside the work folder."""
    env = os.environ.get("HF_HUB_CACHE")
    return Path(env) if env else workdir / "hf-cache"


def snapshot_from_hub(ref: HubRef, workdir: Path, *, repo_type: str, token: str | None) -> Path:
    """Download (or reuse from the cache) one hub snapshot; missing repo/revision is permanent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = snapshot_download(
            ref.repo_id, repo_type=repo_type, revision=ref.revision, token=token, cache_dir=hub_cache_dir(workdir)
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as exc:
        # GatedRepoError subclasses RepositoryNotFoundError; both mean no access with this token.
        raise PermanentTrainerError(
            f"hf://{ref.repo_id} (revision {ref.revision or 'main'}): {type(exc).__name__}: "
            "the repository or revision does not exist or the token in the credentials Secret has no access"
        ) from None
    except LocalEntryNotFoundError as exc:
        raise RetryableTrainerError(f"hf://{ref.repo_id}: hub unreachable and not cached: {exc}") from exc
    return Path(path)


def download_s3_prefix(uri: str, dest: Path, access: StorageAccess, *, what: str) -> Path:
    """Download an artifact set (a prefix with ``manifest.json``) and verify every file's sha256."""
    from kubepeft.storage import IncompleteError

    store = access.open_store(uri)
    try:
        manifest = store.download_dir(uri, dest, verify=True)
    except IncompleteError:
        raise PermanentTrainerError(
            f"{what} {uri} has no manifest.json: kubepeft reads only complete, verifiable prefixes. Upload the "
            "folder with kubepeft.storage (Store.upload_dir writes the manifest last) or mount it and use a path"
        ) from None
    log.info("fetched %s %s: %d files verified", what, uri, len(manifest.files))
    return dest


def download_s3_object(uri: str, dest: Path, access: StorageAccess) -> Path:
    """Download a single object (no manifest: a lone file is its own unit)."""
    store = access.open_store(uri)
    store.download_file(uri, dest)
    return dest


def local_path(uri: str, *, what: str, want_dir: bool) -> Path:
    path = Path(uri)
    if want_dir and not path.is_dir():
        raise PermanentTrainerError(f"{what} {uri}: no such directory")
    if not want_dir and not path.exists():
        raise PermanentTrainerError(f"{what} {uri}: no such file or directory")
    return path
