"""Wire types of the ImmoAssist agent contract (shared/contract/agent-api.fr.md)."""

from __future__ import annotations

from typing import Annotated

import msgspec

SessionId = Annotated[str, msgspec.Meta(max_length=128, description="Session id (reused, or created when absent)")]


class ChatRequest(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(description="The user's message")]
    session_id: SessionId | None = None
    conversation_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None


class ChatResponse(msgspec.Struct):
    success: bool
    response: str
    session_id: str
    conversation_id: int
    model: str
    provider: str
    assistant_audio_url: str | None


class VoiceChatResponse(msgspec.Struct):
    success: bool
    transcription: str
    response: str
    session_id: str
    conversation_id: int
    assistant_audio_url: str | None


class ErrorResponse(msgspec.Struct):
    success: bool
    error: str


class HealthResponse(msgspec.Struct):
    status: str


class ReadyResponse(msgspec.Struct):
    status: str
    models: dict[str, str]
