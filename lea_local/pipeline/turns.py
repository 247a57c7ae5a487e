"""The conversation turn shared by text and voice chat: history → prompt → LLM → stored turn;
what a route asks of a turn (`TurnRequest`) and what it answers (`TurnResult`)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from lea_local.knowledge.grounding import GroundedMessage, Source, TurnGrounding
from lea_local.llm.base import ChatEngine, ChatMessage, ChatReply
from lea_local.llm.context import HISTORY_CHARS_PER_TOKEN, CountingTokens, PromptTooLong, fit_growing_history
from lea_local.llm.reply_cleaner import clean_reply
from lea_local.pipeline.errors import EngineFailure
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import InferenceQueue, QueueFull
from lea_local.runtime.observability import count
from lea_local.store.conversations import ConversationContext, ConversationStore, StoredMessage, TurnRecord
from lea_local.store.database import StoreUnavailable, utcnow
from lea_local.store.session_locks import SessionLocks

if TYPE_CHECKING:
    from lea_local.knowledge.library import Passage

log = logging.getLogger(__name__)

# Said when the model produced nothing usable (tiny models sometimes do).
EMPTY_REPLY_FALLBACK = "Désolée, je n'ai pas su formuler de réponse. Pouvez-vous reformuler votre question ?"


@dataclass(frozen=True)
class TurnRequest:
    """One agent turn as a route asks for it, validated: a text message, or a voice recording
    whose transcription becomes the message."""

    message: str = field(default="", repr=False)
    """The user's message; a voice turn's is its transcription, set once transcribed."""
    audio: bytes | None = field(default=None, repr=False)
    """A voice turn's recording (webm, ogg, wav…); None for a text turn."""
    session_id: str | None = None
    """None: a new session, or the named conversation's own."""
    conversation_id: int | None = None
    """None: the session's latest conversation (a new one for a new session)."""
    user_id: str | None = None
    """Who speaks, stored with the turn (a voice turn's)."""
    user_email: str | None = None
    cancel: threading.Event | None = None
    """Set when the request ends (time budget spent, client gone): the engines stop and
    nothing is stored."""


@dataclass(frozen=True)
class TurnResult:
    session_id: str
    conversation_id: int
    reply: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    sources: tuple[Source, ...] = ()
    """The knowledge base's documents and sections the prompt carried passages of."""
    audio_name: str | None = None
    """The reply's speech, stored with the turn; None when the reply is not spoken."""
    transcription: str | None = None
    """A voice turn's: what was heard (the stored user message)."""


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
        grounding: TurnGrounding | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.llm_queue = llm_queue
        self.system_prompt = ChatMessage("system", system_prompt)
        self.max_reply_tokens = max_reply_tokens
        self.temperature = temperature
        self.log_content = log_content
        self.grounding = grounding
        """Passages of the knowledge base for each turn; None: turns are not grounded."""
        # Turns of one session run one after the other: each sees the previous one's reply,
        # and two first messages of a session cannot open two conversations. In the database
        # when it is shared by several processes (PostgreSQL), so across replicas too.
        self.session_locks: SessionLocks = store.session_locks()

    async def take_turn(
        self,
        request: TurnRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        audio_name: str | None = None,
        before_storing: Callable[[str], Awaitable[None]] | None = None,
    ) -> TurnResult:
        """`on_text` receives the reply's raw text as it is written; `audio_name` is the reply's
        speech, stored with the turn. `before_storing(reply)` runs once the reply is final (the
        text to be stored), still in the session, before the turn is stored: what must be done
        before its caller may see it stored (a streamed voice turn's speech); a request that
        ends meanwhile stores nothing. Raises ConversationNotFound, PromptTooLong, QueueFull,
        GenerationCancelled, EngineFailure; stores nothing unless the whole turn succeeded."""
        async with self.session(request) as session_id:
            return await self.take_turn_in_session(
                replace(request, session_id=session_id),
                on_text=on_text,
                audio_name=audio_name,
                before_storing=before_storing,
            )

    @asynccontextmanager
    async def session(self, request: TurnRequest) -> AsyncIterator[str]:
        """The turn's session (a new one when none is given), held for the turn: turns of one
        session run one after the other, and an erasure of the session or of the user waits
        for the turn to be stored (a voice turn holds it from decoding on)."""
        session_id = request.session_id
        if session_id is None:
            if request.conversation_id is None:
                session_id = str(uuid.uuid4())
            else:  # a conversation named without its session continues in its own session
                session_id = await anyio.to_thread.run_sync(self.store.session_of, request.conversation_id)
        async with self.session_locks.turn(session_id, request.user_id):
            yield session_id

    async def take_turn_in_session(
        self,
        request: TurnRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        audio_name: str | None = None,
        audio_seconds: float | None = None,
        before_storing: Callable[[str], Awaitable[None]] | None = None,
    ) -> TurnResult:
        """`take_turn` inside its session, already held (`session`: `request.session_id`);
        `audio_seconds`: a voice turn's recording, stored with the turn."""
        session_id, message, cancel = request.session_id, request.message, request.cancel
        assert session_id is not None
        context = await anyio.to_thread.run_sync(
            self.store.context_for, session_id, request.conversation_id, self.history_chars
        )
        user_at = utcnow()
        passages = await self._retrieve(message, context)
        reply, grounded = await self.llm_queue.run(self._generate, context, message, passages, on_text, cancel)
        count("tokens_generated", reply.completion_tokens)
        count("prompt_tokens", reply.prompt_tokens)
        # What is stored and spoken: no leaked role label, Markdown or repeated sentence.
        text = clean_reply(reply.text)
        if not text:
            log.warning("the model returned no usable reply; answering with the fallback sentence")
            text = EMPTY_REPLY_FALLBACK
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
            user_id=request.user_id,
            user_email=request.user_email,
            audio_seconds=audio_seconds,
            audio_file=audio_name,
        )
        if before_storing is not None:
            await before_storing(text)
        if cancel is not None and cancel.is_set():
            # The client left (or the budget ran out) after the reply was written, or while
            # `before_storing` ran: nobody will see it, so it is not stored (a streamed turn's
            # client may leave at any point before its `done` event).
            log.info("llm.cancelled", extra={"event": "llm.cancelled", "reason": "request ended before storing"})
            raise GenerationCancelled("request ended before the turn was stored")
        await self.session_locks.confirm(session_id)  # still this turn's session: nothing ran beside it
        stored_id = await anyio.to_thread.run_sync(self.store.record_turn, record)
        return TurnResult(
            session_id=session_id,
            conversation_id=stored_id,
            reply=text,
            model=self.engine.model_name,
            provider=self.engine.provider,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            sources=tuple(grounded.sources),
            audio_name=audio_name,
        )

    async def _retrieve(self, message: str, context: ConversationContext) -> list[Passage]:
        """The knowledge base's candidate passages for this message and the user's last ones,
        searched in a worker thread before the turn waits for the LLM."""
        if self.grounding is None:
            return []
        earlier = [m.content for m in context.history if m.role == "user"]
        return await anyio.to_thread.run_sync(self.grounding.retrieve, message, earlier)

    @property
    def history_chars(self) -> int:
        """Characters of newest history a turn reads at first (see HISTORY_CHARS_PER_TOKEN)."""
        return HISTORY_CHARS_PER_TOKEN * max(self.engine.context_size - self.max_reply_tokens, 1)

    def build_prompt(
        self, context: ConversationContext, message: str, passages: Sequence[Passage] = ()
    ) -> list[ChatMessage]:
        return self.build_grounded_prompt(context, message, passages)[0]

    def build_grounded_prompt(
        self, context: ConversationContext, message: str, passages: Sequence[Passage] = ()
    ) -> tuple[list[ChatMessage], GroundedMessage]:
        """The prompt for this turn: the message with the knowledge base's passages that fit
        (`TurnGrounding.ground`), and as much history as the rest of the window holds. Only the
        newest history is read and tokenised, older messages only while all that was read still
        fits (`fit_growing_history`)."""
        loaded = list(context.history)

        def load_older() -> tuple[Sequence[ChatMessage], bool]:
            assert context.conversation_id is not None
            older, complete = self.store.older_messages(context.conversation_id, loaded[0].id, self.history_chars)
            loaded[:0] = older
            return _chat_messages(older), complete

        tokens = CountingTokens(self.engine.count_prompt_tokens)
        budget = self.engine.context_size - self.max_reply_tokens
        if self.grounding is not None and passages:
            grounded = self.grounding.ground(self.system_prompt, message, passages, count_tokens=tokens, budget=budget)
        else:
            grounded = GroundedMessage(ChatMessage("user", message), ())
        prompt = fit_growing_history(
            self.system_prompt,
            _chat_messages(loaded),
            grounded.message,
            count_tokens=tokens,
            budget=budget,
            complete=context.history_complete or not loaded or context.conversation_id is None,
            load_older=load_older,
        )
        log.info(
            "llm.fit",
            extra={
                "event": "llm.fit",
                "conversation_id": context.conversation_id,
                "messages_read": len(loaded),
                "messages_kept": len(prompt) - 2,
                "passages_offered": len(passages),
                "passages_kept": [p.id for p in grounded.passages],
                "token_counts": tokens.calls,
                "chars_tokenised": tokens.chars,
            },
        )
        return prompt, grounded

    @asynccontextmanager
    async def turns_settled(
        self, *, session_ids: Iterable[str] = (), user_id: str | None = None, wait_seconds: float
    ) -> AsyncIterator[None]:
        """For an erasure: wait until no turn of these sessions, nor of any session where
        `user_id` has a turn running or waiting, is under way, then keep their next turns
        waiting until the block ends. What runs inside sees every turn stored whole, and no
        turn of those sessions stores anything during it. Turns end within their request's
        time budget, so `wait_seconds` bounds the wait: TimeoutError past it (nothing held).
        With several processes on one database, turns under way in any of them count."""

        async def sessions_of_user(user: str) -> list[str]:
            return await anyio.to_thread.run_sync(self.store.sessions_of_user, user)

        async with self.session_locks.settled(session_ids, user_id, sessions_of_user, wait_seconds):
            yield

    def _generate(
        self,
        context: ConversationContext,
        message: str,
        passages: Sequence[Passage],
        on_text: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> tuple[ChatReply, GroundedMessage]:
        prompt, grounded = self.build_grounded_prompt(context, message, passages)
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
            reply = self.engine.generate(
                prompt,
                max_tokens=self.max_reply_tokens,
                temperature=self.temperature,
                on_text=on_text,
                cancel=cancel,
            )
            return reply, grounded
        except GenerationCancelled as exc:
            log.info(
                "llm.cancelled",
                extra={"event": "llm.cancelled", "completion_tokens": exc.completion_tokens, "reason": str(exc)},
            )
            raise
        except (PromptTooLong, StoreUnavailable):  # older history is read from the store here
            raise
        except QueueFull:  # a remote engine unreachable or refusing (503/429): 503, not a failure
            raise
        except Exception as exc:
            log.exception("the language model failed")
            raise EngineFailure("language model") from exc


def _chat_messages(stored: Iterable[StoredMessage]) -> list[ChatMessage]:
    return [ChatMessage(m.role, m.content) for m in stored if m.role in ("user", "assistant")]  # type: ignore[arg-type]
