"""An agent turn from request to answer: the one path of the agent's four routes (text or voice,
streamed or not). It decides whether the reply is spoken, starts its speech before the turn
(its audio name is stored with the turn), runs the conversation turn (a voice turn transcribes
first), feeds the reply to speech as the settings say (as it is written, or once complete),
hands a streamed turn's events over as they happen (the reply cleaned as the stored text is),
and returns the stored turn with its audio's name.

A turn is stored once its caller may be told so: a non-streamed turn, or a text stream, as soon
as its reply is complete (a non-streamed turn's audio URL is answered while it is synthesised);
a streamed voice turn, whose `done` waits for every spoken piece, only once they are all
written, so that a client that hangs up before `done` stores nothing (its pieces deleted)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

from lea_local.llm.reply_cleaner import ReplyStream
from lea_local.pipeline.turns import ChatTurns, TurnRequest, TurnResult
from lea_local.pipeline.voice import VoiceTurns
from lea_local.tts.speech import SpeechJob, SpeechService

log = logging.getLogger(__name__)


class TurnEvents(Protocol):
    """Where a streamed turn's events go as they happen: from any thread, in order."""

    def delta(self, text: str) -> None:
        """The next piece of the reply as it is stored: the pieces joined are the stored reply."""

    def transcription(self, text: str) -> None:
        """A voice turn's transcription, before its reply is generated."""

    def spoken_piece(self, name: str, index: int) -> None:
        """A voice turn's next spoken piece, written to its own audio file `name` (the whole
        reply's audio is the turn's `audio_name`)."""


class AgentTurns:
    """The agent's turns, spoken or not: `answer` is the whole of a turn for a route."""

    def __init__(
        self,
        *,
        turns: ChatTurns,
        voice: VoiceTurns | None,
        speech: SpeechService | None,
        speak_text_turns: bool,
    ) -> None:
        self.turns = turns
        self.voice = voice
        """Voice turns; None on a server without speech recognition."""
        self.speech = speech
        """Speech for the replies; None: no turn is spoken."""
        self.speak_text_turns = speak_text_turns
        """Whether a text turn's reply is spoken too (`LEA_TTS_FOR_TEXT_CHAT`); a voice turn's always is."""

    async def answer(self, request: TurnRequest, events: TurnEvents | None = None) -> TurnResult:
        """The turn, stored, with the name of its reply's audio (None when the reply is not
        spoken, or its speech was skipped). `events`: a streamed turn's; a streamed voice turn
        also writes each spoken piece to its own file, and is stored (then `done`) only once all
        of them are written: a request that ends before then stores nothing.

        Raises, before any work, QueueFull when speech is too far behind; then what the turns
        raise (`lea_local.pipeline.errors`). A failed turn stores nothing and speaks nothing."""
        speech = self.speech if request.audio is not None or self.speak_text_turns else None
        pieces = events is not None and request.audio is not None  # a streamed voice turn's
        job = speech.start(sentence_files=pieces) if speech is not None else None
        reply = StreamedReply(events.delta) if events is not None else None
        async with _announcing_pieces(job, events) as announcing:
            before_storing: Callable[[str], Awaitable[None]] | None = None
            if announcing is not None:  # then speech, job and reply are set
                assert speech is not None and job is not None and reply is not None
                before_storing = _spoken_first(speech, job, reply, announcing, request.cancel)
            try:
                result = await self._take(request, events, _on_text(speech, job, reply), job, before_storing)
            except BaseException:
                if speech is not None and job is not None:
                    speech.abandon(job)
                raise
            if before_storing is None:  # else done before the turn was stored
                if speech is not None and job is not None:
                    speech.reply_written(job, result.reply)
                if reply is not None:
                    reply.finish(result.reply)
        return result

    async def _take(
        self,
        request: TurnRequest,
        events: TurnEvents | None,
        on_text: Callable[[str], None] | None,
        job: SpeechJob | None,
        before_storing: Callable[[str], Awaitable[None]] | None,
    ) -> TurnResult:
        audio_name = job.name if job is not None else None
        if request.audio is None:
            return await self.turns.take_turn(
                request, on_text=on_text, audio_name=audio_name, before_storing=before_storing
            )
        assert self.voice is not None, "a voice turn on a server without speech recognition"
        return await self.voice.take_voice_turn(
            request,
            on_text=on_text,
            audio_name=audio_name,
            on_transcript=events.transcription if events is not None else None,
            before_storing=before_storing,
        )


def _spoken_first(
    speech: SpeechService,
    job: SpeechJob,
    reply: StreamedReply,
    announcing: asyncio.Task[None],
    cancel: threading.Event | None,
) -> Callable[[str], Awaitable[None]]:
    """A streamed voice turn's step before it is stored (`ChatTurns.take_turn`'s
    `before_storing`): the reply's speech and last deltas, then every piece written and
    announced. When the request ends first (client gone, budget spent), the speech is abandoned
    at once (its pieces deleted) and the turn, seeing its request ended, stores nothing."""

    async def before_storing(stored: str) -> None:
        speech.reply_written(job, stored)
        reply.finish(stored)
        if not await _done_unless_ended(announcing, cancel):
            speech.abandon(job)

    return before_storing


async def _done_unless_ended(task: asyncio.Task[None], cancel: threading.Event | None) -> bool:
    """Waits for `task` to end; False as soon as `cancel` is set first (a threading event: it
    is looked at every few hundredths of a second)."""
    while not task.done():
        if cancel is not None and cancel.is_set():
            return False
        await asyncio.wait({task}, timeout=0.05)
    return True


def _on_text(
    speech: SpeechService | None, job: SpeechJob | None, reply: StreamedReply | None
) -> Callable[[str], None] | None:
    """The LLM's `on_text`: the raw text to speech when it is spoken as it is written (overlap
    mode), the deltas to a stream; None when neither wants it."""
    speak = job.feed if speech is not None and job is not None and speech.overlap_generation else None
    return reply.feeding(speak) if reply is not None else speak


class StreamedReply:
    """The reply's deltas for a streamed turn: raw LLM pieces in (from the LLM's thread), the
    stored text out, piece by piece."""

    def __init__(self, delta: Callable[[str], None]) -> None:
        self._delta = delta
        self._cleaner = ReplyStream()

    def feeding(self, speech: Callable[[str], None] | None) -> Callable[[str], None]:
        """The LLM's `on_text`: deltas to the client, and the raw text to `speech` when speech
        is fed as the reply is written (overlap mode)."""

        def on_text(piece: str) -> None:
            if speech is not None:
                speech(piece)
            if delta := self._cleaner.feed(piece):
                self._delta(delta)

        return on_text

    def finish(self, stored: str) -> None:
        if rest := self._cleaner.finish(stored):
            self._delta(rest)
        if self._cleaner.retracted:
            log.warning(
                "the streamed reply differs from the stored one; the done event's response is the stored text",
                extra={"event": "stream.retracted", "sent_chars": len(self._cleaner.sent), "stored_chars": len(stored)},
            )


@asynccontextmanager
async def _announcing_pieces(
    job: SpeechJob | None, events: TurnEvents | None
) -> AsyncIterator[asyncio.Task[None] | None]:
    """While the block runs, and until every piece is written when it ends well, each spoken
    piece's file goes to `events` as it is written (a job that writes pieces: a streamed voice
    turn's). Yields the task that announces them, which ends after the last piece (None when
    there are no pieces): the turn waits for it before it is stored, until its request ends at
    the latest (`_spoken_first`)."""
    if job is None or job.sentence_audio is None or events is None:
        yield None
        return
    announcing = asyncio.create_task(_announce_pieces(job, events))
    try:
        yield announcing
        await announcing
    finally:
        announcing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcing


async def _announce_pieces(job: SpeechJob, events: TurnEvents) -> None:
    assert job.sentence_audio is not None
    while (written := await job.sentence_audio.get()) is not None:
        name, index = written
        events.spoken_piece(name, index)
