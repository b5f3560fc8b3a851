"""BackgroundUploader: ordering, back-pressure, error surfacing, retention hook."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kubepeft.storage import (
    BackgroundUploader,
    Manifest,
    PermanentStorageError,
    Store,
    apply_retention,
    checkpoint_name,
    complete_checkpoints,
)
from tests.fixtures.s3 import make_tree


class GatedStore:
    """Wraps a real store; each upload_dir waits until the test opens the gate."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = threading.Semaphore(0)
        self.started = threading.Semaphore(0)

    def upload_dir(self, local_dir: Path, uri: str, *, metadata: dict[str, object]) -> Manifest:
        self.started.release()
        assert self.gate.acquire(timeout=30)
        return self.inner.upload_dir(local_dir, uri, metadata=metadata)


def test_submit_blocks_when_the_queue_is_full(any_store: Store, tmp_path: Path) -> None:
    gated = GatedStore(any_store)
    uploader = BackgroundUploader(gated, max_pending=1)  # type: ignore[arg-type]
    dirs = [make_tree(tmp_path / f"c{i}", {"w.bin": 100 + i}) for i in range(3)]
    uploader.submit(dirs[0], "checkpoints/a", {"step": 1})  # taken by the worker, which waits at the gate
    assert gated.started.acquire(timeout=10)
    uploader.submit(dirs[1], "checkpoints/b", {"step": 2})  # fills the queue

    third_done = threading.Event()

    def submit_third() -> None:
        uploader.submit(dirs[2], "checkpoints/c", {})
        third_done.set()

    thread = threading.Thread(target=submit_third)
    thread.start()
    assert not third_done.wait(0.5)  # back-pressure: the caller is held
    gated.gate.release()
    assert third_done.wait(10)  # the worker took "b", a slot freed up
    gated.gate.release(2)
    uploader.close()
    thread.join(5)
    assert [m.metadata.get("step") for m in uploader.completed] == [1, 2, None]
    assert all(any_store.is_complete(f"checkpoints/{name}") for name in "abc")


def test_failed_upload_is_raised_on_the_next_call(any_store: Store, tmp_path: Path) -> None:
    uploader = BackgroundUploader(any_store, max_pending=2)
    uploader.submit(tmp_path / "does-not-exist", "checkpoints/x", {})
    with pytest.raises(PermanentStorageError, match="not a directory"):
        uploader.wait()
    # Reported once; the uploader keeps working afterwards.
    uploader.submit(make_tree(tmp_path / "ok", {"a": 1}), "checkpoints/y", {})
    uploader.close()
    assert any_store.is_complete("checkpoints/y") and not any_store.is_complete("checkpoints/x")


def test_error_surfaces_on_submit_and_close(any_store: Store, tmp_path: Path) -> None:
    uploader = BackgroundUploader(any_store)
    uploader.submit(tmp_path / "missing", "checkpoints/x", {})
    deadline = time.monotonic() + 10
    while uploader._error is None and time.monotonic() < deadline:  # let the worker fail
        time.sleep(0.01)
    with pytest.raises(PermanentStorageError):
        uploader.submit(make_tree(tmp_path / "ok", {"a": 1}), "checkpoints/y", {})

    second = BackgroundUploader(any_store)
    second.submit(tmp_path / "missing", "checkpoints/z", {})
    with pytest.raises(PermanentStorageError):
        second.close()
    with pytest.raises(RuntimeError, match="closed"):
        second.submit(tmp_path, "checkpoints/w", {})
    uploader.close()


def test_retention_runs_after_each_completed_checkpoint(any_store: Store, tmp_path: Path) -> None:
    seen: list[list[int]] = []

    def retain(manifest: Manifest) -> None:
        apply_retention(any_store, "checkpoints", keep=2)
        seen.append([step for step, _ in complete_checkpoints(any_store, "checkpoints")])

    with BackgroundUploader(any_store, max_pending=1) as uploader:
        for step in (10, 20, 30, 40):
            source = make_tree(tmp_path / f"s{step}", {"w.bin": step})
            uploader.submit(source, f"checkpoints/{checkpoint_name(step)}", {"step": step}, on_complete=retain)
    assert seen == [[10], [10, 20], [20, 30], [30, 40]]
