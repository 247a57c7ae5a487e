"""POST /api/external/agent/chat/voice: a voice turn from a browser MediaRecorder upload;
/chat/voice/stream: the same turn, streamed (server-sent events, see `lea_local.api.chat`):
`{"transcription"}` first, the reply's `{"delta"}` events, `{"audio_url", "index"}` as each
spoken piece of the reply is ready (during generation in overlap mode, after it otherwise), then
`{"done"}` with the transcription and the whole reply's audio."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from litestar import Request, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Stream

from lea_local.api.chat import AgentStreamOperation, stream_turn
from lea_local.api.deadline import request_deadline
from lea_local.api.errors import ApiError
from lea_local.api.media import audio_url
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import VoiceChatResponse, sources_of, usage_of
from lea_local.api.validation import clean_identifier, parse_conversation_id
from lea_local.pipeline.turns import TurnRequest
from lea_local.services import Services
from lea_local.settings import Settings


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


async def _voice_turn(data: VoiceForm, settings: Settings) -> TurnRequest:
    upload = data.audio or data.file
    if upload is None:
        raise ApiError(status_code=400, detail="audio or file is required (a multipart file field)")
    audio = await upload.read(settings.max_upload_bytes + 1)
    if len(audio) > settings.max_upload_bytes:
        raise ApiError(status_code=413, detail=f"the recording is larger than {settings.max_upload_bytes} bytes")
    return TurnRequest(
        audio=audio,
        session_id=clean_identifier(data.session_id, "session_id"),
        conversation_id=parse_conversation_id(data.conversation_id),
        user_id=clean_identifier(data.user_id, "user_id", 256),
        user_email=clean_identifier(data.user_email, "user_email", 320),
    )


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
    turn = await _voice_turn(data, settings)
    async with request_deadline(request, settings.turn_timeout("voice"), services.turn_stages("voice")) as deadline:
        result = await services.agent.answer(replace(turn, cancel=deadline.cancel))
    assert result.transcription is not None
    return VoiceChatResponse(
        success=True,
        transcription=result.transcription,
        response=result.reply,
        session_id=result.session_id,
        conversation_id=result.conversation_id,
        assistant_audio_url=audio_url(request, settings, result.audio_name),
        model=result.model,
        provider=result.provider,
        usage=usage_of(result),
        sources=sources_of(result),
    )


@post(
    "/chat/voice/stream",
    status_code=200,
    summary="Voice chat with Léa, streamed (server-sent events)",
    responses=error_responses(400, 401, 404, 413, 500, 503, 504),
    operation_class=AgentStreamOperation,
    description="The same turn as /chat/voice, stored the same way: `transcription`, then the reply's `delta` "
    "events, `audio_url` events (each spoken piece's own file, with its `index`), then `done`. Errors before "
    "the first event (bad audio, no speech, unknown conversation, busy) are ordinary HTTP errors. The turn is "
    "stored once its last piece is written, just before `done`: a client that hangs up earlier stops its "
    "speech and nothing is stored.",
)
async def chat_voice_stream(
    data: Annotated[VoiceForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request,
    services: NamedDependency[Services],
) -> Stream:
    return await stream_turn(request, services, await _voice_turn(data, services.settings), "voice")
