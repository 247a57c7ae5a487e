"""A request's lifetime bound: its time budget (504) and the client hanging up both end the
work: queued jobs leave their queue at once, a running LLM stops at once (even while it
evaluates a long prompt), ASR between segments. Before any work, the turn is admitted against
its budget (503 at once if it could not finish in time behind the work already admitted). A
server stopping past its grace period ends the work the same way, answered 503
(`lea_local.api.shutdown`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from litestar import Request

from lea_local.api.errors import ApiError
from lea_local.api.shutdown import SHUTDOWN, Drain, shutting_down
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import Deadline, InferenceQueue, admit, current_deadline


@asynccontextmanager
async def request_deadline(
    request: Request, timeout: float, stages: Sequence[tuple[InferenceQueue, float]] = ()
) -> AsyncIterator[Deadline]:
    """Yields the request's deadline (engines watch `deadline.cancel`). Raises QueueFull (503)
    when the turn cannot be admitted, 504 when `timeout` passed; when the client went away, the
    work stops and nothing is stored (there is no one to answer).

    No task group here on purpose: errors raised by the body must reach the app's exception
    handlers as themselves, not wrapped in an ExceptionGroup."""
    deadline = Deadline(time.monotonic() + timeout)

    async def watch_disconnect() -> None:
        # The body has been read: the next ASGI message can only be the client leaving.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        deadline.end("disconnect")

    drain: Drain = request.app.state.drain
    with admit(deadline, stages), drain.tracking(deadline):
        timer = asyncio.get_running_loop().call_later(timeout, deadline.end, "timeout")
        watcher = asyncio.create_task(watch_disconnect())
        token = current_deadline.set(deadline)
        try:
            yield deadline
        except GenerationCancelled as exc:
            raise ended_error(deadline, timeout) from exc
        finally:
            current_deadline.reset(token)
            timer.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher


def ended_error(deadline: Deadline, timeout: float) -> ApiError:
    """The answer to a request whose deadline stopped its work: 499 (the client left), 503 (the
    server is stopping) or 504 (its `timeout` passed)."""
    if deadline.reason == "disconnect":
        return ApiError(status_code=499, detail="the client closed the connection")
    if deadline.reason == SHUTDOWN:
        return shutting_down()
    return ApiError(status_code=504, detail=f"the request took longer than {timeout:g} s")
