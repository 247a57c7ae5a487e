"""Work whose answer is streamed (server-sent events, audio bytes), and the agent's events' framing.

The work is admitted against its time budget and started before the response begins, and the
response begins only with the work's first item: a refusal (503), a bad recording (400), an
unknown conversation (404) or a budget spent before anything was produced (504) is still an
ordinary HTTP error with its status. From the first item on, items flow to the client as they
come; a failure after that is for the route to turn into an in-stream error event.

When the client hangs up, before or during the stream, the request's deadline ends as a
disconnect: the engines stop (the LLM at once, even mid-prompt) and the work stores nothing, exactly as
for a non-streamed turn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
from litestar import Request
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.response import Stream

from lea_local.api.deadline import ended_error
from lea_local.api.errors import ApiError, status_and_message
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import Deadline, InferenceQueue, admit, current_deadline

log = logging.getLogger(__name__)
T = TypeVar("T")

_END = object()
# Work whose client left keeps running until its engine notices (within a moment); held here so
# that it is not garbage-collected meanwhile.
_orphans: set[asyncio.Task] = set()


class StreamedWork(Generic[T]):
    """Items produced by `work(emit)` under a deadline, read once by the response body."""

    def __init__(self, deadline: Deadline, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self._items: asyncio.Queue[object] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None
        self.error: BaseException | None = None
        self.started_at = time.perf_counter()

    def emit(self, item: T) -> None:
        """Hand an item to the client; safe from any thread, in order."""
        self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    def ended_error(self, exc: BaseException) -> ApiError | None:
        """The HTTP error a cancelled work stands for (504 timeout, 499 client gone, 503 server stopping)."""
        if isinstance(exc, GenerationCancelled):
            return ended_error(self.deadline, self.timeout)
        return None

    async def _run(self, work: Callable[[Callable[[T], None]], Awaitable[None]], admission: ExitStack) -> None:
        token = current_deadline.set(self.deadline)
        timer = self._loop.call_later(self.timeout, self.deadline.end, "timeout")
        try:
            with admission:
                await work(self.emit)
        except BaseException as exc:  # handed to the reader, who answers or reports it
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            timer.cancel()
            current_deadline.reset(token)
            self._loop.call_soon_threadsafe(self._items.put_nowait, _END)

    async def _next(self) -> object:
        return await self._items.get()

    async def items(self, first: object) -> AsyncIterator[T]:
        """Every item from `first` on; raises the work's error after the last one. Leaving
        early (the client hung up: Litestar cancels the body) ends the work as a disconnect."""
        finished = False
        try:
            item = first
            while item is not _END:
                yield item  # type: ignore[misc]
                item = await self._next()
            finished = True
            if self.error is not None:
                raise self.ended_error(self.error) or self.error
        finally:
            if not finished:
                self.deadline.end("disconnect")
                if self._task is not None and not self._task.done():
                    _orphans.add(self._task)
                    self._task.add_done_callback(_orphans.discard)


async def open_stream(
    request: Request,
    timeout: float,
    stages: Sequence[tuple[InferenceQueue, float]],
    work: Callable[[Callable[[T], None]], Awaitable[None]],
) -> AsyncIterator[T]:
    """Admit and start `work` (which calls `emit(item)` for each item, from any thread), wait
    for its first item, and return the items as an async iterator for a streamed response.

    Raises QueueFull when the work cannot be admitted, and the work's own error, or 504/499,
    when it ends before producing anything."""
    deadline = Deadline(time.monotonic() + timeout)
    streamed: StreamedWork[T] = StreamedWork(deadline, timeout)
    with ExitStack() as admission:
        admission.enter_context(admit(deadline, stages))
        admission.enter_context(request.app.state.drain.tracking(deadline))  # until the work ends
        streamed._task = asyncio.create_task(streamed._run(work, admission.pop_all()))

    async def watch_disconnect() -> None:
        # The body has been read: the next ASGI message can only be the client leaving.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        deadline.end("disconnect")

    watcher = asyncio.create_task(watch_disconnect())
    try:
        first = await streamed._next()
    except BaseException:
        deadline.end("disconnect")
        raise
    finally:
        # Litestar's streamed response listens for the disconnect from here on.
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    if first is _END and streamed.error is not None:
        raise streamed.ended_error(streamed.error) or streamed.error
    return streamed.items(first)


def sse_event_schema(description: str) -> Schema:
    """The OpenAPI schema of one server-sent event as clients (and schemathesis) parse it: its
    `data` line(s), and the optional `event`, `id` and `retry` fields."""
    return Schema(
        type=OpenAPIType.OBJECT,
        description=description,
        properties={
            "data": Schema(type=OpenAPIType.STRING, description="JSON"),
            "event": Schema(type=OpenAPIType.STRING),
            "id": Schema(type=OpenAPIType.STRING),
            "retry": Schema(type=OpenAPIType.INTEGER),
        },
    )


def sse_response(events: AsyncIterator[dict]) -> Stream:
    """The agent's server-sent events: `data: <JSON>` per event; an error raised after the
    first one becomes a last `data: {"error", "detail", "status"}` event, with the status (and
    the message) the non-streamed route would have answered."""
    return Stream(_frames(events), headers=SSE_HEADERS)


async def _frames(events: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield b"data: " + msgspec.json.encode(event) + b"\n\n"
    except Exception as exc:  # the stream has begun: the error goes in it
        yield b"data: " + msgspec.json.encode(error_event(exc)) + b"\n\n"


def error_event(exc: Exception) -> dict:
    answered = status_and_message(exc)
    if answered is None:
        log.error("a streamed turn failed", exc_info=exc)
        answered = (500, "Internal server error")
    status, message = answered
    return {"error": message, "detail": message, "status": status}


SSE_HEADERS = {
    # As a header: Litestar would give a returned Stream the route's JSON media type.
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies (nginx) must pass each event on at once
}
"""The headers of a server-sent event stream."""


def event_stream_operation(description: str, *, also_json: bool = False) -> type[Operation]:
    """An OpenAPI operation class whose 200 answer is server-sent events described by
    `description` (as well as the route's JSON answer when `also_json`)."""

    @dataclass
    class EventStreamOperation(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            if isinstance(ok, OpenAPIResponse):
                events = OpenAPIMediaType(schema=sse_event_schema(description))
                ok.content = (
                    {**(ok.content or {}), "text/event-stream": events} if also_json else {"text/event-stream": events}
                )

    return EventStreamOperation
