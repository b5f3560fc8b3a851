"""Child processes that do not outlive the process that started them.

``kubepeft run`` starts every node (and the embedded S3 server) in its own session, so that a
Ctrl-C in the terminal reaches only ``kubepeft run``, which then stops them in order. The flip
side: if ``kubepeft run`` itself is SIGKILLed (or OOM-killed), nothing would stop them, and they
would go on training, exporting and writing checkpoints next to the run that replaces it.

The kernel's parent-death signal closes that gap: ``PR_SET_PDEATHSIG`` makes the kernel send the
child a signal when its parent dies. It is set by util-linux ``setpriv --pdeathsig``, which then
execs the real command (the setting survives ``execve``). The signal is tied to the *thread* that
started the child, so start children from a thread that lives as long as they should. Where
``setpriv`` is missing (not Linux), the command runs as is; the run lock still refuses a second
run while the first one's nodes live.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Sequence


def die_with_parent(command: Sequence[str], sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """``command`` prefixed so that the kernel sends it ``sig`` when this process dies."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv is None:
        return list(command)
    return [setpriv, f"--pdeathsig={sig.name}", "--", *command]
