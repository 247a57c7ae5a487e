"""The engine queues' scheduling, in-process with trivial jobs (the HTTP behaviour is in
test_time_budgets.py): earliest deadline first, requests that end while queued leave at once
and never start their job, and admission against a turn's budget."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import Deadline, InferenceQueue, QueueFull, Slot, admit, current_deadline


async def _hold(queue: InferenceQueue, release: threading.Event) -> None:
    await queue.run(release.wait, 30)


async def _wait_until(predicate, limit: float = 10.0) -> None:
    with anyio.fail_after(limit):
        while not predicate():
            await anyio.sleep(0.005)


def test_waiting_jobs_are_served_earliest_deadline_first():
    async def main() -> list[str]:
        queue = InferenceQueue("test", max_waiting=10)
        release = threading.Event()
        served: list[str] = []

        async def job(name: str, seconds_left: float) -> None:
            token = current_deadline.set(Deadline(time.monotonic() + seconds_left))
            try:
                await queue.run(served.append, name)
            finally:
                current_deadline.reset(token)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_hold, queue, release)
            await _wait_until(lambda: queue.running == 1)
            for i, (name, seconds_left) in enumerate((("late", 50.0), ("early", 10.0), ("middle", 30.0))):
                tasks.start_soon(job, name, seconds_left)
                await _wait_until(lambda i=i: queue.waiting == i + 1)
            release.set()
        return served

    assert anyio.run(main) == ["early", "middle", "late"]


@pytest.mark.parametrize("reason", ["timeout", "disconnect"])
def test_a_request_that_ends_while_queued_leaves_at_once_and_never_runs(reason):
    async def main() -> tuple[list[str], str, int]:
        queue = InferenceQueue("test", max_waiting=10)
        release = threading.Event()
        ran: list[str] = []
        outcome: list[str] = []
        deadline = Deadline(time.monotonic() + 60)

        async def waiting_job() -> None:
            token = current_deadline.set(deadline)
            try:
                await queue.run(ran.append, "job")
            except GenerationCancelled:
                outcome.append("cancelled")
            finally:
                current_deadline.reset(token)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_hold, queue, release)
            await _wait_until(lambda: queue.running == 1)
            tasks.start_soon(waiting_job)
            await _wait_until(lambda: queue.waiting == 1)
            deadline.end(reason)
            # It left the queue while the running job still holds the slot.
            await _wait_until(lambda: outcome == ["cancelled"])
            waiting_after = queue.waiting
            release.set()
        return ran, outcome[0], waiting_after

    ran, outcome, waiting_after = anyio.run(main)
    assert outcome == "cancelled" and ran == [] and waiting_after == 0


def test_an_expired_request_never_starts_a_job_even_when_the_slot_is_free():
    async def main() -> list[str]:
        queue = InferenceQueue("test", max_waiting=10)
        ran: list[str] = []
        deadline = Deadline(time.monotonic() + 60)
        deadline.end("timeout")
        token = current_deadline.set(deadline)
        try:
            with pytest.raises(GenerationCancelled):
                await queue.run(ran.append, "job")
        finally:
            current_deadline.reset(token)
        return ran

    assert anyio.run(main) == []


def test_admission_refuses_a_turn_that_cannot_finish_in_time_and_keeps_admitted_ones_on_time():
    slot = Slot(1)
    llm = InferenceQueue("language model", max_waiting=10, slot=slot)
    for _ in range(20):
        llm.service.add(8.0)  # turns have been measured at 8 s: planned as ~10 s with the margin
    now = time.monotonic()
    first, second = Deadline(now + 25), Deadline(now + 25)
    with admit(first, [(llm, 1)]), admit(second, [(llm, 1)]):
        # Two admitted turns fill the next ~20 s: a third one due in 25 s cannot make it.
        with pytest.raises(QueueFull) as refused:
            with admit(Deadline(now + 25), [(llm, 1)]):
                pass
        assert 1 <= refused.value.retry_after <= 60
        # One due much later can: it is served after the two.
        with admit(Deadline(now + 120), [(llm, 1)]):
            pass
        # An earlier deadline would be served first, which would make an admitted turn late.
        with pytest.raises(QueueFull):
            with admit(Deadline(now + 11), [(llm, 1)]):
                pass
    assert slot.plans == set()  # withdrawn when the turns end
    # Alone, a turn is always tried, even one its estimate says is too long.
    with admit(Deadline(now + 1), [(llm, 1)]):
        pass


def test_service_times_follow_recent_jobs_and_a_seed_is_replaced_by_the_first_measure():
    llm = InferenceQueue("language model", max_waiting=10)
    llm.service.seed(40.0)
    assert llm.service.estimate() >= 40.0
    llm.service.add(4.0)
    assert llm.service.estimate() == pytest.approx(4.0 + 2 * 2.0)
    for _ in range(50):
        llm.service.add(4.0)
    assert llm.service.estimate() == pytest.approx(4.0, abs=0.01)
