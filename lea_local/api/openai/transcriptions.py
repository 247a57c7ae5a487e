"""POST /v1/audio/transcriptions: OpenAI's Whisper transcription, answered by the local
recogniser with the voice endpoint's decoding, limits, queues and bounded recognition; nothing
is stored. `model` may be any name ("whisper-1", "gpt-4o-transcribe"…): the local model answers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import msgspec
from litestar import MediaType, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import Body

from lea_local.api.deadline import request_deadline
from lea_local.api.openai.errors import OpenAIError, openai_error_responses
from lea_local.asr.decode import AudioRejected
from lea_local.asr.languages import LANGUAGE_NAMES, language_name
from lea_local.asr.subtitles import to_srt, to_vtt
from lea_local.pipeline.transcriptions import Transcriber, Transcription, TranscriptionOptions
from lea_local.services import Services

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")


class TranscriptionForm(msgspec.Struct):
    """OpenAI's multipart fields. Fields OpenAI's newer models take (`include[]`,
    `chunking_strategy`…) are ignored, as OpenAI ignores them for whisper-1."""

    file: UploadFile | None = None
    """The recording: webm, mp4/m4a, ogg, wav, mp3, flac… (recognised from its bytes)."""
    model: str | None = None
    """Any name (whisper-1, gpt-4o-transcribe…): the local speech recogniser answers."""
    language: str | None = None
    """ISO-639-1 code of the spoken language ("fr"); absent: the server's (LEA_ASR_LANGUAGE)."""
    prompt: str | None = None
    """Whisper's initial prompt for this call (spellings, names); replaces the locale's vocabulary."""
    response_format: str | None = None
    """json (default), text, srt, vtt or verbose_json."""
    temperature: float | None = None
    """0 to 1: the first decoding temperature (one fallback at most, 0.2 higher)."""
    timestamp_granularities: str | list[str] | None = msgspec.field(default=None, name="timestamp_granularities[]")
    """segment and/or word: accepted; segments are what verbose_json gives."""
    stream: bool | None = None
    """Only false: transcripts are not streamed (as for whisper-1)."""


class Usage(msgspec.Struct):
    type: Literal["duration"]
    seconds: int
    """The recording's length, rounded up to the second (as OpenAI bills it)."""


class TranscriptionJson(msgspec.Struct):
    text: str
    usage: Usage


class Segment(msgspec.Struct):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionVerboseJson(msgspec.Struct):
    task: Literal["transcribe"]
    language: str
    """The language's English name, as OpenAI gives it ("french")."""
    duration: float
    text: str
    segments: list[Segment]
    usage: Usage


@dataclass
class _TextOrJsonOperation(Operation):
    """The 200 answer is JSON for json/verbose_json, text for text/srt/vtt: both are declared."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content[MediaType.TEXT.value] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))


def _options(form: TranscriptionForm, services: Services) -> tuple[ResponseFormat, TranscriptionOptions]:
    """The form's choices, checked; a bad one is a 400 that names its parameter."""
    response_format = form.response_format or "json"
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}", param="response_format")
    language = form.language.strip().lower() if form.language else None
    if language is not None and language not in LANGUAGE_NAMES:
        raise OpenAIError(400, "language must be an ISO-639-1 code Whisper knows, such as 'fr'", param="language")
    temperature = form.temperature
    if temperature is not None and not (math.isfinite(temperature) and 0.0 <= temperature <= 1.0):
        raise OpenAIError(400, "temperature must be between 0 and 1", param="temperature")
    granularities = form.timestamp_granularities
    for granularity in [granularities] if isinstance(granularities, str) else granularities or []:
        if granularity not in GRANULARITIES:
            raise OpenAIError(400, "timestamp_granularities[] must be segment or word", param="timestamp_granularities")
    if form.stream:
        raise OpenAIError(400, "streamed transcription is not supported: send stream=false", param="stream")
    max_chars = services.settings.max_message_chars
    if form.prompt is not None and len(form.prompt) > max_chars:
        raise OpenAIError(400, f"prompt is longer than {max_chars} characters", param="prompt")
    # `prompt` present, even empty, replaces the vocabulary prompt (empty: none), as Whisper's does.
    options = TranscriptionOptions(language=language, prompt=form.prompt, temperature=temperature)
    return cast(ResponseFormat, response_format), options


def _answer(result: Transcription, response_format: ResponseFormat) -> Response[Any]:
    if response_format == "text":
        return Response(content=result.text, media_type=MediaType.TEXT)
    if response_format == "srt":
        return Response(content=to_srt(result.segments), media_type=MediaType.TEXT)
    if response_format == "vtt":
        return Response(content=to_vtt(result.segments), media_type=MediaType.TEXT)
    usage = Usage(type="duration", seconds=math.ceil(result.audio_seconds))
    if response_format == "json":
        return Response(content=TranscriptionJson(text=result.text, usage=usage))
    segments = [
        Segment(
            id=s.id,
            seek=s.seek,
            start=round(s.start, 3),
            end=round(s.end, 3),
            text=s.text,
            tokens=list(s.tokens),
            temperature=s.temperature,
            avg_logprob=s.avg_logprob,
            compression_ratio=s.compression_ratio,
            no_speech_prob=s.no_speech_prob,
        )
        for s in result.segments
    ]
    verbose = TranscriptionVerboseJson(
        task="transcribe",
        language=language_name(result.language) or "",
        duration=round(result.audio_seconds, 3),
        text=result.text,
        segments=segments,
        usage=usage,
    )
    return Response(content=verbose)


@post(
    "/audio/transcriptions",
    status_code=200,
    summary="Transcribe a recording (OpenAI-compatible)",
    description="json and verbose_json answer JSON; text, srt and vtt answer text. Silence gives an empty text.",
    responses=openai_error_responses(400, 401, 413, 500, 503, 504),
    operation_class=_TextOrJsonOperation,
)
async def transcriptions(
    data: Annotated[TranscriptionForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    request: Request,
    services: NamedDependency[Services],
) -> Response[TranscriptionJson | TranscriptionVerboseJson]:
    settings = services.settings
    if data.file is None:
        raise OpenAIError(400, "file is required (a multipart file field)", param="file")
    response_format, options = _options(data, services)
    audio = await data.file.read(settings.max_upload_bytes + 1)
    if len(audio) > settings.max_upload_bytes:
        raise OpenAIError(413, f"the recording is larger than {settings.max_upload_bytes} bytes", param="file")
    if services.voice is None:
        raise OpenAIError(503, "speech recognition is not available on this server")
    transcriber = Transcriber(services.voice)
    stages = [(services.voice.decode_queue, 1.0), (services.voice.asr_queue, 1.0)]
    async with request_deadline(request, settings.turn_timeout("voice"), stages) as deadline:
        try:
            result = await transcriber.transcribe(audio, options, deadline.cancel)
        except AudioRejected as exc:
            raise OpenAIError(exc.status, str(exc), param="file") from exc
    return _answer(result, response_format)
