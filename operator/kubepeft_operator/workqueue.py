"""A controller work queue: per-key coalescing, delayed requeues, error backoff, periodic resync.

The same ideas as client-go's rate-limited work queue, on asyncio:

- **Coalescing**: triggers for a key that is being worked on only mark it dirty; it runs once
  more when the current run ends. Bursts of events cost one or two runs; two runs of one key
  never overlap.
- **Requeue after a delay** (deadlines, TTLs): one timer per key, the earliest wins.
- **Backoff** after a failed run: 0.5 s doubling to ``max_backoff``, reset by a success.
- **Resync**: every known key is run again each ``resync_seconds``, spread over the interval (a
  safety net for missed events; with the watch cache it costs no API request).
- **Own writes**: a watch event that shows nothing but the resourceVersion we wrote last is
  recognised (:meth:`is_own_write`), so our own status patch does not trigger another run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
logger = logging.getLogger("kubepeft.operator")


class Retry(Exception):
    """Run the key again at once (the state it read was stale)."""


@dataclass
class _KeyState:
    running: bool = False
    dirty: bool = False
    failures: int = 0


class WorkQueue(Generic[K]):
    def __init__(
        self,
        work: Callable[[K], Awaitable[None]],
        *,
        max_backoff: float = 60.0,
        on_failure: Callable[[K, BaseException, float], None] | None = None,
    ) -> None:
        self._work = work
        self._max_backoff = max_backoff
        self._on_failure = on_failure
        self._states: dict[K, _KeyState] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._own_versions: dict[K, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.known: set[K] = set()
        """Keys to resync (the watch stream's objects)."""

    # --- triggering --------------------------------------------------------------------------

    async def trigger(self, key: K) -> None:
        """Run ``work(key)`` now, or once more after the run in progress."""
        state = self._states.setdefault(key, _KeyState())
        if state.running:
            state.dirty = True
            return
        state.running = True
        try:
            state.dirty = True
            while state.dirty:
                state.dirty = False
                await self._run(key, state)
        finally:
            state.running = False
            if key not in self._timers and not state.failures:
                self._states.pop(key, None)

    def trigger_soon(self, key: K) -> None:
        """Trigger from synchronous code (a timer, the resync loop)."""
        task = asyncio.get_running_loop().create_task(self.trigger(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def requeue(self, key: K, delay: float) -> None:
        """Run ``key`` again in ``delay`` seconds (an earlier timer for it is kept)."""
        loop = asyncio.get_running_loop()
        if (timer := self._timers.get(key)) is not None:
            if timer.when() <= loop.time() + delay:
                return
            timer.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.trigger_soon(key)

        self._timers[key] = loop.call_later(max(0.0, delay), fire)

    def forget(self, key: K) -> None:
        """The object is gone: no resync, no timer, no backoff memory."""
        self.known.discard(key)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        self._own_versions.pop(key, None)
        state = self._states.get(key)
        if state is not None and not state.running:
            self._states.pop(key, None)

    # --- own writes ---------------------------------------------------------------------------

    def wrote(self, key: K, resource_version: str) -> None:
        self._own_versions[key] = resource_version

    def is_own_write(self, key: K, resource_version: str | None) -> bool:
        return resource_version is not None and self._own_versions.get(key) == resource_version

    # --- running ------------------------------------------------------------------------------

    async def _run(self, key: K, state: _KeyState) -> None:
        try:
            await self._work(key)
        except Retry:
            state.dirty = True
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one key's failure must never stop the queue: back off and retry
            state.failures += 1
            delay = self.backoff(state.failures)
            if self._on_failure is not None:
                self._on_failure(key, exc, delay)
            else:
                logger.warning("work on %s failed (%s); retrying in %.1fs", key, exc, delay)
            self.requeue(key, delay)
            return
        state.failures = 0

    def backoff(self, failures: int) -> float:
        return min(self._max_backoff, 0.5 * 2 ** max(0, failures - 1))

    async def resync_forever(self, interval: float) -> None:
        """Trigger every known key each ``interval`` seconds, spread evenly over the interval."""
        while True:
            keys = list(self.known)
            if not keys:
                await asyncio.sleep(interval)
                continue
            for key in keys:
                if key in self.known:
                    self.trigger_soon(key)
                await asyncio.sleep(interval / len(keys))

    @property
    def pending_timers(self) -> int:
        return len(self._timers)
