"""Wire types of OpenAI's chat completions API (POST /v1/chat/completions), as the official SDKs
send and read them (errors: `lea_local.api.openai.errors`).

Fields this server does not act on (`frequency_penalty`, `presence_penalty`, `logprobs`,
`metadata`…) are ignored, as OpenAI ignores what it does not know. Tools (and the legacy
functions) and JSON output are read by the route (`chat.py`), which checks each tool's schema
itself so that its errors name the parameter at fault."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length", "tool_calls", "function_call"]

# Integers are 64-bit, as in OpenAI's schema (JSON allows any size).
INT64_MAX = 2**63 - 1
# A stop string is searched for at every generated token: longer ones cost quadratic time.
MAX_STOP_CHARS = 256


class ContentPart(msgspec.Struct):
    """A part of a message's content. Only `{"type": "text", "text": …}` is read here; the
    other OpenAI types (image_url, input_audio, file…) are refused, the model reads text only."""

    type: str
    text: str | None = None


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str
    """The arguments object as JSON text."""


class MessageToolCall(msgspec.Struct):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    function: FunctionCall
    type: Literal["function"] = "function"


class RequestMessage(msgspec.Struct):
    role: Role
    """`developer` is read as `system`; `function` (legacy) as `tool`."""
    content: str | list[ContentPart] | None = None
    """Required, except on an assistant message that carries `tool_calls` or `function_call`."""
    name: str | None = None
    """A `function` message's function; ignored on the other roles."""
    tool_calls: list[MessageToolCall] | None = None
    """An assistant message's calls, answered by the `tool` messages after it."""
    tool_call_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    """A `tool` message: the call it answers (one of an earlier assistant message's)."""
    function_call: FunctionCall | None = None
    """Legacy: an assistant message's one call."""


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None
    """Send a last chunk, with empty `choices`, that carries the request's `usage`."""


class JsonSchemaFormat(msgspec.Struct):
    name: str
    schema: dict[str, Any] | None = None
    """A JSON Schema object; the reply validates against it (absent: any JSON object)."""
    strict: bool | None = None
    """Accepted: the reply is always constrained to the schema."""
    description: str | None = None


class ResponseFormat(msgspec.Struct):
    type: str
    """`text`, `json_object` (the reply is one JSON object) or `json_schema` (one valid against
    `json_schema.schema`)."""
    json_schema: JsonSchemaFormat | None = None


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
    tools: list[Any] | None = None
    """Functions the model may call: `{"type": "function", "function": {name, description,
    parameters, strict}}`, at most 128; each `parameters` a JSON Schema object."""
    tool_choice: str | dict[str, Any] | None = None
    """`auto` (default with tools), `none`, `required`, or `{"type": "function", "function": {"name": …}}`."""
    parallel_tool_calls: bool | None = None
    """Several calls in one reply (default true)."""
    functions: list[Any] | None = None
    """Legacy `tools`: the answer then has `function_call` (one call at most)."""
    function_call: str | dict[str, Any] | None = None
    """Legacy `tool_choice`: `auto`, `none` or `{"name": …}`."""
    response_format: ResponseFormat | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseFunction(msgspec.Struct):
    name: str
    arguments: str
    """JSON text, valid against the function's parameters."""


class ResponseToolCall(msgspec.Struct):
    id: str
    type: Literal["function"]
    function: ResponseFunction


class ResponseMessage(msgspec.Struct):
    role: Literal["assistant"]
    content: str | None
    """None when the reply is only calls."""
    refusal: None = None
    tool_calls: list[ResponseToolCall] | None = None
    function_call: ResponseFunction | None = None
    """Legacy (`functions` in the request)."""


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


class ChunkFunction(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(msgspec.Struct, omit_defaults=True):
    """A fragment of a call: the first of each (by `index`) has its id, type and name."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunction | None = None


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None
    function_call: ChunkFunction | None = None


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
