"""What the conversation pipeline needs from a chat model. Another backend (vLLM, an
OpenAI-compatible server on the LAN…) is one new module that satisfies `ChatEngine`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: `arguments` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant message's calls (its `content` may then be empty)."""
    tool_call_id: str | None = None
    """A `tool` message: the call it answers."""
    name: str | None = None
    """A `tool` message: the tool's name (found from its call)."""


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; `parameters` is a checked JSON Schema object
    (`lea_local.llm.grammar.check_schema`)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolUse:
    """The tools of a generation and what the model must do with them. `mode`: "auto" (text or
    calls, the model chooses), "required" (at least one call), "named" (one call of `name`)."""

    tools: tuple[ToolSpec, ...]
    mode: Literal["auto", "required", "named"] = "auto"
    name: str | None = None
    parallel: bool = True
    """Several calls in one reply allowed."""


@dataclass(frozen=True)
class JsonOutput:
    """The reply is one JSON object: any (`schema` None) or one valid against `schema`."""

    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed call: the first of each call carries its `id` and `name`, the
    others pieces of its `arguments`; joined by `index`, they give the reply's `tool_calls`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled", "tool_calls"]
    tool_calls: tuple[ToolCall, ...] = ()


class FeatureRefused(ValueError):
    """The engine cannot honour a request's `tools` or `response_format` (a remote server that
    refuses them): the caller's request, answered 400 naming `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class PromptRejected(ValueError):
    """The model's chat template refuses these messages (some templates require roles to
    alternate user/assistant, or allow only one system message): the caller's input, not a failure."""


class ChatEngine(Protocol):
    provider: str
    """Name reported to clients as `provider` (e.g. "llama-cpp")."""
    model_name: str
    context_size: int
    """Tokens the prompt and the reply share."""
    remote: bool
    """Computed by another server: speech may overlap generation, and the LLM queue needs no
    local CPU (nor the slot the local engines share)."""
    on_gpu: bool
    """Computes on a GPU of this machine (False for a remote engine)."""
    gpu_layers: int | None
    """Layers offloaded to the GPU, for the start-up log; None when not this process's to say
    (a remote engine)."""

    def prompt_cache_stats(self) -> dict[str, int] | None:
        """The prompt cache's counters (`PromptCache.stats`), for /metrics; None when there is
        none here (off, or a remote engine's)."""
        ...

    def close(self) -> None:
        """Release what the engine holds for the server's lifetime beyond its model: a remote
        engine's HTTP connections. Nothing for a local engine."""
        ...

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Exact size, in tokens, of the prompt these messages make (chat template included)."""
        ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        tools: ToolUse | None = None,
        json_output: JsonOutput | None = None,
        on_tool_call: Callable[[ToolCallDelta], None] | None = None,
    ) -> ChatReply:
        """Blocking generation; calls `on_text` with each new piece of text as it comes.

        `tools`: the model may (or must) call these; the calls come back in the reply's
        `tool_calls` (finish_reason "tool_calls") and, piece by piece, through `on_tool_call`.
        `json_output`: the reply's text is one JSON object (valid against its schema). Both
        optional: without them, plain text as before. Raises FeatureRefused when the engine
        cannot honour them.

        `max_tokens` is capped at what the context window leaves after the prompt. `top_p`:
        nucleus sampling (None: the engine's default). `stop`: extra strings that end the reply,
        left out of its text (finish_reason "stop"). `seed`: equal requests with the same seed
        give the same reply.

        Raises PromptTooLong when the prompt leaves no room for a reply, PromptRejected when the
        chat template refuses the messages, GenerationCancelled when `cancel` is set before the
        reply is complete. Implementations serialise calls themselves when their model is not
        thread-safe."""
        ...
