"""POST /api/external/agent/chat: a text turn."""

from __future__ import annotations

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from lea_local.api.deadline import request_deadline
from lea_local.api.media import audio_url
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import ChatRequest, ChatResponse, usage_of
from lea_local.api.validation import clean_identifier, clean_message, strictly
from lea_local.services import Services


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
        cancel = deadline.cancel
        if settings.tts_for_text_chat and speech is not None:
            result, audio_name = await speech.speak(
                lambda on_text, audio_name: turns.take_turn(
                    message,
                    session_id=session_id,
                    conversation_id=data.conversation_id,
                    on_text=on_text,
                    audio_name=audio_name,
                    cancel=cancel,
                ),
                lambda result: result.reply,
            )
        else:
            result = await turns.take_turn(
                message, session_id=session_id, conversation_id=data.conversation_id, cancel=cancel
            )
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
    )
