"""POST /api/external/agent/erase: forget everything stored for a session or a user (a GDPR
erasure request from ImmoAssist): conversations, messages and generated audio.

Turns under way are part of what is erased: the erasure waits for the session's running turn
(or every running turn of the user) to be stored, then erases it with the rest, also when that
turn runs on another replica of a shared PostgreSQL store (the session locks are in the
database). That turn still answers its caller normally (its reply was produced before the
erasure took effect), and an erasure that answers success has left nothing behind, also in the
database's files on SQLite (deleted rows are overwritten and the write-ahead log is emptied).
A realtime session open on an erased session (or of the erased user) in this process forgets
what it holds and ends (`RealtimeSession.conversation_erased`); one open on another replica ends
at its next write to the store, which finds its messages gone.
PostgreSQL keeps deleted rows' old versions until VACUUM reuses their space, and in its
write-ahead log and backups: that part is the database administrator's (see docs/scaling-out.md).
"""

from __future__ import annotations

from datetime import datetime

import anyio.to_thread
import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from lea_local.api.errors import ApiError
from lea_local.api.openapi import error_responses
from lea_local.api.realtime import SESSIONS_KEY
from lea_local.api.validation import clean_identifier, strictly
from lea_local.services import Services
from lea_local.store.conversations import Erased


class EraseRequest(msgspec.Struct):
    session_id: str | None = None
    user_id: str | None = None


class ErasedCounts(msgspec.Struct):
    conversations: int
    """Conversations deleted (for a user: those left without any turn)."""
    messages: int
    """Messages deleted (both messages of each turn)."""
    audio_files: int
    """Generated audio files deleted."""


class EraseResponse(msgspec.Struct):
    success: bool
    erased: ErasedCounts


@post("/erase", status_code=200, summary="Erase a session's or a user's data", responses=error_responses(400, 401, 409))
async def erase(data: JSONBody[EraseRequest], request: Request, services: NamedDependency[Services]) -> EraseResponse:
    data = await strictly(request, EraseRequest)
    session_id = clean_identifier(data.session_id, "session_id")
    user_id = clean_identifier(data.user_id, "user_id", 256)
    if (session_id is None) == (user_id is None):
        raise ApiError(status_code=400, detail="give exactly one of session_id or user_id")
    settings = services.settings
    # A turn ends within its time budget (504 past it), so waiting that long sees it stored.
    wait = max(settings.turn_timeout("chat"), settings.turn_timeout("voice")) + 5
    # A user's erasure may empty a conversation that another turn is continuing: their sessions
    # are settled too, not only those where the user has a turn under way.
    sessions = [session_id] if session_id is not None else []
    if user_id is not None:
        sessions = await anyio.to_thread.run_sync(services.store.sessions_of_user, user_id)
    try:
        async with services.turns.turns_settled(session_ids=sessions, user_id=user_id, wait_seconds=wait):
            erased = await anyio.to_thread.run_sync(
                lambda: services.store.erase(session_id=session_id, user_id=user_id)
            )
            # Still inside: a live session's next write waits behind this, then finds it erased.
            for live in list(request.app.state.get(SESSIONS_KEY) or ()):
                if live.store_session in sessions or (user_id is not None and live.user_id == user_id):
                    live.conversation_erased()
    except TimeoutError:
        raise ApiError(
            status_code=409,
            detail="a conversation turn of this session or user is still running: nothing was erased, try again",
        ) from None
    files = services.speech.erase(erased.audio_files) if services.speech is not None else 0
    return EraseResponse(
        success=True,
        erased=ErasedCounts(conversations=erased.conversations, messages=erased.messages, audio_files=files),
    )


# A session's running turn is about to update its conversation: the purge does not wait long
# for it, and comes back to that session's old conversations an hour later.
PURGE_WAIT_SECONDS = 5.0


async def purge_expired(services: Services, older_than: datetime) -> tuple[Erased, int]:
    """The retention purge: every conversation last updated before `older_than`, session by
    session, each erased while no turn of its session is under way (so a turn never finds its
    conversation gone halfway). Returns what was erased and how many audio files were deleted."""
    store = services.store
    total = Erased(0, 0, [])
    for session_id in await anyio.to_thread.run_sync(store.expired_sessions, older_than):
        try:
            async with services.turns.turns_settled(session_ids=[session_id], wait_seconds=PURGE_WAIT_SECONDS):
                total += await anyio.to_thread.run_sync(
                    lambda session_id=session_id: store.erase(session_id=session_id, older_than=older_than)
                )
        except TimeoutError:
            continue
    files = services.speech.erase(total.audio_files) if services.speech is not None else 0
    return total, files
