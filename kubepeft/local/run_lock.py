"""One ``kubepeft run`` per job and workdir at a time.

Two runs of the same job would resume from the same checkpoints and write the same output root
at once. ``kubepeft run`` takes an exclusive ``flock`` on ``<run dir>/run.lock`` (and writes its
pid into it) before anything starts; a second run fails at once naming that pid. The node
processes inherit the locked descriptor, so the lock is held until the last of them has exited,
not just until ``kubepeft run`` does. The kernel drops the lock with the last descriptor: a
killed run leaves no stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "run.lock"


class RunBusyError(Exception):
    """Another live run holds the lock."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return text or "unknown"


@contextmanager
def run_lock(run_dir: Path, what: str) -> Iterator[int]:
    """Hold the lock of ``run_dir`` for the block; yields the descriptor (for children to inherit).

    Raises :class:`RunBusyError` when another run (or its node processes) holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(
                f"{what} is already running from this workdir (pid {_holder(fd)}, lock {path}): "
                "wait for it to finish or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)
