"""Background uploads of checkpoints while training continues.

One worker thread drains a bounded queue. ``submit`` blocks while ``max_pending`` uploads are
already waiting (back-pressure: training pauses rather than filling the disk with unsent
checkpoints). A failed upload is re-raised by the next ``submit``, ``wait`` or ``close``, so the
training loop learns about it at its next checkpoint at the latest.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubepeft.storage.manifest import Manifest
from kubepeft.storage.store import Store

log = logging.getLogger("kubepeft.storage")

CompletionCallback = Callable[[Manifest], None]


@dataclass(frozen=True)
class _Job:
    local_dir: str
    uri: str
    metadata: dict[str, Any]
    on_complete: CompletionCallback | None


class BackgroundUploader:
    """Upload directories with ``store.upload_dir`` on a worker thread.

    ``on_complete(manifest)`` runs on the worker after the manifest is written (e.g. to apply
    retention or report the checkpoint); an exception from it counts as a failed upload.
    """

    def __init__(self, store: Store, max_pending: int = 1) -> None:
        self.store = store
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, max_pending))
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.completed: list[Manifest] = []
        self._worker = threading.Thread(target=self._run, name="kubepeft-uploader", daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if self._error is not None:
                    continue  # after a failure, drop queued work; the error is raised to the caller
                manifest = self.store.upload_dir(job.local_dir, job.uri, metadata=job.metadata)
                if job.on_complete is not None:
                    job.on_complete(manifest)
                self.completed.append(manifest)
            except BaseException as exc:
                with self._lock:
                    if self._error is None:
                        self._error = exc
                log.error("background upload to %s failed: %s", job.uri if job else "?", exc)
            finally:
                self._queue.task_done()

    def _raise_pending_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def submit(
        self,
        local_dir: str | os.PathLike[str],
        uri: str,
        metadata: dict[str, Any],
        on_complete: CompletionCallback | None = None,
    ) -> None:
        """Queue an upload; blocks while the queue is full. Raises an earlier upload's error."""
        if self._closed:
            raise RuntimeError("BackgroundUploader is closed")
        self._raise_pending_error()
        self._queue.put(_Job(os.fspath(local_dir), uri, dict(metadata), on_complete))

    def wait(self) -> None:
        """Block until every queued upload finished; raise the first failure."""
        self._queue.join()
        self._raise_pending_error()

    def close(self) -> None:
        """Finish queued uploads, stop the worker, raise the first failure (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join()
        self._raise_pending_error()

    def __enter__(self) -> BackgroundUploader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.close()
        else:  # already failing: stop the worker but keep the original exception
            try:
                self.close()
            except BaseException:
                log.exception("background upload failed while handling another error")
