"""Bounded queues in front of the engines: blocking inference runs in worker threads, one job
at a time per engine, and a full queue is refused at once instead of piling up."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class QueueFull(Exception):
    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"the {name} engine is busy; try again in {retry_after} s")
        self.name = name
        self.retry_after = retry_after


class InferenceQueue:
    """Runs blocking jobs in threads, `concurrency` at a time, with at most `max_waiting`
    more waiting. Beyond that, `run` raises QueueFull (the API answers 503 + Retry-After)."""

    def __init__(self, name: str, *, max_waiting: int, concurrency: int = 1, retry_after: int = 5) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        self._limiter = anyio.CapacityLimiter(concurrency)
        self.waiting = 0
        self.running = 0

    @property
    def depth(self) -> int:
        return self.waiting + self.running

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.waiting >= self.max_waiting and self._limiter.available_tokens == 0:
            raise QueueFull(self.name, self.retry_after)
        self.waiting += 1
        try:
            await self._limiter.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            # Not abandoned on cancellation: the slot is freed only when the thread is done.
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.running -= 1
            self._limiter.release()
