"""POST /api/external/agent/chat/voice: a voice turn from a browser MediaRecorder upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar import Request, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body

from lea_local.api.deadline import request_deadline
from lea_local.api.errors import ApiError
from lea_local.api.media import audio_url
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import VoiceChatResponse, usage_of
from lea_local.api.validation import clean_identifier, parse_conversation_id
from lea_local.services import Services


@dataclass
class VoiceForm:
    audio: UploadFile | None = None
    """The recording (webm, mp4, ogg, wav, mp3, flac). `file` is accepted too; `audio` wins."""
    file: UploadFile | None = None
    session_id: str | None = None
    conversation_id: str | None = None
    """An integer, sent as text as multipart fields are."""
    user_id: str | None = None
    user_email: str | None = None


@post(
    "/chat/voice",
    status_code=200,
    summary="Voice chat with Léa",
    responses=error_responses(400, 401, 404, 413, 500, 503, 504),
)
async def chat_voice(
    data: Annotated[VoiceForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request,
    services: NamedDependency[Services],
) -> VoiceChatResponse:
    settings = services.settings
    upload = data.audio or data.file
    if upload is None:
        raise ApiError(status_code=400, detail="audio or file is required (a multipart file field)")
    audio = await upload.read(settings.max_upload_bytes + 1)
    if len(audio) > settings.max_upload_bytes:
        raise ApiError(status_code=413, detail=f"the recording is larger than {settings.max_upload_bytes} bytes")
    assert services.voice is not None and services.speech is not None
    voice = services.voice
    session_id = clean_identifier(data.session_id, "session_id")
    conversation_id = parse_conversation_id(data.conversation_id)
    user_id = clean_identifier(data.user_id, "user_id", 256)
    user_email = clean_identifier(data.user_email, "user_email", 320)
    async with request_deadline(request, settings.turn_timeout("voice"), services.turn_stages("voice")) as deadline:
        cancel = deadline.cancel
        result, audio_name = await services.speech.speak(
            lambda on_text, audio_name: voice.take_voice_turn(
                audio,
                session_id=session_id,
                conversation_id=conversation_id,
                user_id=user_id,
                user_email=user_email,
                on_text=on_text,
                audio_name=audio_name,
                cancel=cancel,
            ),
            lambda result: result.turn.reply,
        )
    return VoiceChatResponse(
        success=True,
        transcription=result.transcription,
        response=result.turn.reply,
        session_id=result.turn.session_id,
        conversation_id=result.turn.conversation_id,
        assistant_audio_url=audio_url(request, settings, audio_name),
        model=result.turn.model,
        provider=result.turn.provider,
        usage=usage_of(result.turn),
    )
