"""POST /api/external/agent/chat: a text turn; /chat/stream: the same turn, streamed.

The stream is server-sent events, the shape ImmoAssist's web app already reads from its own
route: `data: {"delta": "…"}` per piece of the reply, then `data: {"done": true, …}` with what the
JSON answer carries (and `response`, the stored text), or `data: {"error", "detail", "status"}`.
The deltas joined are the stored reply: the turn (`lea_local.pipeline.agent`) cleans the raw text
as it is generated, as the stored text is cleaned. Failures before the first event (busy, unknown
conversation, bad input) are ordinary HTTP errors in the contract's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from lea_local.api.deadline import request_deadline
from lea_local.api.media import audio_url
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import ChatRequest, ChatResponse, sources_of, usage_of
from lea_local.api.streaming import event_stream_operation, open_stream, sse_response
from lea_local.api.validation import clean_identifier, clean_message, strictly
from lea_local.pipeline.turns import TurnRequest, TurnResult
from lea_local.runtime.inference_queue import current_deadline
from lea_local.runtime.observability import request_timings_ms
from lea_local.services import Services
from lea_local.settings import Settings

Event = dict[str, Any]
Emit = Callable[[Event], None]


def _text_turn(data: ChatRequest, settings: Settings) -> TurnRequest:
    return TurnRequest(
        message=clean_message(data.message, settings.max_message_chars),
        session_id=clean_identifier(data.session_id, "session_id"),
        conversation_id=data.conversation_id,
    )


@post(
    "/chat",
    status_code=200,
    summary="Text chat with Léa",
    responses=error_responses(400, 401, 404, 413, 500, 503, 504),
    description="The turn has `LEA_CHAT_TIMEOUT_SECONDS` (55 s): one that could not finish in time "
    "behind the work already queued is refused at once with 503 and Retry-After.",
)
async def chat(data: JSONBody[ChatRequest], request: Request, services: NamedDependency[Services]) -> ChatResponse:
    data = await strictly(request, ChatRequest)  # `data` above gives the OpenAPI schema
    settings = services.settings
    turn = _text_turn(data, settings)
    async with request_deadline(request, settings.turn_timeout("chat"), services.turn_stages("chat")) as deadline:
        result = await services.agent.answer(replace(turn, cancel=deadline.cancel))
    return ChatResponse(
        success=True,
        response=result.reply,
        session_id=result.session_id,
        conversation_id=result.conversation_id,
        model=result.model,
        provider=result.provider,
        assistant_audio_url=audio_url(request, settings, result.audio_name),
        usage=usage_of(result),
        sources=sources_of(result),
    )


# --- streamed turns ------------------------------------------------------------------------------

AgentStreamOperation = event_stream_operation(
    '`data: {"delta": "…"}` events, then `data: {"done": true, "session_id", '
    '"conversation_id", "model", "provider", "usage", "assistant_audio_url", "response", '
    '"timings_ms", "sources"}`; '
    'a failure after the first event: `data: {"error", "detail", "status"}`'
)


class AgentEvents:
    """A streamed turn's events (`lea_local.pipeline.agent.TurnEvents`) as the agent's
    server-sent events carry them."""

    def __init__(self, emit: Emit, request: Request, settings: Settings) -> None:
        self._emit = emit
        self._request = request
        self._settings = settings

    def delta(self, text: str) -> None:
        self._emit({"delta": text})

    def transcription(self, text: str) -> None:
        self._emit({"transcription": text})

    def spoken_piece(self, name: str, index: int) -> None:
        self._emit({"audio_url": audio_url(self._request, self._settings, name), "index": index})


def done_event(request: Request, settings: Settings, result: TurnResult) -> Event:
    event: Event = {
        "done": True,
        "session_id": result.session_id,
        "conversation_id": result.conversation_id,
        "model": result.model,
        "provider": result.provider,
        "usage": msgspec.to_builtins(usage_of(result)),
        "assistant_audio_url": audio_url(request, settings, result.audio_name),
        "response": result.reply,
        "sources": msgspec.to_builtins(sources_of(result)),
        # The stages' times (ms): the stream's headers left before they ran (see Server-Timing).
        "timings_ms": request_timings_ms(),
    }
    if result.transcription is not None:  # a voice turn's
        event["transcription"] = result.transcription
    return event


async def stream_turn(
    request: Request, services: Services, turn: TurnRequest, kind: Literal["chat", "voice"]
) -> Stream:
    """The turn answered as server-sent events: its events as they happen, then `done`."""
    settings = services.settings

    async def work(emit: Emit) -> None:
        deadline = current_deadline.get()
        turn_until_deadline = replace(turn, cancel=deadline.cancel if deadline is not None else None)
        result = await services.agent.answer(turn_until_deadline, AgentEvents(emit, request, settings))
        emit(done_event(request, settings, result))

    events = await open_stream(request, settings.turn_timeout(kind), services.turn_stages(kind), work)
    return sse_response(events)


@post(
    "/chat/stream",
    status_code=200,
    summary="Text chat with Léa, streamed (server-sent events)",
    responses=error_responses(400, 401, 404, 413, 500, 503, 504),
    operation_class=AgentStreamOperation,
    description="The same turn as /chat, stored the same way; the reply comes as `delta` events as it is "
    "written, then a `done` event. Errors before the first event are ordinary HTTP errors; a client that "
    "hangs up stops the generation and nothing is stored.",
)
async def chat_stream(data: JSONBody[ChatRequest], request: Request, services: NamedDependency[Services]) -> Stream:
    data = await strictly(request, ChatRequest)  # `data` above gives the OpenAPI schema
    return await stream_turn(request, services, _text_turn(data, services.settings), "chat")
