"""Keep third-party noise out of the CLI's normal output; it goes to a debug log instead.

Seen on every CPU run: DeepSpeed's "Setting accelerator to CPU" notice (printed on import, even
with backend ddp), transformers' FutureWarnings on model loads, and its "Writing model shards"
progress bars. Warnings are captured into ``<workdir>/debug.log``; DeepSpeed is told the
accelerator (``DS_ACCELERATOR=cpu``, logged at info level only) when the machine has no NVIDIA
driver, so it has nothing to announce; progress bars are switched off.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUG_LOG = "debug.log"
_NVIDIA_MARKERS = ("/proc/driver/nvidia", "/dev/nvidiactl")


def has_nvidia_driver() -> bool:
    """Cheap check that needs no torch import."""
    return any(Path(marker).exists() for marker in _NVIDIA_MARKERS)


@contextmanager
def quiet_third_party(workdir: Path) -> Iterator[Path]:
    """Route warnings and third-party progress output to ``workdir/debug.log`` for the duration."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / DEBUG_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    warnings_logger.propagate = False
    if not has_nvidia_driver():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every warning reaches the log, once per place
            yield path
    finally:
        logging.captureWarnings(False)
        warnings_logger.removeHandler(handler)
        handler.close()
