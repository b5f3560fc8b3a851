"""Start a job's node processes on this machine, exactly as worker pods start them.

Every node is one ``kubepeft train`` process (the pod's command) with the launcher environment
of :class:`~kubepeft.contract.LauncherEnv` -- master ``127.0.0.1`` and a free port instead of
the headless Service -- and ``KUBEPEFT_CONFIG`` pointing at the rendered trainer config, so the
trainer cannot tell a local run from a pod. Each node gets its own process group: the terminal's
Ctrl-C reaches only ``kubepeft run``, which then stops the nodes in order (SIGTERM to the whole
group, a grace period, then SIGKILL), the way the kubelet stops a container. Should ``kubepeft
run`` itself die (SIGKILL, OOM), the kernel sends every node SIGTERM (parent-death signal, see
:mod:`kubepeft.local.child_lifetime`), and the ranks follow their node (they watch its pid).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kubepeft.contract import (
    ENV_ATTEMPT,
    ENV_CONFIG,
    ENV_NAMESPACE,
    ENV_PROGRESS_FILE,
    ENV_WORKDIR,
    EXIT_PERMANENT,
    LauncherEnv,
)
from kubepeft.local.child_lifetime import die_with_parent

LOCAL_MASTER_ADDR = "127.0.0.1"
DEFAULT_GRACE_SECONDS = 20.0


def trainer_command(config_path: Path) -> list[str]:
    """The worker pod's command, run with this interpreter (``kubepeft train --config PATH``)."""
    return [sys.executable, "-m", "kubepeft", "train", "--config", str(config_path)]


@dataclass(frozen=True)
class NodePlan:
    """One node process: its launcher env, the extra variables a pod would have, and its files."""

    rank: int
    env: dict[str, str]
    progress_file: Path
    log_file: Path
    workdir: Path


def plan_nodes(
    *,
    num_nodes: int,
    procs_per_node: int,
    master_port: int,
    config_path: Path,
    run_dir: Path,
    namespace: str,
    attempt: int,
    master_addr: str = LOCAL_MASTER_ADDR,
) -> list[NodePlan]:
    """Pure: the per-node environment of a local run (added on top of the caller's environment).

    Each node appends its reports to its own progress file (only node 0 reports), logs to its own
    file and works in its own folder -- emptied before every attempt, like a pod's scratch volume.
    """
    plans = []
    for rank in range(num_nodes):
        progress = run_dir / f"progress-node{rank}.jsonl"
        workdir = run_dir / "work" / f"node{rank}"
        launcher = LauncherEnv(
            node_rank=rank,
            num_nodes=num_nodes,
            procs_per_node=procs_per_node,
            master_addr=master_addr,
            master_port=master_port,
        )
        env = {
            **launcher.to_env(),
            ENV_CONFIG: str(config_path),
            ENV_PROGRESS_FILE: str(progress),
            ENV_NAMESPACE: namespace,
            ENV_ATTEMPT: str(attempt),
            ENV_WORKDIR: str(workdir),
        }
        plans.append(NodePlan(rank, env, progress, run_dir / f"node{rank}.log", workdir))
    return plans


def combined_exit_code(codes: Sequence[int | None]) -> int:
    """Pure: the run's exit code from the nodes' codes (None = still running or never started).

    A permanent failure on any node wins (the input is bad; retrying cannot help); otherwise the
    first non-zero code; a node killed by a signal counts as ``128 + signal`` (retryable).
    """
    normalized = [(128 - code if code < 0 else code) for code in codes if code is not None]
    if EXIT_PERMANENT in normalized:
        return EXIT_PERMANENT
    return next((code for code in normalized if code != 0), 0)


@dataclass
class NodeGroup:
    """The running node processes of one attempt."""

    plans: list[NodePlan]
    base_env: Mapping[str, str]
    command: list[str]
    # Descriptors the nodes keep open for as long as they live (the run lock).
    inherit_fds: tuple[int, ...] = ()
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self) -> None:
        for plan in self.plans:
            plan.progress_file.parent.mkdir(parents=True, exist_ok=True)
            plan.progress_file.write_bytes(b"")  # this attempt's reports only
            shutil.rmtree(plan.workdir, ignore_errors=True)
            plan.workdir.mkdir(parents=True)
            log = plan.log_file.open("ab")
            self._logs.append(log)
            env = {**self.base_env, **plan.env}
            self.processes.append(
                subprocess.Popen(
                    die_with_parent(self.command),  # never outlive `kubepeft run`
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: Ctrl-C is ours to forward
                    pass_fds=self.inherit_fds,
                )
            )

    def poll(self) -> list[int | None]:
        return [process.poll() for process in self.processes]

    def finished(self) -> bool:
        """All nodes exited, or one failed (then the others cannot complete the collective)."""
        codes = self.poll()
        return all(code is not None for code in codes) or any(code not in (None, 0) for code in codes)

    def exit_code(self) -> int:
        return combined_exit_code(self.poll())

    def stop(self, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        """SIGTERM every node's process group, wait up to ``grace_seconds``, then SIGKILL."""
        running = [process for process in self.processes if process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in self.processes:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pass
        for process in running:
            # The launcher may have exited while its ranks linger: kill the whole group regardless.
            _signal_group(process, signal.SIGKILL)
            process.wait()
        self.close()

    def close(self) -> None:
        for log in self._logs:
            log.close()
        self._logs.clear()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail_text(path: Path, max_lines: int = 25) -> str:
    """The last lines of a log file (for a failure message)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-max_lines:])
