"""POST /api/external/agent/chat: a text turn."""

from __future__ import annotations

import unicodedata
from typing import TypeVar

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from lea_local.api.deadline import request_deadline
from lea_local.api.errors import ApiError
from lea_local.api.media import audio_url
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import ChatRequest, ChatResponse
from lea_local.services import Services

T = TypeVar("T")


async def strictly(request: Request, schema: type[T]) -> T:
    """The body converted without coercion. Litestar's own conversion is lenient ("12" becomes
    12, 1.0 becomes 1); the contract's types are not, and its client sends real integers."""
    try:
        return msgspec.convert(await request.json(), schema, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(status_code=400, detail=f"Invalid request: {exc}") from exc



def clean_session_id(session_id: str | None) -> str | None:
    """Blank means absent; an id with control characters is refused (it ends up in logs)."""
    if session_id is None or not session_id.strip():
        return None
    if len(session_id) > 128:
        raise ApiError(status_code=400, detail="session_id is too long (at most 128 characters)")
    if any(ord(c) < 32 or ord(c) == 127 for c in session_id):
        raise ApiError(status_code=400, detail="session_id must not contain control characters")
    return session_id.strip()


def is_blank(text: str) -> bool:
    """Nothing visible: whitespace, control and format characters (zero-width spaces…)."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text)


def clean_message(message: str, max_chars: int) -> str:
    if is_blank(message):
        raise ApiError(status_code=400, detail="message is required and must not be blank")
    if len(message) > max_chars:
        raise ApiError(status_code=400, detail=f"message is too long ({len(message)} characters, at most {max_chars})")
    return message.strip()


@post(
    "/chat",
    status_code=200,
    summary="Text chat with Léa",
    responses=error_responses(400, 401, 404, 500, 503),
)
async def chat(data: JSONBody[ChatRequest], request: Request, services: NamedDependency[Services]) -> ChatResponse:
    data = await strictly(request, ChatRequest)  # `data` above gives the OpenAPI schema
    message = clean_message(data.message, services.settings.max_message_chars)
    session_id = clean_session_id(data.session_id)
    turns, speech = services.turns, services.speech
    async with request_deadline(request, services.settings.request_timeout_seconds) as cancel:
        if services.settings.tts_for_text_chat and speech is not None:
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
        assistant_audio_url=audio_url(request, services.settings, audio_name),
    )
