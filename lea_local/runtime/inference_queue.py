"""Bounded queues in front of the engines, scheduled by deadline.

Blocking inference runs in worker threads. Engines that must not compute at the same time (all
three on the same few CPU cores) share one `Slot`; an engine with its own device has a slot of
its own. A slot serves the waiting job whose request ends first (earliest deadline first), so a
voice turn admitted before a burst of text turns is not pushed past its budget by them.

Every turn is admitted against its time budget before any work starts (`admit`): from the
service times measured recently (with a margin), it must be able to finish in time behind the
work already admitted, without making an admitted turn late. Otherwise it is refused at once (503 +
Retry-After) instead of timing out after a long wait. A job whose request ended while it waited
(deadline passed, client gone) leaves the queue at once and never starts its engine.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio.to_thread

from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.observability import count_rejection, record_stage, record_wait

T = TypeVar("T")

# Admission plans with the estimated service times times this: estimates come from recent jobs,
# and a turn admitted on a slightly short estimate must still finish inside its budget.
PLANNING_MARGIN = 1.25


class QueueFull(Exception):
    """Refused at once: the answer is 503 with `Retry-After`."""

    def __init__(self, message: str, retry_after: int, queue: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.queue = queue


class Deadline:
    """A request's end: a time (monotonic) and an event set when it passes or the client leaves.

    Engines watch `cancel` (the LLM at once, even mid-prompt; ASR between segments); jobs still waiting
    for a slot are woken and leave the queue."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.cancel = threading.Event()
        self.reason: str | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self.plan: Plan | None = None

    def end(self, reason: str) -> None:
        """On the event loop: the request is over (`timeout` or `disconnect`)."""
        if self.reason is None:
            self.reason = reason
        self.cancel.set()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(GenerationCancelled(f"request ended while queued ({reason})"))

    def remaining(self) -> float:
        return self.at - time.monotonic()


# The deadline of the request being served, for the queues its work goes through. A reply's
# speech, which may outlive its request, keeps that deadline as its priority (its task is created
# inside the request); once the request is over, nothing ends that deadline any more.
current_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("deadline", default=None)


class ServiceTimes:
    """Recent service times of one engine: an exponentially weighted mean and mean deviation.
    The estimate (mean + 2 deviations) is what admission plans with."""

    def __init__(self, weight: float = 0.2) -> None:
        self.weight = weight
        self.samples = 0
        self.mean = 0.0
        self.deviation = 0.0

    def seed(self, seconds: float) -> None:
        """A first guess before any job is measured (the first measured job replaces it)."""
        if self.samples == 0:
            self.mean, self.deviation = seconds, seconds / 4

    def add(self, seconds: float) -> None:
        if self.samples == 0:
            self.mean, self.deviation = seconds, seconds / 2
        else:
            self.deviation += self.weight * (abs(seconds - self.mean) - self.deviation)
            self.mean += self.weight * (seconds - self.mean)
        self.samples += 1

    def estimate(self) -> float:
        return self.mean + 2 * self.deviation


@dataclass(eq=False)
class Plan:
    """An admitted turn: its deadline and the engine seconds it still expects to use per slot."""

    deadline: float
    work: dict[Slot, float] = field(default_factory=dict)


class Slot:
    """`capacity` jobs at a time; waiting jobs are served earliest deadline first."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self.busy = 0
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.plans: set[Plan] = set()
        self.unplanned = 0.0
        """Estimated seconds of queued jobs no admitted turn accounts for (speech, which runs
        after its turn has answered)."""

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiting if not f.done())

    async def acquire(self, deadline: Deadline | None) -> None:
        if deadline is not None and deadline.cancel.is_set():
            raise GenerationCancelled(f"request ended before it was queued ({deadline.reason})")
        if self.busy < self.capacity and not self.waiting:
            self.busy += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (deadline.at if deadline else math.inf, next(self._order), waiter))
        if deadline is not None:
            deadline._waiters.add(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # granted and abandoned in the same instant: pass it on
            else:
                waiter.cancel()
            raise
        finally:
            if deadline is not None:
                deadline._waiters.discard(waiter)

    def release(self) -> None:
        while self._waiting:
            _, _, waiter = heapq.heappop(self._waiting)
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it directly: `busy` is unchanged
                return
        self.busy -= 1

    def backlog(self) -> float:
        """Engine seconds admitted and not yet done, per unit of capacity."""
        return (self.unplanned + sum(plan.work.get(self, 0.0) for plan in self.plans)) / self.capacity

    def feasible_with(self, newcomer: Plan, now: float) -> bool:
        """Whether, served earliest deadline first, the newcomer finishes in time and no plan
        that would finish in time without it is made late by it. A turn that would be alone is
        always tried: refusing work on an idle engine would only turn an estimate into an error."""
        if not self.plans:
            return True
        plans = sorted(self.plans, key=lambda p: p.deadline)
        before = _finish_times(plans, self, now)
        after = _finish_times(sorted([*plans, newcomer], key=lambda p: p.deadline), self, now)
        if after[newcomer] > newcomer.deadline:
            return False
        return all(after[p] <= p.deadline for p in plans if before[p] <= p.deadline)


def _finish_times(plans: Sequence[Plan], slot: Slot, now: float) -> dict[Plan, float]:
    finish, t = {}, now + slot.unplanned / slot.capacity
    for plan in plans:
        t += plan.work.get(slot, 0.0) / slot.capacity
        finish[plan] = t
    return finish


class InferenceQueue:
    """Runs one engine's blocking jobs in threads through a slot, with at most `max_waiting`
    jobs waiting. Beyond that, `run` raises QueueFull (the API answers 503 + Retry-After)."""

    def __init__(
        self,
        name: str,
        *,
        max_waiting: int,
        concurrency: int = 1,
        slot: Slot | None = None,
        stage: str | None = None,
    ) -> None:
        """`slot`: shared with other queues whose engines must not compute at the same time
        (e.g. all on the same few CPU cores); else `concurrency` slots of its own."""
        self.name = name
        self.stage = stage or name
        self.max_waiting = max_waiting
        self.slot = slot or Slot(concurrency)
        self.service = ServiceTimes()
        self.waiting = 0
        self.running = 0

    @property
    def depth(self) -> int:
        return self.waiting + self.running

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Raises QueueFull when too many jobs wait, GenerationCancelled when the request ended
        before the job could start."""
        deadline = current_deadline.get()
        if self.waiting >= self.max_waiting and self.slot.busy >= self.slot.capacity:
            count_rejection(self.name)
            raise QueueFull(
                f"the {self.name} engine is busy; try again in a few seconds", _retry_after(self.slot), self.name
            )
        plan = deadline.plan if deadline is not None else None
        unplanned = 0.0 if plan is not None and self.slot in plan.work else self.service.estimate()
        self.slot.unplanned += unplanned
        self.waiting += 1
        queued = time.perf_counter()
        try:
            try:
                await self.slot.acquire(deadline)
            finally:
                self.waiting -= 1
            if deadline is not None and deadline.cancel.is_set():
                self.slot.release()  # expired or abandoned: no engine starts for it
                raise GenerationCancelled(f"request ended before the {self.stage} stage started")
            started = time.perf_counter()
            record_wait(self.stage, started - queued)
            self.running += 1
            try:
                # Not abandoned on cancellation: the slot is freed only when the thread is done.
                return await anyio.to_thread.run_sync(fn, *args)
            finally:
                seconds = time.perf_counter() - started
                self.service.add(seconds)
                record_stage(self.stage, seconds)
                if plan is not None and self.slot in plan.work:
                    plan.work[self.slot] = max(0.0, plan.work[self.slot] - seconds)
                self.running -= 1
                self.slot.release()
        finally:
            self.slot.unplanned -= unplanned


def _retry_after(slot: Slot) -> int:
    return max(1, min(60, math.ceil(slot.backlog()) or 5))


@contextmanager
def admit(deadline: Deadline, stages: Sequence[tuple[InferenceQueue, float]]) -> Iterator[Plan]:
    """Admits a turn against its deadline given the engines it will use (see module doc).
    `stages`: each queue the turn goes through, with how many typical jobs of it (fractions
    allowed). Raises QueueFull when the turn cannot finish in time; the plan is withdrawn when
    the turn ends, however it ends."""
    plan = Plan(deadline.at)
    for queue, jobs in stages:
        plan.work[queue.slot] = plan.work.get(queue.slot, 0.0) + jobs * queue.service.estimate() * PLANNING_MARGIN
    now = time.monotonic()
    for slot, work in plan.work.items():
        if work > 0 and not slot.feasible_with(plan, now):
            refusing = next(queue for queue, _ in stages if queue.slot is slot)
            count_rejection(refusing.name)
            raise QueueFull(
                "Léa is busy: this request could not be answered in time; try again in a few seconds",
                _retry_after(slot),
                refusing.name,
            )
    for slot in plan.work:
        slot.plans.add(plan)
    deadline.plan = plan
    try:
        yield plan
    finally:
        deadline.plan = None
        for slot in plan.work:
            slot.plans.discard(plan)
