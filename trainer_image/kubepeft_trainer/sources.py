"""Where inputs come from -- the one resolver for the model, the dataset and each adapter.

:func:`locate_inputs` answers, from :func:`kubepeft.sources.input_sources`, where each input is and
how it is reached: its own endpoint/region (default: the output's, after the operator's or the
local run's defaults), its own credentials folder (``credentials_dirs[<source name>]``; an
``s3://`` input on the output's endpoint without one uses the output's, as the API documents), and
``pvc://`` URIs or paths on declared volumes mapped to where the volume is mounted.
:func:`fetch_input` then brings it to the local disk: ``s3://`` prefixes verified against their
manifest (a dataset may also be one object), ``hf://org/name[@revision]`` snapshots from the hub
cache, local paths used in place.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubepeft.contract import TrainerConfig
from kubepeft.sources import OUTPUT, Source, input_sources, local_path
from kubepeft.storage.uri import HF_SCHEME, scheme_of
from kubepeft_trainer.errors import PermanentTrainerError, RetryableTrainerError

if TYPE_CHECKING:
    from kubepeft.storage import Store

log = logging.getLogger(__name__)

HF_TOKEN_FILE = "HF_TOKEN"


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None


def parse_hf_uri(uri: str, revision: str | None = None) -> HubRef:
    """``hf://org/name@rev`` -> (``org/name``, ``rev``); an explicit ``revision`` field wins over ``@rev``."""
    if scheme_of(uri) != "hf":
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


def download_s3_prefix(store: Store, uri: str, dest: Path, *, what: str) -> Path:
    """Download an artifact set (a prefix with ``manifest.json``) and verify every file's sha256."""
    from kubepeft.storage import IncompleteError

    try:
        manifest = store.download_dir(uri, dest, verify=True)
    except IncompleteError:
        raise PermanentTrainerError(
            f"{what} {uri} has no manifest.json: kubepeft reads only complete, verifiable prefixes. Upload the "
            "folder with kubepeft.storage (Store.upload_dir writes the manifest last) or mount it and use a path"
        ) from None
    log.info("fetched %s %s: %d files verified", what, uri, len(manifest.files))
    return dest


def existing_path(path: str, *, what: str, uri: str, want_dir: bool) -> Path:
    """A local path used in place; ``uri`` names it in messages (``pvc://`` URIs are mapped first)."""
    named = uri if path == uri else f"{uri} (at {path})"
    if want_dir and not Path(path).is_dir():
        raise PermanentTrainerError(f"{what} {named}: no such directory")
    if not want_dir and not Path(path).exists():
        raise PermanentTrainerError(f"{what} {named}: no such file or directory")
    return Path(path)


# --- the resolver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputKind:
    """What an input is, as far as fetching goes."""

    what: str
    """Names the input in messages: ``model``, ``adapter`` or ``dataset``."""
    folder: bool
    """A folder (model, adapter); else a file or a folder (dataset: an s3 object is a file)."""
    repo_type: str
    """The hub's repository type."""


MODEL_INPUT = InputKind("model", folder=True, repo_type="model")
ADAPTER_INPUT = InputKind("adapter", folder=True, repo_type="model")
DATASET_INPUT = InputKind("dataset", folder=False, repo_type="dataset")


@dataclass(frozen=True)
class LocatedInput:
    """One input, located: the source (endpoint, region and path style after the defaults), the
    path to read for ``pvc://`` and volume paths (else the URI), and its credentials folder."""

    source: Source
    path: str
    credentials_dir: str | None


def _credentials_dir(config: TrainerConfig, source: Source) -> str | None:
    folder = config.credentials_dirs.get(source.name)
    if folder is None and source.scheme == "s3" and not source.own_endpoint:
        # The API's rule: an s3 input on the output's endpoint without its own Secret uses the output's.
        folder = config.credentials_dirs.get(OUTPUT)
    return folder


def locate_inputs(config: TrainerConfig) -> dict[str, LocatedInput]:
    """Every input of the job by source name (``model``, ``dataset``, ``adapter-<i>``)."""
    spec = config.spec
    located = {}
    # Defaults come from the output as the trainer reaches it (config.output: the operator's
    # default endpoint and region, a local run's server).
    for source in input_sources(spec, reached=config.output):
        path = local_path(spec, source.uri, config.volume_dirs)
        located[source.name] = LocatedInput(source, path, _credentials_dir(config, source))
    return located


def fetch_input(located: LocatedInput, kind: InputKind, workdir: Path, *, revision: str | None = None) -> Path:
    """A local file or folder holding the input: downloaded and verified into ``workdir/<source
    name>`` (s3), snapshotted into the hub cache (hf), or used in place (path, pvc)."""
    source = located.source
    if source.scheme == "s3":
        return _fetch_s3(located, kind, Path(workdir) / source.name)
    if source.scheme == "hf":
        ref = parse_hf_uri(source.uri, revision)
        token = read_hf_token(located.credentials_dir)
        return snapshot_from_hub(ref, Path(workdir), repo_type=kind.repo_type, token=token)
    return existing_path(located.path, what=kind.what, uri=source.uri, want_dir=kind.folder)


def _fetch_s3(located: LocatedInput, kind: InputKind, dest: Path) -> Path:
    from kubepeft.storage import open_store_for

    source, folder = located.source, located.credentials_dir
    if folder is not None and not Path(folder).is_dir():
        raise PermanentTrainerError(
            f"{kind.what} {source.uri}: credentials folder {folder} (source {source.name!r}) does not exist"
        )
    store = open_store_for(source.uri, source, credentials_dir=folder)
    uri = source.uri
    if not kind.folder and not uri.endswith("/") and store.exists(uri):
        # One object is its own unit (no manifest): a dataset file.
        target = dest / uri.rstrip("/").rsplit("/", 1)[-1]
        store.download_file(uri, target)
        return target
    return download_s3_prefix(store, uri, dest, what=kind.what)
