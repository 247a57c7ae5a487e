"""A request's lifetime bound: a timeout (504) and the client hanging up both stop the work
where the engine allows it (the LLM between tokens; ASR before it starts)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Request

from lea_local.api.errors import ApiError
from lea_local.llm.base import GenerationCancelled


@asynccontextmanager
async def request_deadline(request: Request, timeout: float) -> AsyncIterator[threading.Event]:
    """Yields the event the engines watch. Raises 504 when `timeout` passed; when the client
    went away, the work stops and nothing is stored (there is no one to answer).

    No task group here on purpose: errors raised by the body must reach the app's exception
    handlers as themselves, not wrapped in an ExceptionGroup."""
    cancel = threading.Event()
    reason: list[str] = []

    def on_timeout() -> None:
        reason.append("timeout")
        cancel.set()

    async def watch_disconnect() -> None:
        # The body has been read: the next ASGI message can only be the client leaving.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        reason.append("disconnect")
        cancel.set()

    timer = asyncio.get_running_loop().call_later(timeout, on_timeout)
    watcher = asyncio.create_task(watch_disconnect())
    try:
        yield cancel
    except GenerationCancelled as exc:
        if reason and reason[0] == "timeout":
            raise ApiError(status_code=504, detail=f"the request took longer than {timeout:g} s") from exc
        raise ApiError(status_code=499, detail="the client closed the connection") from exc
    finally:
        timer.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
