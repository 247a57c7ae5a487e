"""Wire types of OpenAI's chat completions API (POST /v1/chat/completions), as the official SDKs
send and read them (errors: `lea_local.api.openai.errors`).

Fields this server does not act on (`frequency_penalty`, `presence_penalty`, `logprobs`,
`parallel_tool_calls`, `metadata`…) are ignored, as OpenAI ignores what it does not know;
fields whose silent neglect would mislead the client (tools, JSON output) are declared here so
that the route can refuse them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length"]

# Integers are 64-bit, as in OpenAI's schema (JSON allows any size).
INT64_MAX = 2**63 - 1
# A stop string is searched for at every generated token: longer ones cost quadratic time.
MAX_STOP_CHARS = 256


class ContentPart(msgspec.Struct):
    """A part of a message's content. Only `{"type": "text", "text": …}` is read here; the
    other OpenAI types (image_url, input_audio, file…) are refused, the model reads text only."""

    type: str
    text: str | None = None


class RequestMessage(msgspec.Struct):
    role: Role
    """`developer` is read as `system`; `tool` and `function` are refused (no tool calling here)."""
    content: str | list[ContentPart]
    """Required: a message without text (an assistant's tool calls) has no use here."""
    name: str | None = None
    """Accepted and ignored."""
    tool_calls: list[dict[str, Any]] | None = None
    """Refused when not empty (no tool calling here)."""


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None
    """Send a last chunk, with empty `choices`, that carries the request's `usage`."""


class ResponseFormat(msgspec.Struct):
    type: str
    """Only `text`: JSON modes are refused rather than answered with text that is not JSON."""


class ChatCompletionRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    """Any name (gpt-4o-mini…): the loaded model answers, and the answer names it."""
    messages: Annotated[list[RequestMessage], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)] | None = None
    """Longest reply in tokens (default `LEA_LLM_MAX_REPLY_TOKENS`), capped at what the context
    window leaves after the prompt."""
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)] | None = None
    """OpenAI's newer name for `max_tokens`; wins when both are given."""
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    """Default: `LEA_LLM_TEMPERATURE` (small local models ramble at OpenAI's default of 1)."""
    top_p: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    stop: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STOP_CHARS)]
        | Annotated[
            list[Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STOP_CHARS)]],
            msgspec.Meta(max_length=4),
        ]
        | None
    ) = None
    """Up to 4 strings that end the reply; they are not part of it."""
    seed: Annotated[int, msgspec.Meta(ge=-INT64_MAX - 1, le=INT64_MAX)] | None = None
    """The same request with the same seed gives the same reply."""
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    """Only 1."""
    user: str | None = None
    """Accepted and ignored."""
    tools: list[dict[str, Any]] | None = None
    """Refused when not empty, unless `tool_choice` is "none": the local model calls no tools."""
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    """Legacy `tools`: refused the same way."""
    function_call: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(msgspec.Struct):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class Choice(msgspec.Struct):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    """The local model that answered, whatever name the request gave."""
    choices: list[Choice]
    usage: Usage


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, omit_defaults=True):
    """One server-sent event of a streamed completion (`data: <this>`), ended by `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    """Only in the last chunk, with empty `choices`, when `stream_options.include_usage`."""
