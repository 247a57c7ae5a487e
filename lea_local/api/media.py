"""GET /media/tts/<name>: generated speech, for the browser's <audio> element (no API key: the
name itself, 192 random bits, is the credential; it lists nothing and expires).

While the speech is still being synthesised, the response streams it from the first sentence
on; once done, the stored file is served."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import File, Stream

from lea_local.api.errors import ApiError
from lea_local.api.openapi import error_responses
from lea_local.settings import Settings
from lea_local.tts.encode import MEDIA_TYPES
from lea_local.tts.speech import SpeechFailed

MEDIA_PREFIX = "/media/tts"
_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


def audio_url(request: Request, settings: Settings, name: str | None) -> str | None:
    """Absolute URL of a stored file: on the public base URL when one is set (behind a proxy),
    else on the base URL the request came to."""
    if name is None:
        return None
    base = settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}{MEDIA_PREFIX}/{name}"


@get(
    f"{MEDIA_PREFIX}/{{name:str}}",
    summary="Generated speech (streamed while it is being synthesised)",
    responses=error_responses(404, 500),
)
async def tts_audio(name: FromPath[str], state: State) -> File | Stream:
    runtime = state.runtime
    speech = runtime.services.speech if runtime.ready else None
    if speech is None:
        raise ApiError(status_code=404, detail="audio not found or expired")
    job = speech.job(name)
    if job is not None and not job.done:
        chunks = job.stream(timeout=runtime.services.settings.tts_stream_timeout_seconds)
        try:
            first = await anext(chunks)  # the status must tell a failure, so wait for audio first
        except SpeechFailed as exc:
            raise ApiError(status_code=500, detail=str(exc)) from exc
        except StopAsyncIteration:
            first = b""

        async def rest() -> AsyncIterator[bytes]:
            yield first
            try:
                async for chunk in chunks:
                    yield chunk
            except SpeechFailed:
                return  # headers are gone: the stream ends early, the player stops

        return Stream(rest(), media_type=job.media_type, headers=_HEADERS)
    path = speech.store.resolve(name)
    if path is None:
        raise ApiError(status_code=404, detail="audio not found or expired")
    return File(
        path=path,
        media_type=MEDIA_TYPES[path.suffix.lstrip(".")],
        content_disposition_type="inline",
        headers=_HEADERS,
    )
