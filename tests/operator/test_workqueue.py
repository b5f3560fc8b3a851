"""The work queue: coalescing, backoff after failures, requeue timers, retries, resync."""

from __future__ import annotations

import asyncio

import pytest
from kubepeft_operator.workqueue import Retry, WorkQueue


async def test_triggers_during_a_run_coalesce_into_one_more_run() -> None:
    runs: list[str] = []
    gate = asyncio.Event()

    async def work(key: str) -> None:
        runs.append(key)
        if len(runs) == 1:
            await gate.wait()

    queue: WorkQueue[str] = WorkQueue(work)
    first = asyncio.create_task(queue.trigger("a"))
    await asyncio.sleep(0)
    for _ in range(10):
        await queue.trigger("a")  # returns at once: marks the key dirty
    gate.set()
    await first
    assert runs == ["a", "a"]


async def test_a_failure_backs_off_and_a_success_resets_it() -> None:
    attempts: list[float] = []

    async def work(key: str) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise RuntimeError("API server unavailable")

    failures: list[float] = []
    queue: WorkQueue[str] = WorkQueue(work, on_failure=lambda key, exc, delay: failures.append(delay))
    await queue.trigger("a")
    for _ in range(100):
        if len(attempts) >= 3:
            break
        await asyncio.sleep(0.05)
    assert failures == [0.5, 1.0] and len(attempts) == 3
    assert queue.backoff(10) == 60.0
    assert queue.pending_timers == 0


async def test_retry_runs_again_at_once_without_backoff() -> None:
    runs = 0

    async def work(key: str) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise Retry()

    queue: WorkQueue[str] = WorkQueue(work)
    await queue.trigger("a")
    assert runs == 2


async def test_requeue_keeps_the_earliest_timer_and_forget_cancels_it() -> None:
    runs: list[str] = []

    async def work(key: str) -> None:
        runs.append(key)

    queue: WorkQueue[str] = WorkQueue(work)
    queue.requeue("a", 0.05)
    queue.requeue("a", 10)  # later: ignored
    queue.requeue("b", 0.05)
    queue.forget("b")
    await asyncio.sleep(0.2)
    assert runs == ["a"]


async def test_own_writes_are_recognised_and_resync_visits_known_keys() -> None:
    seen: list[str] = []

    async def work(key: str) -> None:
        seen.append(key)

    queue: WorkQueue[str] = WorkQueue(work)
    queue.wrote("a", "17")
    assert queue.is_own_write("a", "17") and not queue.is_own_write("a", "18")
    queue.known.update({"a", "b"})
    task = asyncio.create_task(queue.resync_forever(0.1))
    await asyncio.sleep(0.25)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert {"a", "b"} <= set(seen)
