"""GET /media/tts/<name>: generated speech, for the browser's <audio> element (no API key: the
name itself, 192 random bits, is the credential; it lists nothing and expires)."""

from __future__ import annotations

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import File

from lea_local.api.errors import ApiError
from lea_local.api.openapi import error_responses
from lea_local.settings import Settings
from lea_local.tts.encode import MEDIA_TYPES

MEDIA_PREFIX = "/media/tts"


def audio_url(request: Request, settings: Settings, name: str | None) -> str | None:
    """Absolute URL of a stored file: on the public base URL when one is set (behind a proxy),
    else on the base URL the request came to."""
    if name is None:
        return None
    base = settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}{MEDIA_PREFIX}/{name}"


@get(f"{MEDIA_PREFIX}/{{name:str}}", summary="Generated speech", sync_to_thread=False, responses=error_responses(404))
def tts_audio(name: FromPath[str], state: State) -> File:
    runtime = state.runtime
    path = runtime.services.speech.store.resolve(name) if runtime.ready else None
    if path is None:
        raise ApiError(status_code=404, detail="audio not found or expired")
    return File(
        path=path,
        media_type=MEDIA_TYPES[path.suffix.lstrip(".")],
        content_disposition_type="inline",
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
