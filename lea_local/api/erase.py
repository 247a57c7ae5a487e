"""POST /api/external/agent/erase: forget everything stored for a session or a user (a GDPR
erasure request from ImmoAssist): conversations, messages and generated audio."""

from __future__ import annotations

import anyio.to_thread
import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from lea_local.api.errors import ApiError
from lea_local.api.openapi import error_responses
from lea_local.api.validation import clean_identifier, strictly
from lea_local.services import Services


class EraseRequest(msgspec.Struct):
    session_id: str | None = None
    user_id: str | None = None


class ErasedCounts(msgspec.Struct):
    conversations: int
    messages: int
    audio_files: int


class EraseResponse(msgspec.Struct):
    success: bool
    erased: ErasedCounts


@post("/erase", status_code=200, summary="Erase a session's or a user's data", responses=error_responses(400, 401))
async def erase(data: JSONBody[EraseRequest], request: Request, services: NamedDependency[Services]) -> EraseResponse:
    data = await strictly(request, EraseRequest)
    session_id = clean_identifier(data.session_id, "session_id")
    user_id = clean_identifier(data.user_id, "user_id", 256)
    if (session_id is None) == (user_id is None):
        raise ApiError(status_code=400, detail="give exactly one of session_id or user_id")
    erased = await anyio.to_thread.run_sync(lambda: services.store.erase(session_id=session_id, user_id=user_id))
    files = services.speech.erase(erased.audio_files) if services.speech is not None else 0
    return EraseResponse(
        success=True,
        erased=ErasedCounts(conversations=erased.conversations, messages=erased.messages, audio_files=files),
    )
