"""An existing PEFT adapter (a starting point for training, or a merge-only input): fetched by
:mod:`kubepeft_trainer.sources` like every input, then checked to be in PEFT's layout."""

from __future__ import annotations

from pathlib import Path

from kubepeft_trainer.adapter_metadata import ADAPTER_CONFIG_FILE
from kubepeft_trainer.errors import PermanentTrainerError


def check_adapter_folder(path: Path, uri: str) -> Path:
    """``path`` if it holds an adapter saved by peft; a folder without ``adapter_config.json`` is refused."""
    if not (path / ADAPTER_CONFIG_FILE).is_file():
        raise PermanentTrainerError(
            f"adapter {uri}: no {ADAPTER_CONFIG_FILE}; expected a folder saved by peft's save_pretrained"
        )
    return path
