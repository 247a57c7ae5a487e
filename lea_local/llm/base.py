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


class GenerationCancelled(Exception):
    """The caller gave up (client gone, timeout): generation stopped early, after
    `completion_tokens` tokens (None when no generation had started)."""

    def __init__(self, message: str, *, completion_tokens: int | None = None) -> None:
        super().__init__(message)
        self.completion_tokens = completion_tokens


class ChatEngine(Protocol):
    provider: str
    """Name reported to clients as `provider` (e.g. "llama-cpp")."""
    model_name: str
    context_size: int
    """Tokens the prompt and the reply share."""

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
    ) -> ChatReply:
        """Blocking generation; calls `on_text` with each new piece of text as it comes.
        Raises GenerationCancelled when `cancel` is set before the reply is complete.
        Implementations serialise calls themselves when their model is not thread-safe."""
        ...
