"""The job's output store, opened the same way by every rank and the launcher."""

from __future__ import annotations

import os

from kubepeft.contract import ENV_CREDENTIALS_DIR, TrainerConfig
from kubepeft.storage import Store, open_store

OUTPUT_CREDENTIALS = "output"


def open_output_store(config: TrainerConfig) -> Store:
    """``config.output.root`` with the output's credential folder (mounted Secret files), if any."""
    credentials = config.credentials_dirs.get(OUTPUT_CREDENTIALS) or os.environ.get(ENV_CREDENTIALS_DIR) or None
    return open_store(
        config.output.root,
        endpoint=config.output.endpoint,
        region=config.output.region,
        force_path_style=config.output.force_path_style,
        credentials_dir=credentials,
    )
