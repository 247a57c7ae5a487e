"""Wire types of the ImmoAssist agent contract (docs/contract/agent-api.fr.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

if TYPE_CHECKING:
    from lea_local.pipeline.turns import TurnResult

SessionId = Annotated[str, msgspec.Meta(max_length=128, description="Session id (reused, or created when absent)")]


class ChatRequest(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(description="The user's message")]
    session_id: SessionId | None = None
    conversation_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None


class Usage(msgspec.Struct):
    """The turn's token counts (ImmoAssist shows them in its "Logs IA" panel)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Source(msgspec.Struct):
    """A document of the knowledge base that the reply's prompt carried a passage of."""

    title: str
    file: str
    section: str
    """The passage's heading path in its document ("" for text before any heading)."""


Sources = Annotated[
    list[Source],
    msgspec.Meta(
        description="The knowledge base's documents and sections Léa was given passages of, once each, in prompt order"
    ),
]


class ChatResponse(msgspec.Struct):
    success: bool
    response: str
    session_id: str
    conversation_id: int
    model: str
    provider: str
    assistant_audio_url: str | None
    usage: Usage
    sources: Sources = msgspec.field(default_factory=list)


class VoiceChatResponse(msgspec.Struct):
    success: bool
    transcription: str
    response: str
    session_id: str
    conversation_id: int
    assistant_audio_url: str | None
    model: str
    provider: str
    usage: Usage
    sources: Sources = msgspec.field(default_factory=list)


class ErrorResponse(msgspec.Struct):
    success: bool
    error: str
    detail: str
    """The same message: ImmoAssist's web app shows `detail` to the user."""


class HealthResponse(msgspec.Struct):
    status: str


class AgentHealthResponse(msgspec.Struct):
    """ImmoAssist's capability check (`GET /api/external/health`, with the key)."""

    success: bool
    status: str
    """`ok` once every model is loaded and warmed up, else `loading`."""
    ready: bool
    models: dict[str, str]
    locale: str


class ReadyResponse(msgspec.Struct):
    status: str
    models: dict[str, str]


def sources_of(turn: TurnResult) -> list[Source]:
    return [Source(title=s.title, file=s.file, section=s.section) for s in turn.sources]


def usage_of(turn: TurnResult) -> Usage:
    return Usage(
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
        total_tokens=turn.prompt_tokens + turn.completion_tokens,
    )
