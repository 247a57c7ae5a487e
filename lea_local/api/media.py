"""GET and HEAD /media/tts/<name>: generated speech, for the browser's <audio> element (no API
key: the name itself, 192 random bits, is the credential; it lists nothing and expires).

While the speech is still being synthesised, a plain GET streams it from the first sentence on;
a Range or HEAD request (Safari's media element asks with ranges) waits until it is complete.
That holds on every replica sharing the audio store: the synthesising one reads its job's
memory, the others follow the partial audio it writes (`SpeechService.find_audio` finds it).
A complete file is served with byte ranges (206), a strong ETag (304 on If-None-Match) and its
length. Litestar's `File` does neither ranges nor conditional requests, and it stats the file
after the handler returned (a file swept meanwhile gave a 500 naming its path): the file is
read here, whole (a reply's audio is a few hundred KB), and answered from memory."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from email.utils import formatdate

from litestar import HttpMethod, Request, Response, route
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath
from litestar.response import Stream

from lea_local.api.errors import ApiError, still_starting
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import ErrorResponse
from lea_local.settings import Settings
from lea_local.tts.audio_store import AudioIncomplete, StoredAudio
from lea_local.tts.encode import MEDIA_TYPES
from lea_local.tts.speech import AudioStream

log = logging.getLogger(__name__)

MEDIA_PREFIX = "/media/tts"
_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff", "Accept-Ranges": "bytes"}
# One range; more digits than a file could have are treated as an invalid header (ignored).
_RANGE = re.compile(r"bytes=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", re.IGNORECASE)


def audio_url(request: Request, settings: Settings, name: str | None) -> str | None:
    """Absolute URL of a stored file: on the public base URL when one is set (behind a proxy),
    else on the base URL the request came to."""
    if name is None:
        return None
    base = settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}{MEDIA_PREFIX}/{name}"


def _not_found() -> ApiError:
    return ApiError(status_code=404, detail="audio not found or expired")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) asked by a Range header, or None to serve the whole
    file: a header that is not one valid byte range is ignored, as RFC 9110 allows (several
    ranges included). Raises 416 when the range lies outside the file."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # bytes=-N: the last N bytes
        start, end = max(0, size - int(last)), size - 1
        satisfiable = int(last) > 0 and size > 0
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
        satisfiable = start < size
    if not satisfiable:
        raise ApiError(
            status_code=416,
            detail=f"the range {header.strip()!r} is outside the audio ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match: weak comparison, a list or `*`."""
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _stored_response(request: Request, audio: StoredAudio, media_type: str) -> Response[bytes]:
    size = len(audio.data)
    last_modified = formatdate(audio.modified, usegmt=True)
    headers = {**_HEADERS, "ETag": audio.etag, "Last-Modified": last_modified}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, audio.etag):
        return Response(b"", status_code=304, headers=headers, media_type=media_type)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() not in (audio.etag, last_modified):
        range_header = None  # the client's copy is another file: send the whole of this one
    selected = byte_range(range_header, size) if range_header and request.method == "GET" else None
    if request.method == "HEAD":
        return Response(b"", headers={**headers, "Content-Length": str(size)}, media_type=media_type)
    if selected is None:
        return Response(audio.data, headers=headers, media_type=media_type)
    start, end = selected
    return Response(
        audio.data[start : end + 1],
        status_code=206,
        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
        media_type=media_type,
    )


def _incomplete(exc: AudioIncomplete) -> ApiError:
    return _not_found() if exc.erased else ApiError(status_code=500, detail=str(exc))


def _streamed_response(audio: AudioStream) -> Stream:
    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in audio.chunks:
                yield chunk
        except AudioIncomplete as exc:
            # The 200 is gone: end the response without its last chunk, so that the player
            # sees a broken transfer, not a complete (truncated) file.
            log.warning("audio stream aborted: %s", exc, extra={"event": "tts.stream_aborted"})
            raise

    return Stream(chunks(), media_type=audio.media_type, headers=_HEADERS)


@route(
    f"{MEDIA_PREFIX}/{{name:str}}",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    summary="Generated speech (streamed while it is being synthesised; byte ranges once complete)",
    responses={
        **error_responses(404, 500),
        416: ResponseSpec(
            data_container=ErrorResponse,
            description="The byte range lies outside the audio (Content-Range: bytes */<size>)",
            generate_examples=False,
        ),
    },
)
async def tts_audio(name: FromPath[str], request: Request, state: State) -> Response:
    runtime = state.runtime
    if not runtime.ready or runtime.services is None:
        # 503, not 404: the audio may well exist (another replica's, in the shared directory);
        # nginx moves a GET on to the next replica, a client retries after Retry-After.
        raise still_starting()
    speech = runtime.services.speech
    if speech is None:
        raise _not_found()
    try:
        audio = await speech.find_audio(
            name,
            streamed=request.method == "GET" and "range" not in request.headers,
            timeout=runtime.services.settings.tts_stream_timeout_seconds,
        )
    except AudioIncomplete as exc:
        raise _incomplete(exc) from exc
    if audio is None:
        raise _not_found()
    if isinstance(audio, AudioStream):
        return _streamed_response(audio)
    return _stored_response(request, audio, MEDIA_TYPES[name.rsplit(".", 1)[1]])
