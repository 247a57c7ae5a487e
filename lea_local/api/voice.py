"""POST /api/external/agent/chat/voice: a voice turn from a browser MediaRecorder upload;
/chat/voice/stream: the same turn, streamed (server-sent events, see `lea_local.api.chat`):
`{"transcription"}` first, the reply's `{"delta"}` events, `{"audio_url", "index"}` as each
spoken piece of the reply is ready (during generation in overlap mode, after it otherwise), then
`{"done"}` with the transcription and the whole reply's audio."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated

from litestar import Request, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Stream

from lea_local.api.chat import AgentStreamOperation, Emit, StreamedReply, done_event
from lea_local.api.deadline import request_deadline
from lea_local.api.errors import ApiError
from lea_local.api.media import audio_url
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import VoiceChatResponse, sources_of, usage_of
from lea_local.api.streaming import open_stream, sse_response
from lea_local.api.validation import clean_identifier, parse_conversation_id
from lea_local.pipeline.turns import TurnRequest
from lea_local.runtime.inference_queue import current_deadline
from lea_local.services import Services
from lea_local.tts.speech import SpeechJob


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


async def _voice_input(data: VoiceForm, services: Services) -> TurnRequest:
    settings = services.settings
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
    form = await _voice_input(data, services)
    assert services.voice is not None and services.speech is not None
    voice = services.voice
    async with request_deadline(request, settings.turn_timeout("voice"), services.turn_stages("voice")) as deadline:
        turn = replace(form, cancel=deadline.cancel)
        result, audio_name = await services.speech.speak(
            lambda on_text, audio_name: voice.take_voice_turn(turn, on_text=on_text, audio_name=audio_name),
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
        sources=sources_of(result.turn),
    )


@post(
    "/chat/voice/stream",
    status_code=200,
    summary="Voice chat with Léa, streamed (server-sent events)",
    responses=error_responses(400, 401, 404, 413, 500, 503, 504),
    operation_class=AgentStreamOperation,
    description="The same turn as /chat/voice, stored the same way: `transcription`, then the reply's `delta` "
    "events, `audio_url` events (each spoken piece's own file, with its `index`), then `done`. Errors before "
    "the first event (bad audio, no speech, unknown conversation, busy) are ordinary HTTP errors.",
)
async def chat_voice_stream(
    data: Annotated[VoiceForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request,
    services: NamedDependency[Services],
) -> Stream:
    settings = services.settings
    form = await _voice_input(data, services)
    assert services.voice is not None and services.speech is not None
    voice, speech = services.voice, services.speech

    async def work(emit: Emit) -> None:
        deadline = current_deadline.get()
        reply = StreamedReply(emit)
        forwarding: list[asyncio.Task[None]] = []

        def run_turn(on_text: Callable[[str], None] | None, audio_name: str | None):  # noqa: ANN202
            job = speech.job(audio_name) if audio_name is not None else None
            if job is not None:  # its pieces' files are announced as they are written, from now on
                forwarding.append(asyncio.create_task(_forward_sentence_audio(job, emit, request, services)))
            return voice.take_voice_turn(
                replace(form, cancel=deadline.cancel if deadline is not None else None),
                on_text=reply.feeding(on_text),
                audio_name=audio_name,
                on_transcript=lambda text: emit({"transcription": text}),
            )

        try:
            result, audio_name = await speech.speak(run_turn, lambda result: result.turn.reply, sentence_files=True)
            reply.finish(result.turn.reply)
            for task in forwarding:
                await task  # every piece's audio before `done`; speech ends with the turn's budget
        finally:
            for task in forwarding:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        emit({**done_event(request, services, result.turn, audio_name), "transcription": result.transcription})

    events = await open_stream(request, settings.turn_timeout("voice"), services.turn_stages("voice"), work)
    return sse_response(events)


async def _forward_sentence_audio(job: SpeechJob, emit: Emit, request: Request, services: Services) -> None:
    assert job.sentence_audio is not None
    while (written := await job.sentence_audio.get()) is not None:
        name, index = written
        emit({"audio_url": audio_url(request, services.settings, name), "index": index})
