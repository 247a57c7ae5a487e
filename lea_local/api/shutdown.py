"""Stopping the server (SIGTERM) without turning the requests under way into 500s.

uvicorn stops accepting connections at once (nginx sends new requests to another replica) and
waits for the requests under way; past its graceful-shutdown timeout it cancels them, and a
cancelled request answers a plain-text 500. Here, the requests still running when the grace
period (`LEA_SHUTDOWN_GRACE_SECONDS`) ends are ended first, through their deadline, as a time
budget ends them: the LLM stops at once (even mid-prompt), ASR between segments, nothing is stored, and the
answer is 503 with Retry-After in the API's error shape (an error event in a stream that has
begun). uvicorn's own timeout comes `SETTLE_SECONDS` later, for work that does not watch its
deadline; a request it cancels before answering still gets that 503 (`answer_cut_off`)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from lea_local.api.errors import ApiError, error_response
from lea_local.runtime.inference_queue import Deadline

log = logging.getLogger(__name__)

SETTLE_SECONDS = 5.0
"""After the grace period, how long the ended requests have to answer before uvicorn cancels
them: the LLM stops within a moment, ASR within a segment, a store write finishes."""

SHUTDOWN = "shutdown"
"""The reason a request's deadline ends with when the server stops (see `Deadline.end`)."""


def shutting_down() -> ApiError:
    return ApiError(
        status_code=503,
        detail="Léa is restarting: this request was stopped before it finished; try again in a few seconds",
        headers={"Retry-After": "5"},
    )


class Drain:
    """The deadlines of the requests under way, ended together when the grace period is over."""

    def __init__(self) -> None:
        self._deadlines: set[Deadline] = set()
        self.stopping = False
        """The grace period is over: requests still running, or arriving, end at once."""
        self.cut_off = 0
        """How many requests were still running when the grace period ended."""

    @property
    def under_way(self) -> int:
        return len(self._deadlines)

    @contextmanager
    def tracking(self, deadline: Deadline) -> Iterator[None]:
        """For the request's whole work (a stream's outlives its handler)."""
        if self.stopping:
            deadline.end(SHUTDOWN)
        self._deadlines.add(deadline)
        try:
            yield
        finally:
            self._deadlines.discard(deadline)

    def stop(self) -> None:
        """On the event loop: ends every request under way (each answers 503)."""
        self.stopping = True
        self.cut_off = len(self._deadlines)
        if self.cut_off:
            log.warning(
                "shutdown: ending the requests still running after the grace period",
                extra={"event": "shutdown.cut_off", "requests": self.cut_off},
            )
        for deadline in list(self._deadlines):
            deadline.end(SHUTDOWN)

    def answer_cut_off(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware, the last resort: a request uvicorn cancels (it ignored its
        deadline for `SETTLE_SECONDS`) answers 503 in the API's shape rather than uvicorn's 500.
        One whose response has begun can only be cut (uvicorn closes the connection)."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            started = False

            async def send_tracked(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await send(message)

            try:
                await app(scope, receive, send_tracked)
            except asyncio.CancelledError:
                if not self.stopping or started or scope["type"] != "http":
                    raise
                log.warning(
                    "shutdown: a request was cancelled before it answered", extra={"event": "shutdown.cancelled"}
                )
                request: Request = Request(scope, receive)
                exc = shutting_down()
                response = error_response(exc.status_code, exc.detail, exc.headers, request)
                await response.to_asgi_response(None, request)(scope, receive, send)

        return middleware


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose shutdown ends the requests still running `grace_seconds` after
    SIGTERM (`Drain.stop`) instead of leaving uvicorn to cancel them."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_seconds: float) -> None:
        config.timeout_graceful_shutdown = math.ceil(grace_seconds + SETTLE_SECONDS)
        super().__init__(config)
        self.drain = drain
        self.grace_seconds = grace_seconds

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info(
            "shutdown: new connections refused; the requests under way may finish",
            extra={"event": "shutdown", "requests": self.drain.under_way, "grace_seconds": self.grace_seconds},
        )
        timer = asyncio.get_running_loop().call_later(self.grace_seconds, self.drain.stop)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
