"""GET /v1/realtime upgraded to a websocket: OpenAI's Realtime protocol (`lea_local.pipeline.realtime`).

The handshake is the route's: the key as on every /v1 route (`Authorization: Bearer` or
`X-API-Key`; a refused key is a 401 answered before the upgrade, in OpenAI's error shape), a
503 with `Retry-After` when the server cannot serve a session (still loading, stopping, no
speech engines, `LEA_REALTIME_MAX_SESSIONS` already open), the dialect from `OpenAI-Beta:
realtime=v1` (beta) or its absence (GA). Then the session runs until the client hangs up or a
limit closes it (code 1008 after its `error` event). A raw ASGI handler: Litestar's websocket
routes cannot answer a refused handshake with a status of our choosing."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from litestar import asgi
from litestar.connection import ASGIConnection
from litestar.types import Receive, Scope, Send

from lea_local.api.auth import key_is_valid, presented_key
from lea_local.api.errors import ApiError
from lea_local.api.openai.errors import openai_error_body
from lea_local.api.validation import clean_identifier
from lea_local.pipeline.realtime import RealtimeEngines, RealtimeLimits, RealtimeSession, SessionEnded
from lea_local.services import Services
from lea_local.settings import Settings

log = logging.getLogger(__name__)

SESSIONS_KEY = "realtime_sessions"


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


async def _answer(send: Send, scope: Scope, status: int, message: str, headers: dict[str, str]) -> None:
    """An HTTP answer: to a plain GET, or instead of the upgrade (ASGI's denial response;
    without it, the server can only close, which clients see as a 403)."""
    body = json.dumps(openai_error_body(status, message)).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    fields += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await send({"type": "websocket.http.response.start", "status": status, "headers": fields})  # type: ignore[typeddict-item]
        await send({"type": "websocket.http.response.body", "body": body})  # type: ignore[typeddict-item]
        return
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


def _admit(scope: Scope, receive: Receive) -> tuple[Services, set[RealtimeSession]]:
    """The services and the open sessions, or Refused with the handshake's answer."""
    state = scope["app"].state
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive)
    if not key_is_valid(presented_key(connection), state.api_keys + state.admin_keys):
        raise Refused(401, "Invalid or missing API key (X-API-Key or Authorization: Bearer)")
    if scope["type"] != "websocket":
        raise Refused(426, "/v1/realtime speaks OpenAI's Realtime protocol over a websocket", {"Upgrade": "websocket"})
    runtime = state.runtime
    services: Services | None = runtime.services if runtime.ready else None
    if services is None:
        raise Refused(503, "Léa is still starting; try again in a few seconds", {"Retry-After": "5"})
    if state.drain.stopping:
        raise Refused(503, "Léa is restarting; try again in a few seconds", {"Retry-After": "5"})
    if services.voice is None or services.speech is None:
        # Retry-After as every 503 here: behind nginx, the next try may reach a replica that has them.
        raise Refused(
            503, "this server has no speech recognition or synthesis for realtime sessions", {"Retry-After": "30"}
        )
    sessions: set[RealtimeSession] = state.setdefault(SESSIONS_KEY, set())
    settings: Settings = services.settings
    if len(sessions) >= settings.realtime_max_sessions:
        raise Refused(
            503,
            f"Léa already holds {settings.realtime_max_sessions} realtime sessions (LEA_REALTIME_MAX_SESSIONS); "
            "try again later",
            {"Retry-After": "30"},
        )
    return services, sessions


def _subprotocols(scope: Scope) -> list[str]:
    return [p.strip() for p in scope.get("subprotocols", []) if p.strip()]


def _dialect(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name.lower() == b"openai-beta" and b"realtime=v1" in value.replace(b" ", b"").lower():
            return "beta"
    # A page cannot send headers: it offers the subprotocol `openai-beta.realtime-v1` instead.
    return "beta" if "openai-beta.realtime-v1" in _subprotocols(scope) else "ga"


def _accepted_subprotocol(scope: Scope) -> str | None:
    """`realtime` when the client offered it (a page does, beside its key): a browser drops a
    connection whose answer selects none of the subprotocols it offered."""
    return "realtime" if "realtime" in _subprotocols(scope) else None


@asgi("/v1/realtime", copy_scope=False, include_in_schema=False)
async def realtime(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket" and (await receive())["type"] != "websocket.connect":
        return
    try:
        services, sessions = _admit(scope, receive)
    except Refused as refused:
        await _answer(send, scope, refused.status, str(refused), refused.headers)
        return
    settings = services.settings
    assert services.voice is not None and services.speech is not None
    query = ASGIConnection(scope, receive).query_params  # type: ignore[var-annotated]
    try:
        session_id = clean_identifier(query.get("session_id"), "session_id")
        user_id = clean_identifier(query.get("user_id"), "user_id", 256)
    except ApiError as exc:
        await _answer(send, scope, 400, str(exc.detail), {})
        return
    session = RealtimeSession(
        RealtimeEngines(chat=services.turns, voice=services.voice, speech=services.speech, voices=services.voices),
        RealtimeLimits(
            max_session_seconds=settings.realtime_max_session_seconds,
            idle_seconds=settings.realtime_idle_seconds,
            max_buffer_seconds=settings.realtime_max_buffer_seconds,
            max_event_bytes=settings.realtime_max_event_bytes,
            turn_seconds=settings.turn_timeout("voice"),
        ),
        _dialect(scope),  # type: ignore[arg-type]
        model=query.get("model") or services.chat_engine.model_name,
        language=None if settings.asr_language == "auto" else settings.asr_language,
        log_content=settings.log_content,
        session_id=session_id,
        user_id=user_id,
    )

    async def next_message() -> str | bytes | None:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        return message.get("text") if message.get("text") is not None else message.get("bytes") or b""

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    how = "hang-up"
    sessions.add(session)
    try:
        await send({"type": "websocket.accept", "subprotocol": _accepted_subprotocol(scope)})
        log.info(
            "realtime session opened",
            extra={
                "event": "realtime.open",
                "session": session.id,
                "dialect": session.dialect,
                "sessions": len(sessions),
            },
        )
        await session.serve(next_message, send_text)
    except SessionEnded as ended:
        how = ended.reason
        with contextlib.suppress(OSError):
            await send({"type": "websocket.close", "code": ended.code, "reason": ended.reason})
    except OSError:  # the client vanished while an event was being sent
        how = "connection lost"
    finally:
        sessions.discard(session)
        log.info(
            "realtime session closed",
            extra={"event": "realtime.close", "session": session.id, "how": how, "sessions": len(sessions)},
        )
