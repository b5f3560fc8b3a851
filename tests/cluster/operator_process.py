"""The real operator as a process: ``python -m kubepeft operator --kubeconfig ...``.

It runs with a ServiceAccount token kubeconfig (see :mod:`tests.cluster.identities`), so every
call it makes is authenticated and authorized as in a cluster. ``stop()`` is a SIGTERM (kopf's
graceful shutdown), ``kill()`` a SIGKILL (a crash mid-work).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import urllib3
from kubepeft_testing.control_plane import _die_with_parent

from kubepeft.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
_INSTANCES = itertools.count(1)


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.kubeconfig, self.log_dir = kubeconfig, log_dir
        self.health_port = free_port()
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.instance = next(_INSTANCES)

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"operator-{self.instance}-{self.starts}.log"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        paths = [str(REPO_ROOT), str(REPO_ROOT / "operator"), str(REPO_ROOT / "trainer_image")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.pop("KUBECONFIG", None)
        env.update({"KUBEPEFT_HEALTH_PORT": str(self.health_port), "KUBEPEFT_LOG_LEVEL": "INFO"})
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> OperatorProcess:
        """Start and wait for kopf's liveness endpoint (the operator is up and watching)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubepeft", "operator", "--kubeconfig", str(self.kubeconfig), "--no-metrics"],
                env=self._env(),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        pool = urllib3.PoolManager(timeout=urllib3.Timeout(total=2), retries=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if pool.request("GET", f"http://127.0.0.1:{self.health_port}/healthz").status == 200:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the operator was not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``. Returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, as when a node or the OOM killer takes the pod."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
