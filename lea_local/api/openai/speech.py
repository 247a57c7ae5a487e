"""POST /v1/audio/speech (OpenAI-compatible text to speech) and GET /v1/audio/voices.

Any model name is accepted (tts-1, tts-1-hd, gpt-4o-mini-tts…): the voice chooses the speaker.
The audio streams as sentences are synthesised (`lea_local.tts.speech_stream`); the response
starts with the first sentence's first encoded bytes, so a refusal (503), a spent budget (504)
or a bad parameter (400) is still an ordinary error in OpenAI's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, Schema
from litestar.params import JSONBody
from litestar.response import Stream

from lea_local.api.openai.errors import OpenAIError, openai_error_responses
from lea_local.api.streaming import open_stream
from lea_local.api.validation import is_blank
from lea_local.services import Services
from lea_local.tts.encode import MEDIA_TYPES, AudioFormat
from lea_local.tts.speech_stream import spoken_phrases, stream_speech
from lea_local.tts.voices import UnknownVoice, VoiceRegistry

MAX_INPUT_CHARS = 4096  # OpenAI's limit
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class VoiceId(msgspec.Struct):
    """A voice given as an object, as OpenAI's custom voices are."""

    id: str


SpeechInput = Annotated[str, msgspec.Meta(max_length=MAX_INPUT_CHARS, description="The text to say (not blank)")]
SpeechVoice = Annotated[
    str | VoiceId,
    msgspec.Meta(description="An OpenAI voice name (alloy, shimmer…) or an installed voice: GET /v1/audio/voices"),
]
SpeechModel = Annotated[str, msgspec.Meta(description="Any name (tts-1, tts-1-hd…): the voice chooses the speaker")]
Instructions = Annotated[str, msgspec.Meta(description="Accepted and ignored (Piper has no style control)")]
Format = Annotated[SpeechFormat, msgspec.Meta(description="pcm: raw 24 kHz 16-bit signed little-endian mono")]
StreamFormat = Annotated[Literal["audio", "sse"], msgspec.Meta(description="Only `audio` (streamed) is served")]


class SpeechRequest(msgspec.Struct):
    input: SpeechInput
    voice: SpeechVoice
    model: SpeechModel = "tts-1"
    instructions: Instructions | None = None
    response_format: Format = "mp3"
    speed: Annotated[float, msgspec.Meta(ge=0.25, le=4.0)] = 1.0
    stream_format: StreamFormat = "audio"


@dataclass
class _AudioOperation(Operation):
    """The 200 answer is one of several audio types, which Litestar's handler options cannot say
    (and a handler's `media_type` would override the Stream's own)."""

    def __post_init__(self) -> None:
        if self.responses and "200" in self.responses:
            audio = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
            self.responses["200"].content = {  # type: ignore[union-attr]
                media_type: OpenAPIMediaType(schema=audio) for media_type in dict.fromkeys(MEDIA_TYPES.values())
            }


def _voices(services: Services) -> VoiceRegistry:
    if services.voices is None or services.speech is None:
        raise OpenAIError(503, "speech synthesis is not available on this server")
    return services.voices


@post(
    "/audio/speech",
    status_code=200,
    summary="Text to speech (OpenAI-compatible), streamed as it is synthesised",
    responses=openai_error_responses(400, 401, 500, 503, 504),
    operation_class=_AudioOperation,
    description="The audio streams from the first sentence on. Budget: `LEA_VOICE_TIMEOUT_SECONDS`; "
    "a request that could not finish in time behind the work already queued gets 503 and Retry-After.",
)
async def speech(data: JSONBody[SpeechRequest], request: Request, services: NamedDependency[Services]) -> Stream:
    voices = _voices(services)
    if is_blank(data.input):
        raise OpenAIError(400, "input is required and must not be blank", param="input")
    if data.stream_format != "audio":
        raise OpenAIError(400, "stream_format 'sse' is not supported here; use 'audio'", param="stream_format")
    try:
        synthesizer = await voices.synthesizer(data.voice if isinstance(data.voice, str) else data.voice.id)
    except UnknownVoice as exc:
        raise OpenAIError(400, str(exc), param="voice") from exc
    settings, speech_service = services.settings, services.speech
    assert speech_service is not None
    phrases = spoken_phrases(data.input, settings.locale)
    if not phrases:
        raise OpenAIError(400, "input has nothing that can be said aloud", param="input")
    audio_format: AudioFormat = data.response_format
    queue = speech_service.queue

    async def work(emit) -> None:  # type: ignore[no-untyped-def]
        await stream_speech(phrases, synthesizer, queue, audio_format, emit, speed=data.speed)

    # One queue job per phrase; slower speech is longer audio to compute.
    stages = [(queue, len(phrases) / min(data.speed, 1.0))]
    chunks = await open_stream(request, settings.turn_timeout("voice"), stages, work)
    return Stream(chunks, media_type=MEDIA_TYPES[audio_format], headers=_HEADERS)


class Voice(msgspec.Struct):
    id: str
    object: Literal["voice"]
    speaks_with: str
    """The installed voice that speaks for this name (itself for an installed voice)."""
    loaded: bool
    """In memory already (else loaded by the first request that names it)."""


class VoiceList(msgspec.Struct):
    object: Literal["list"]
    data: list[Voice]


@get(
    "/audio/voices",
    summary="Voices accepted by /v1/audio/speech (not in OpenAI's API)",
    responses=openai_error_responses(401, 503),
    sync_to_thread=False,
)
def list_voices(services: NamedDependency[Services]) -> VoiceList:
    entries = _voices(services).describe()
    return VoiceList(
        object="list",
        data=[Voice(id=v.name, object="voice", speaks_with=v.speaks_with, loaded=v.loaded) for v in entries],
    )
