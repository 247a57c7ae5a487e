"""The conversation turn shared by text and voice chat: history → prompt → LLM → stored turn."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.to_thread

from lea_local.inference_queue import InferenceQueue
from lea_local.llm.base import ChatEngine, ChatMessage, ChatReply, GenerationCancelled
from lea_local.llm.context import PromptTooLong, fit_to_context
from lea_local.observability import count
from lea_local.store.conversations import ConversationContext, ConversationStore, TurnRecord, utcnow

log = logging.getLogger(__name__)

# Said when the model produced nothing usable (tiny models sometimes do).
EMPTY_REPLY_FALLBACK = "Désolée, je n'ai pas su formuler de réponse. Pouvez-vous reformuler votre question ?"


class EngineFailure(Exception):
    """An engine raised: the turn fails with 500 and stores nothing."""

    def __init__(self, engine: str) -> None:
        super().__init__(f"The {engine} failed to process the request")


@dataclass(frozen=True)
class TurnResult:
    session_id: str
    conversation_id: int
    reply: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (anyio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ChatTurns:
    def __init__(
        self,
        *,
        engine: ChatEngine,
        store: ConversationStore,
        llm_queue: InferenceQueue,
        system_prompt: str,
        max_reply_tokens: int,
        temperature: float,
        log_content: bool = False,
    ) -> None:
        self.engine = engine
        self.store = store
        self.llm_queue = llm_queue
        self.system_prompt = ChatMessage("system", system_prompt)
        self.max_reply_tokens = max_reply_tokens
        self.temperature = temperature
        self.log_content = log_content
        # Turns of one session run one after the other: each sees the previous one's reply,
        # and two first messages of a session cannot open two conversations.
        self._session_locks = KeyedLocks()

    async def take_turn(
        self,
        message: str,
        *,
        session_id: str | None = None,
        conversation_id: int | None = None,
        user_id: str | None = None,
        user_email: str | None = None,
        audio_seconds: float | None = None,
        on_text: Callable[[str], None] | None = None,
        audio_name: str | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnResult:
        """Raises ConversationNotFound, PromptTooLong, QueueFull, GenerationCancelled; stores
        nothing unless the whole turn succeeded."""
        if session_id is None:
            if conversation_id is None:
                session_id = str(uuid.uuid4())
            else:  # a conversation named without its session continues in its own session
                session_id = await anyio.to_thread.run_sync(self.store.session_of, conversation_id)
        async with self._session_locks.hold(session_id):
            context = await anyio.to_thread.run_sync(self.store.context_for, session_id, conversation_id)
            user_at = utcnow()
            reply = await self.llm_queue.run(self._generate, context, message, on_text, cancel)
            count("tokens_generated", reply.completion_tokens)
            count("prompt_tokens", reply.prompt_tokens)
            text = reply.text.strip() or EMPTY_REPLY_FALLBACK
            if not reply.text.strip():
                log.warning("the model returned an empty reply; answering with the fallback sentence")
            record = TurnRecord(
                session_id=session_id,
                conversation_id=context.conversation_id,
                user_message=message,
                user_at=user_at,
                reply=text,
                reply_at=utcnow(),
                model=self.engine.model_name,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                user_id=user_id,
                user_email=user_email,
                audio_seconds=audio_seconds,
                audio_file=audio_name,
            )
            stored_id = await anyio.to_thread.run_sync(self.store.record_turn, record)
        return TurnResult(
            session_id=session_id,
            conversation_id=stored_id,
            reply=text,
            model=self.engine.model_name,
            provider=self.engine.provider,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )

    def build_prompt(self, context: ConversationContext, message: str) -> list[ChatMessage]:
        history = [ChatMessage(m.role, m.content) for m in context.history if m.role in ("user", "assistant")]  # type: ignore[arg-type]
        return fit_to_context(
            self.system_prompt,
            history,
            ChatMessage("user", message),
            count_tokens=self.engine.count_prompt_tokens,
            budget=self.engine.context_size - self.max_reply_tokens,
        )

    def _generate(
        self,
        context: ConversationContext,
        message: str,
        on_text: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> ChatReply:
        prompt = self.build_prompt(context, message)
        kept = len(prompt) - 2
        log.info(
            "llm.prompt",
            extra={
                "event": "llm.prompt",
                "conversation_id": context.conversation_id,
                "history_messages": len(context.history),
                "history_kept": kept,
                **({"prompt": [{"role": m.role, "content": m.content} for m in prompt]} if self.log_content else {}),
            },
        )
        try:
            return self.engine.generate(
                prompt,
                max_tokens=self.max_reply_tokens,
                temperature=self.temperature,
                on_text=on_text,
                cancel=cancel,
            )
        except (GenerationCancelled, PromptTooLong):
            raise
        except Exception as exc:
            log.exception("the language model failed")
            raise EngineFailure("language model") from exc
