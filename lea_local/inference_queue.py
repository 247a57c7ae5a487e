"""Bounded queues in front of the engines: blocking inference runs in worker threads, one job
at a time per engine, and a full queue is refused at once instead of piling up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from lea_local.observability import count_rejection, record_stage, record_wait

T = TypeVar("T")


class QueueFull(Exception):
    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"the {name} engine is busy; try again in {retry_after} s")
        self.name = name
        self.retry_after = retry_after


class InferenceQueue:
    """Runs blocking jobs in threads, `concurrency` at a time, with at most `max_waiting`
    more waiting. Beyond that, `run` raises QueueFull (the API answers 503 + Retry-After)."""

    def __init__(
        self,
        name: str,
        *,
        max_waiting: int,
        concurrency: int = 1,
        retry_after: int = 5,
        limiter: anyio.CapacityLimiter | None = None,
        stage: str | None = None,
    ) -> None:
        """`limiter`: a slot shared with other queues (engines that must not run at the same
        time, e.g. all on the same few CPU cores); else `concurrency` slots of its own."""
        self.name = name
        self.stage = stage or name
        self.max_waiting = max_waiting
        self.retry_after = retry_after
        self._limiter = limiter or anyio.CapacityLimiter(concurrency)
        self.waiting = 0
        self.running = 0

    @property
    def depth(self) -> int:
        return self.waiting + self.running

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.waiting >= self.max_waiting and self._limiter.available_tokens == 0:
            count_rejection(self.name)
            raise QueueFull(self.name, self.retry_after)
        self.waiting += 1
        queued = time.perf_counter()
        try:
            await self._limiter.acquire()
        finally:
            self.waiting -= 1
        started = time.perf_counter()
        record_wait(self.stage, started - queued)
        self.running += 1
        try:
            # Not abandoned on cancellation: the slot is freed only when the thread is done.
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            record_stage(self.stage, time.perf_counter() - started)
            self.running -= 1
            self._limiter.release()
