"""The node runner: launcher environment per node, exit-code combination, clean stop."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from kubepeft_trainer.settings import TrainerSettings

from kubepeft.contract import (
    ENV_ATTEMPT,
    ENV_CONFIG,
    ENV_MASTER_ADDR,
    ENV_MASTER_PORT,
    ENV_NAMESPACE,
    ENV_NODE_RANK,
    ENV_NUM_NODES,
    ENV_PROCS_PER_NODE,
    ENV_PROGRESS_FILE,
    ENV_WORKDIR,
    LauncherEnv,
)
from kubepeft.local.runner import NodeGroup, combined_exit_code, plan_nodes, trainer_command
from kubepeft.net import free_port


def test_plan_nodes_gives_each_node_the_pod_launcher_env(tmp_path: Path) -> None:
    plans = plan_nodes(
        num_nodes=2,
        procs_per_node=3,
        master_port=41234,
        config_path=tmp_path / "config.json",
        run_dir=tmp_path,
        namespace="team",
        attempt=4,
    )
    assert [p.rank for p in plans] == [0, 1]
    for rank, plan in enumerate(plans):
        env = plan.env
        assert env[ENV_NODE_RANK] == str(rank)
        assert env[ENV_NUM_NODES] == "2"
        assert env[ENV_PROCS_PER_NODE] == "3"
        assert env[ENV_MASTER_ADDR] == "127.0.0.1"
        assert env[ENV_MASTER_PORT] == "41234"
        assert env[ENV_CONFIG] == str(tmp_path / "config.json")
        assert env[ENV_NAMESPACE] == "team"
        assert env[ENV_ATTEMPT] == "4"
        assert env[ENV_PROGRESS_FILE] == str(plan.progress_file)
        assert env[ENV_WORKDIR] == str(plan.workdir)
        # The trainer reads exactly what a pod gets.
        assert TrainerSettings.load(env).launcher_env() == LauncherEnv(rank, 2, 3, "127.0.0.1", 41234)
    assert plans[0].progress_file != plans[1].progress_file
    assert plans[0].log_file != plans[1].log_file
    assert plans[0].workdir != plans[1].workdir


def test_combined_exit_code() -> None:
    assert combined_exit_code([0, 0]) == 0
    assert combined_exit_code([0, None]) == 0
    assert combined_exit_code([1, 3]) == 3  # a permanent failure anywhere wins
    assert combined_exit_code([None, 1]) == 1
    assert combined_exit_code([-signal.SIGKILL, 0]) == 137
    assert combined_exit_code([]) == 0


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_trainer_command_is_the_pod_command(tmp_path: Path) -> None:
    command = trainer_command(tmp_path / "c.json")
    assert command[0] == sys.executable
    assert command[1:] == ["-m", "kubepeft", "train", "--config", str(tmp_path / "c.json")]


def _group(tmp_path: Path, script: str, nodes: int = 2) -> NodeGroup:
    plans = plan_nodes(
        num_nodes=nodes,
        procs_per_node=1,
        master_port=free_port(),
        config_path=tmp_path / "config.json",
        run_dir=tmp_path,
        namespace="default",
        attempt=0,
    )
    return NodeGroup(plans=plans, base_env={"PATH": "/usr/bin:/bin"}, command=[sys.executable, "-c", script])


def test_group_reports_first_failure_and_logs(tmp_path: Path) -> None:
    script = (
        "import os, sys, time\n"
        "rank = int(os.environ['KUBEPEFT_NODE_RANK'])\n"
        "print('node', rank, 'up', flush=True)\n"
        "sys.exit(3) if rank == 1 else time.sleep(60)\n"
    )
    group = _group(tmp_path, script)
    group.start()
    deadline = time.monotonic() + 30
    while not group.finished() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group.finished()
    started = time.monotonic()
    group.stop(grace_seconds=10)
    assert time.monotonic() - started < 5  # node 0 honours SIGTERM
    assert group.exit_code() == 3
    assert "node 1 up" in (tmp_path / "node1.log").read_text()


def test_stop_kills_a_node_that_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    # A launcher that ignores SIGTERM and has a child rank: both must be gone after stop().
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    group = _group(tmp_path, script, nodes=1)
    group.start()
    log = tmp_path / "node0.log"
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(log.read_text().split()[0])
    time.sleep(0.3)  # let both install their SIGTERM handlers
    group.stop(grace_seconds=0.5)
    assert group.processes[0].returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child_pid}").exists() and time.monotonic() < deadline:
        # Reaped by init once orphaned; a zombie has no cmdline.
        if not Path(f"/proc/{child_pid}/cmdline").read_bytes():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child_pid}").exists() or not Path(f"/proc/{child_pid}/cmdline").read_bytes()
