"""The stateless completion behind the OpenAI-compatible API: the caller's messages → prompt
check → the LLM queue → the model's reply. The sibling of `turns` without its memory: no
history is read, nothing is stored, the system prompt is the caller's, and the reply is the
model's raw text (no clean-up), as OpenAI-compatible servers answer. With tools, the reply may
be calls instead (or after some text); with a JSON output, it is one JSON object."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lea_local.llm.base import (
    ChatEngine,
    ChatMessage,
    FeatureRefused,
    JsonOutput,
    PromptRejected,
    ToolCall,
    ToolCallDelta,
    ToolUse,
)
from lea_local.llm.context import PromptTooLong
from lea_local.pipeline.errors import ContextLengthExceeded, EngineFailure
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import InferenceQueue, QueueFull
from lea_local.runtime.observability import count

log = logging.getLogger(__name__)

# No tokeniser packs more characters than this into one token on real text: messages longer
# than this many characters per token of context cannot fit, and are refused without being
# tokenised (a 10 MB body would hold the engine's thread for seconds).
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class CompletionRequest:
    messages: Sequence[ChatMessage]
    max_tokens: int
    temperature: float
    top_p: float | None = None
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None
    tools: ToolUse | None = None
    """The model may (or must) call these."""
    json_output: JsonOutput | None = None
    """The reply is one JSON object (valid against its schema)."""


@dataclass(frozen=True)
class Completion:
    text: str
    """Exactly the text handed to `on_text`, piece by piece: a streamed reply joined is the
    same as the non-streamed one."""
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "tool_calls"]
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls, each one's `arguments` exactly the pieces handed to `on_tool_call` joined."""


class ChatCompletions:
    def __init__(self, *, engine: ChatEngine, llm_queue: InferenceQueue, log_content: bool = False) -> None:
        self.engine = engine
        self.llm_queue = llm_queue
        self.log_content = log_content

    async def complete(
        self,
        request: CompletionRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        on_tool_call: Callable[[ToolCallDelta], None] | None = None,
    ) -> Completion:
        """Raises ContextLengthExceeded, PromptRejected, FeatureRefused, QueueFull,
        GenerationCancelled, EngineFailure."""
        chars = sum(len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages)
        # Every message costs at least one token of chat template: too many cannot fit either.
        if chars > self.engine.context_size * MAX_CHARS_PER_TOKEN or len(request.messages) > self.engine.context_size:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.engine.context_size} tokens; "
                f"the messages ({len(request.messages)} messages, {chars} characters) are far longer. "
                "Please reduce the length of the messages."
            )
        completion = await self.llm_queue.run(self._generate, request, on_text, cancel, on_tool_call)
        count("tokens_generated", completion.completion_tokens)
        count("prompt_tokens", completion.prompt_tokens)
        return completion

    def _generate(
        self,
        request: CompletionRequest,
        on_text: Callable[[str], None] | None,
        cancel: threading.Event | None,
        on_tool_call: Callable[[ToolCallDelta], None] | None = None,
    ) -> Completion:
        log.info(
            "llm.prompt",
            extra={
                "event": "llm.prompt",
                "api": "openai",
                "messages": len(request.messages),
                **({"tools": len(request.tools.tools), "tool_choice": request.tools.mode} if request.tools else {}),
                **(
                    {"json_output": "schema" if request.json_output.schema else "object"}
                    if request.json_output
                    else {}
                ),
                **(
                    {"prompt": [{"role": m.role, "content": m.content} for m in request.messages]}
                    if self.log_content
                    else {}
                ),
            },
        )
        pieces: list[str] = []

        def collect(piece: str) -> None:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)

        structured = {}
        if request.tools is not None or request.json_output is not None:
            structured = {"tools": request.tools, "json_output": request.json_output, "on_tool_call": on_tool_call}
        try:
            reply = self.engine.generate(
                request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=request.stop,
                seed=request.seed,
                on_text=collect,
                cancel=cancel,
                **structured,  # type: ignore[arg-type]
            )
        except GenerationCancelled as exc:
            log.info(
                "llm.cancelled",
                extra={"event": "llm.cancelled", "completion_tokens": exc.completion_tokens, "reason": str(exc)},
            )
            raise
        except PromptTooLong as exc:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.engine.context_size} tokens. However, your "
                f"messages resulted in {exc.tokens} tokens. Please reduce the length of the messages."
            ) from exc
        except (PromptRejected, FeatureRefused, QueueFull):  # QueueFull: a remote engine unreachable or refusing (503)
            raise
        except Exception as exc:
            log.exception("the language model failed")
            raise EngineFailure("language model") from exc
        return Completion(
            text="".join(pieces),
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            finish_reason=(
                reply.finish_reason if reply.finish_reason in ("length", "tool_calls") else "stop"  # type: ignore[arg-type]
            ),
            tool_calls=reply.tool_calls,
        )
