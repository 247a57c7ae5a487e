"""Waiting for a state of the servers under test, bounded by events rather than the clock: a
wait ends when the state holds, and fails once it can no longer come (the request it depends on
has answered, the work has ended), however slow the machine."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import anyio.to_thread


def wait_for(condition: Callable[[], bool], what: str, *, while_possible: Callable[[], bool]) -> None:
    """Polls until `condition()` holds; fails once `while_possible()` says it never will."""
    while not condition():
        if not while_possible():
            assert condition(), f"never happened: {what}"
            return
        time.sleep(0.02)


async def wait_for_async(condition: Callable[[], bool], what: str, *, while_possible: Callable[[], bool]) -> None:
    """`wait_for` inside an event loop: `condition` runs in a worker thread (it may do I/O)."""
    while not await anyio.to_thread.run_sync(condition):
        if not while_possible():
            assert await anyio.to_thread.run_sync(condition), f"never happened: {what}"
            return
        await anyio.sleep(0.02)
