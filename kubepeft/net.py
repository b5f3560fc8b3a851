"""Free loopback ports, the one helper every local server, run, test and benchmark uses."""

from __future__ import annotations

import socket
from contextlib import ExitStack

LOOPBACK = "127.0.0.1"


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago.

    All are held open together, so none repeats; the kernel picks them and a tiny race with
    other processes is accepted (the caller binds them soon after).
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = LOOPBACK) -> int:
    """One TCP port that was free a moment ago (see :func:`free_ports`)."""
    return free_ports(1, host)[0]
