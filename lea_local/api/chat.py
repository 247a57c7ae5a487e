"""POST /api/external/agent/chat: a text turn; /chat/stream: the same turn, streamed.

The stream is server-sent events, the shape ImmoAssist's web app already reads from its own
route: `data: {"delta": "…"}` per piece of the reply, then `data: {"done": true, …}` with what the
JSON answer carries (and `response`, the stored text), or `data: {"error", "detail", "status"}`.
The deltas joined are the stored reply: the raw text goes through `ReplyStream`, the stored text's
cleaning as it is generated. Failures before the first event (busy, unknown conversation, bad
input) are ordinary HTTP errors in the contract's shape."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

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
from lea_local.llm.reply_cleaner import ReplyStream
from lea_local.pipeline.turns import TurnRequest, TurnResult
from lea_local.runtime.inference_queue import current_deadline
from lea_local.runtime.observability import request_timings_ms
from lea_local.services import Services

log = logging.getLogger(__name__)

Event = dict[str, Any]
Emit = Callable[[Event], None]


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
    message = clean_message(data.message, services.settings.max_message_chars)
    session_id = clean_identifier(data.session_id, "session_id")
    turns, speech = services.turns, services.speech
    settings = services.settings
    async with request_deadline(request, settings.turn_timeout("chat"), services.turn_stages("chat")) as deadline:
        turn = TurnRequest(message, session_id=session_id, conversation_id=data.conversation_id, cancel=deadline.cancel)
        if settings.tts_for_text_chat and speech is not None:
            result, audio_name = await speech.speak(
                lambda on_text, audio_name: turns.take_turn(turn, on_text=on_text, audio_name=audio_name),
                lambda result: result.reply,
            )
        else:
            result = await turns.take_turn(turn)
            audio_name = None
    return ChatResponse(
        success=True,
        response=result.reply,
        session_id=result.session_id,
        conversation_id=result.conversation_id,
        model=result.model,
        provider=result.provider,
        assistant_audio_url=audio_url(request, settings, audio_name),
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


class StreamedReply:
    """The reply's deltas for a streamed turn: raw LLM pieces in (from the LLM's thread), the
    stored text out, piece by piece."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._cleaner = ReplyStream()

    def feeding(self, speech: Callable[[str], None] | None) -> Callable[[str], None]:
        """The LLM's `on_text`: deltas to the client, and the raw text to `speech` when speech
        is fed as the reply is written (overlap mode)."""

        def on_text(piece: str) -> None:
            if speech is not None:
                speech(piece)
            if delta := self._cleaner.feed(piece):
                self._emit({"delta": delta})

        return on_text

    def finish(self, stored: str) -> None:
        if rest := self._cleaner.finish(stored):
            self._emit({"delta": rest})
        if self._cleaner.retracted:
            log.warning(
                "the streamed reply differs from the stored one; the done event's response is the stored text",
                extra={"event": "stream.retracted", "sent_chars": len(self._cleaner.sent), "stored_chars": len(stored)},
            )


def done_event(request: Request, services: Services, result: TurnResult, audio_name: str | None) -> Event:
    return {
        "done": True,
        "session_id": result.session_id,
        "conversation_id": result.conversation_id,
        "model": result.model,
        "provider": result.provider,
        "usage": msgspec.to_builtins(usage_of(result)),
        "assistant_audio_url": audio_url(request, services.settings, audio_name),
        "response": result.reply,
        "sources": msgspec.to_builtins(sources_of(result)),
        # The stages' times (ms): the stream's headers left before they ran (see Server-Timing).
        "timings_ms": request_timings_ms(),
    }


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
    message = clean_message(data.message, services.settings.max_message_chars)
    session_id = clean_identifier(data.session_id, "session_id")
    turns, speech = services.turns, services.speech
    settings = services.settings

    async def work(emit: Emit) -> None:
        deadline = current_deadline.get()
        cancel = deadline.cancel if deadline is not None else None
        turn = TurnRequest(message, session_id=session_id, conversation_id=data.conversation_id, cancel=cancel)
        reply = StreamedReply(emit)
        if settings.tts_for_text_chat and speech is not None:
            result, audio_name = await speech.speak(
                lambda on_text, audio_name: turns.take_turn(
                    turn, on_text=reply.feeding(on_text), audio_name=audio_name
                ),
                lambda result: result.reply,
            )
        else:
            result = await turns.take_turn(turn, on_text=reply.feeding(None))
            audio_name = None
        reply.finish(result.reply)
        emit(done_event(request, services, result, audio_name))

    events = await open_stream(request, settings.turn_timeout("chat"), services.turn_stages("chat"), work)
    return sse_response(events)
