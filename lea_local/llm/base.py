"""What the conversation pipeline needs from a chat model. Another backend (vLLM, an
OpenAI-compatible server on the LAN…) is one new module that satisfies `ChatEngine`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"]


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
    ) -> ChatReply:
        """Blocking generation; calls `on_text` with each new piece of text as it comes.

        `max_tokens` is capped at what the context window leaves after the prompt. `top_p`:
        nucleus sampling (None: the engine's default). `stop`: extra strings that end the reply,
        left out of its text (finish_reason "stop"). `seed`: equal requests with the same seed
        give the same reply.

        Raises PromptTooLong when the prompt leaves no room for a reply, PromptRejected when the
        chat template refuses the messages, GenerationCancelled when `cancel` is set before the
        reply is complete. Implementations serialise calls themselves when their model is not
        thread-safe."""
        ...
