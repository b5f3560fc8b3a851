"""The job's output store, opened the same way by every rank and the launcher."""

from __future__ import annotations

import logging

from kubepeft.contract import TrainerConfig
from kubepeft.sources import output_source
from kubepeft.storage import Store, open_store_for

log = logging.getLogger(__name__)


def open_output_store(config: TrainerConfig) -> Store:
    """``config.output.root`` (a volume's output already mapped to its folder) reached as the config's
    output says, with the output's credential folder (mounted Secret files), if any."""
    name = output_source(config.spec).name
    credentials = config.credentials_dirs.get(name)
    return open_store_for(config.output.root, config.output, credentials_dir=credentials)


def preflight_output(config: TrainerConfig, node_rank: int) -> None:
    """Before any training: every node proves it can write (and delete) under the output, so a
    read-only output, a missing bucket or wrong keys fail the job at once as permanent errors
    naming the output. Node 0 also discards the unfinished multipart uploads a killed earlier
    attempt left behind (no upload of this attempt has started yet)."""
    store = open_output_store(config)
    store.check_writable()
    if node_rank == 0:
        store.abort_incomplete_uploads()


def abort_uploads_after_failure(config: TrainerConfig) -> None:
    """Best effort on a failed attempt: its uploads will never complete."""
    from kubepeft.storage import StorageError

    try:
        open_output_store(config).abort_incomplete_uploads()
    except StorageError as error:
        log.warning("could not abort unfinished uploads under %s: %s", config.output.root, error)
