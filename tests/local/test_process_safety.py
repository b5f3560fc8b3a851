"""A local run never leaves node processes behind, and never runs twice at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kubepeft.local.run_lock import RunBusyError, run_lock
from tests.local.test_run_cmd import write_job


def _start_run(job: Path, workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kubepeft", "run", str(job), "--workdir", str(workdir)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _trained_steps(progress: Path) -> int:
    if not progress.exists():
        return 0
    reports = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    return max((r["progress"]["step"] for r in reports if r["state"] == "Training"), default=0)


def _alive(processes: list[psutil.Process]) -> list[str]:
    out = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkilled_run_takes_its_nodes_down_and_a_concurrent_rerun_is_refused(
    tiny_model_dir: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    job = write_job(tmp_path / "job.yaml", tiny_model_dir, tiny_dataset, str(tmp_path / "out"), maxSteps=100000)
    workdir = tmp_path / "wd"
    run_dir = workdir / "runs" / "default" / "local-tiny"
    first = _start_run(job, workdir, tmp_path / "first.log")
    try:
        _wait_until(lambda: _trained_steps(run_dir / "progress-node0.jsonl") >= 1, 240, "no training step reported")
        tree = psutil.Process(first.pid).children(recursive=True)  # launcher, accelerate, rank

        second = subprocess.run(
            [sys.executable, "-m", "kubepeft", "run", str(job), "--workdir", str(workdir)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"default/local-tiny is already running from this workdir (pid {first.pid}" in second.stderr
        assert first.poll() is None and _alive(tree)  # the refused run touched nothing

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert len(tree) >= 3, [p.cmdline() for p in tree]
    try:
        _wait_until(lambda: not _alive(tree), 120, "nodes left running after SIGKILL of kubepeft run")
    finally:
        for process in tree:  # never leave a trainer behind, even when the assertion failed
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    stopped_at = _trained_steps(run_dir / "progress-node0.jsonl")
    time.sleep(2)
    assert _trained_steps(run_dir / "progress-node0.jsonl") == stopped_at  # nobody trains on
    with run_lock(run_dir, "local-tiny"):  # the kernel released the lock with the last node
        pass


def test_run_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    busy = rf"ns/job is already running from this workdir \(pid {os.getpid()}"
    with (
        run_lock(tmp_path / "run", "ns/job"),
        pytest.raises(RunBusyError, match=busy),
        run_lock(tmp_path / "run", "ns/job"),
    ):
        pass
    with run_lock(tmp_path / "run", "ns/job"):  # released on exit
        pass
