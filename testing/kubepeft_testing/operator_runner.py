"""Run the operator in its own thread and event loop (kopf's runner would block a test's loop)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kubernetes.client
from kubepeft_operator.main import run_operator
from kubepeft_operator.metrics import Metrics
from kubepeft_operator.settings import OperatorSettings


class OperatorThread:
    def __init__(self, server_url: str, settings: OperatorSettings | None = None) -> None:
        self.settings = settings or OperatorSettings(resync_seconds=5)
        self.configuration = kubernetes.client.Configuration()
        self.configuration.host = server_url
        self.metrics = Metrics()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kubepeft-operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(
                run_operator(
                    self.settings,
                    self.configuration,
                    metrics=self.metrics,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    liveness=False,
                )
            )
        except BaseException as exc:  # surfaced by stop()
            self._error = exc

    def start(self, timeout: float = 20) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the operator did not become ready: {self._error!r}")
        return self

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 20) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop")
        if self._error is not None:
            raise RuntimeError("the operator crashed") from self._error

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
