"""One Realtime session: the state machine behind a `/v1/realtime` websocket.

Client events come in one at a time (`handle`); server events go out in order through one
outbox, emitted synchronously on the event loop, so that an event that must follow another
(`response.done` after a barge-in's `speech_started`) is never overtaken. The work runs as
tasks beside the loop: each committed stretch of audio is transcribed on the ASR queue, each
response generated on the LLM queue and spoken sentence by sentence on the speech queue, all
three admitted against a turn's budget like any other turn (503-style `overloaded` when the
server cannot serve it in time). A response can be cancelled at any moment (`response.cancel`,
a barge-in, a hang-up): its `response.done` goes out at once and nothing more of it follows,
while its engines stop within a token (LLM) or a sentence (speech)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import anyio.to_thread
import numpy as np

from lea_local.asr.base import NoSpeech
from lea_local.asr.decode import DecodedAudio
from lea_local.asr.vad import SpeechProbabilities, TurnDetection, TurnDetector
from lea_local.llm.base import ChatMessage, ChatReply, FeatureRefused, PromptRejected, ToolCallDelta, ToolUse
from lea_local.llm.context import PromptTooLong
from lea_local.llm.reply_cleaner import ReplyStream, clean_reply
from lea_local.pipeline.errors import EngineFailure
from lea_local.pipeline.realtime.audio import (
    RECOGNISER_RATE,
    AudioCodec,
    BadAudio,
    decode_base64,
    from_voice,
    to_recogniser,
)
from lea_local.pipeline.realtime.config import (
    ConfigError,
    Dialect,
    SessionConfig,
    apply_update,
    initial_config,
    max_tokens,
    modalities,
    render_session,
    tool_use,
)
from lea_local.pipeline.realtime.items import Item, Part, event_name, item_from_client, new_id
from lea_local.pipeline.realtime.transcripts import is_hallucination
from lea_local.pipeline.turns import EMPTY_REPLY_FALLBACK, ChatTurns
from lea_local.pipeline.voice import VoiceTurns
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import Deadline, InferenceQueue, QueueFull, admit, current_deadline
from lea_local.store.conversations import ConversationNotFound, TurnRecord
from lea_local.store.database import utcnow
from lea_local.tts.base import SpeechSynthesizer
from lea_local.tts.normalize import normalize_for_speech
from lea_local.tts.sentences import SentenceSplitter, first_phrase_end, split_first_phrase
from lea_local.tts.speech import SpeechService
from lea_local.tts.voices import UnknownVoice, VoiceRegistry

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100
"""The shortest audio a commit takes (OpenAI's rule)."""
AUDIO_DELTA_SECONDS = 0.5
"""Answer audio goes out in deltas of at most this much."""
VAD_KEEP_MS = 1000
"""Audio kept before speech starts, beyond the prefix padding, while server VAD listens."""
SPEECH_JOBS_PER_REPLY = 4.0
"""Speech jobs a reply is admitted with (as `services.SPEECH_JOBS_PER_REPLY`)."""


@dataclass(frozen=True)
class RealtimeLimits:
    max_session_seconds: float = 1800.0
    idle_seconds: float = 300.0
    max_buffer_seconds: float = 60.0
    max_event_bytes: int = 2 * 1024 * 1024
    turn_seconds: float = 85.0
    """A transcription's or a response's time budget (the voice turn's)."""


@dataclass(frozen=True)
class RealtimeEngines:
    """What a session computes with: the conversation turns' LLM and prompt, the voice turns'
    recogniser, the replies' voice, with their queues."""

    chat: ChatTurns
    voice: VoiceTurns
    speech: SpeechService
    voices: VoiceRegistry | None = None
    """The voices a session may name (OpenAI's names, aliases, installed voices); None: the
    speech service's voice only."""


class SessionEnded(Exception):
    """A limit ended the session: its `error` event is out; the socket closes with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Response:
    id: str
    conversation: bool
    modalities: tuple[str, ...]
    instructions: str
    max_tokens: int | None
    """The client's cap (None: the server's own)."""
    temperature: float
    metadata: Any = None
    deadline: Deadline = field(default_factory=lambda: Deadline(time.monotonic()))
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    item: Item | None = None
    closed: bool = False
    """Its `response.done` is out: nothing more of it is sent."""
    task: asyncio.Task[None] | None = None
    sent_text: str = ""
    spoken: list[tuple[str, float]] = field(default_factory=list)
    """Each spoken piece and its audio's length in ms, as sent."""
    usage: dict[str, Any] | None = None
    first_phrase_cut: bool = False
    outputs: list[Item] = field(default_factory=list)
    """Its output items in order: the answer's message (`item`) and the function calls."""
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    loop: asyncio.AbstractEventLoop | None = None
    started_at: datetime | None = None
    """The session's event loop, for what the LLM's thread hands over."""
    seen: set[str] = field(default_factory=set)
    """The conversation items its prompt was built from."""


class RealtimeSession:
    def __init__(
        self,
        engines: RealtimeEngines,
        limits: RealtimeLimits,
        dialect: Dialect,
        *,
        model: str,
        language: str | None,
        log_content: bool = False,
        session_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        """`session_id`: the conversation store's session this one continues (a new one when
        None); its turns are stored there, as a text or voice turn's are."""
        self.engines = engines
        self.limits = limits
        self.dialect = dialect
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.log_content = log_content
        self.store_session = session_id or str(uuid.uuid4())
        self.continued = session_id is not None
        self.user_id = user_id
        self.stored_conversation: int | None = None
        self._stored_items: dict[str, int] = {}
        """Items that are in the store: each item's message id (a turn's user items share one)."""
        self._store_chain: asyncio.Future[None] | None = None
        """The last write to the store: writes run one after the other, in the order asked."""
        self._erased = False
        """The session's stored conversation was erased: it forgets all and ends."""
        self._queued_turn: str | None = None
        """A turn heard while a response ran (no barge-in): answered once that response ends."""
        chat = engines.chat
        self.config: SessionConfig = initial_config(
            dialect,
            model=model,
            instructions=chat.system_prompt.content,
            language=language,
            temperature=chat.temperature,
        )
        self.items: list[Item] = []
        self._synthesizer: SpeechSynthesizer = engines.speech.synthesizer
        """The session's voice (`voice`), resolved as /v1/audio/speech resolves it."""
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._started = time.monotonic()
        self._last_activity = self._started
        # The input audio buffer: int16 samples at the input format's rate.
        self._buffer: list[np.ndarray] = []
        self._buffer_samples = 0
        self._buffer_start_ms = 0.0
        self._stream_ms = 0.0
        self._vad: SpeechProbabilities | None = None
        self._detector: TurnDetector | None = None
        self._vad_origin_ms = 0.0
        self._speech_item: str | None = None
        self._speech_start_ms = 0.0
        # A recognition started at a pause in the speech, of the speech up to it: the turn's
        # own if the speech stops there (`_speech_stopped`), dropped if it goes on.
        self._speculation: tuple[float, asyncio.Task[tuple[str | None, float]], Deadline] | None = None
        self.response: Response | None = None
        self._transcribing: dict[str, asyncio.Task[str | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._storing: set[asyncio.Task[None]] = set()
        self._deadlines: set[Deadline] = set()
        self._reset_vad()

    # --- the connection -----------------------------------------------------------------------

    async def serve(
        self,
        receive: Callable[[], Awaitable[str | bytes | None]],
        send: Callable[[str], Awaitable[None]],
    ) -> None:
        """Until the client hangs up (`receive` gives None) or a limit ends the session
        (SessionEnded, once its `error` event is sent). Whatever the session had running stops."""
        writer = asyncio.create_task(self._write(send))
        try:
            if self.continued:
                try:
                    await self._load_history()
                except Exception:
                    log.exception("a realtime session's conversation could not be read")
                    message = "the conversation of this session_id could not be read"
                    self.error(message, code="server_error", kind="server_error")
                    raise SessionEnded(1011, "the conversation could not be read") from None
            self.emit({"type": "session.created", "session": render_session(self.config, self.dialect, self.id)})
            while True:
                message = await self._receive_within_limits(receive)
                if message is None:
                    return
                self._last_activity = time.monotonic()
                await self.handle(message)
        except SessionEnded:
            self.close()
            self._outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 5)
            raise
        finally:
            self.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if self._storing:  # the turns already answered are stored before the session ends
                await asyncio.gather(*self._storing, return_exceptions=True)

    async def _receive_within_limits(self, receive: Callable[[], Awaitable[str | bytes | None]]) -> str | bytes | None:
        while True:
            if self._erased:
                raise SessionEnded(1008, "the conversation of this session was erased")
            now = time.monotonic()
            if self.response is not None or self._transcribing:
                self._last_activity = now  # the server is at work: not idle
            session_left = self.limits.max_session_seconds - (now - self._started)
            idle_left = self.limits.idle_seconds - (now - self._last_activity)
            if session_left <= 0:
                self._end("session_expired", f"the session reached its {self.limits.max_session_seconds:g} s limit")
            if idle_left <= 0:
                self._end("idle_timeout", f"no event for {self.limits.idle_seconds:g} s: the session is closed")
            try:
                # Looked at again at least every second: a running response keeps it alive.
                message = await asyncio.wait_for(receive(), min(session_left, idle_left, 1.0))
            except TimeoutError:
                continue
            if self._erased:
                raise SessionEnded(1008, "the conversation of this session was erased")
            return message

    def _end(self, code: str, message: str) -> None:
        self.error(message, code=code, kind="invalid_request_error")
        raise SessionEnded(1008, message[:120])

    async def _write(self, send: Callable[[str], Awaitable[None]]) -> None:
        while (event := await self._outbox.get()) is not None:
            await send(json.dumps(event, ensure_ascii=False))

    def emit(self, event: dict[str, Any]) -> None:
        """Queue a server event (dialect names already applied), in order."""
        self._outbox.put_nowait({"event_id": new_id("event"), **event})

    def error(
        self,
        message: str,
        *,
        code: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        self.emit(
            {
                "type": "error",
                "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
            }
        )

    def close(self) -> None:
        """The session is over: every engine job of it stops, nothing more is sent of it."""
        if self.response is not None:
            self.response.closed = True
            self.response.status = "cancelled"
            self.response.status_details = {"type": "cancelled", "reason": "session_closed"}
            self.response.deadline.end("disconnect")
            self.response = None
        for deadline in list(self._deadlines):
            deadline.end("disconnect")
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- client events ------------------------------------------------------------------------

    async def handle(self, message: str | bytes) -> None:
        """One client event; a bad one gets an `error` event naming it, never a dropped socket."""
        size = len(message)
        if isinstance(message, str) and size * 4 > self.limits.max_event_bytes:  # UTF-8: up to 4 bytes a character
            size = len(message.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_event_bytes:
            self.error(
                f"the event is {size} bytes; at most {self.limits.max_event_bytes} are accepted "
                "(send audio in smaller appends)",
                code="event_too_large",
            )
            return
        if isinstance(message, bytes):
            self.error("binary frames are not part of the protocol: send JSON text events", code="invalid_event")
            return
        try:
            event = json.loads(message)
        except (ValueError, RecursionError):
            self.error("the event is not valid JSON", code="invalid_json")
            return
        if not isinstance(event, dict):
            self.error("an event must be a JSON object", code="invalid_event")
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        handler = self._handlers().get(kind) if isinstance(kind, str) else None
        if handler is None:
            self.error(
                f"Invalid value: {kind!r}. Supported values are: {', '.join(sorted(self._handlers()))}",
                code="invalid_value" if isinstance(kind, str) else "missing_required_parameter",
                param="type",
                event_id=event_id,
            )
            return
        try:
            await handler(event, event_id)
        except ConfigError as exc:
            self.error(str(exc), code=exc.code, param=exc.param, event_id=event_id)
        except BadAudio as exc:
            self.error(str(exc), code="invalid_audio", param="audio", event_id=event_id)

    def _handlers(self) -> dict[str, Callable[[dict[str, Any], str | None], Awaitable[None]]]:
        return {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_event,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.truncate": self._item_truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    async def _session_update(self, event: dict[str, Any], event_id: str | None) -> None:
        before = self.config
        update = apply_update(before, event.get("session"), self.dialect)
        if update.voice != before.voice and self.engines.voices is not None:
            try:  # loaded now, not at the first answer
                self._synthesizer = await self.engines.voices.synthesizer(update.voice)
            except UnknownVoice as exc:
                param = "session.voice" if self.dialect == "beta" else "session.audio.output.voice"
                raise ConfigError(str(exc), param=param) from None
        self.config = update
        if self.config.input_format != before.input_format:
            self._clear_buffer()
        if self.config.turn_detection != before.turn_detection:
            self._reset_vad()
        self.emit({"type": "session.updated", "session": render_session(self.config, self.dialect, self.id)})

    # --- input audio --------------------------------------------------------------------------

    @property
    def _input(self) -> AudioCodec:
        return AudioCodec(self.config.input_format)

    def _ms(self, samples: int) -> float:
        return samples * 1000 / self._input.rate

    def _reset_vad(self) -> None:
        detection = self.config.turn_detection
        if detection is None:
            self._vad = self._detector = None
        else:
            self._vad = SpeechProbabilities()
            self._detector = TurnDetector(
                TurnDetection(
                    threshold=detection["threshold"],
                    prefix_padding_ms=detection["prefix_padding_ms"],
                    silence_duration_ms=detection["silence_duration_ms"],
                )
            )
            self._vad_origin_ms = self._stream_ms
        self._speech_item = None
        if self._speculation is not None:
            self._drop_speculation()

    def _clear_buffer(self) -> None:
        self._buffer, self._buffer_samples = [], 0
        self._buffer_start_ms = self._stream_ms

    def _take_buffer(self, start_ms: float | None = None, end_ms: float | None = None) -> np.ndarray:
        """The buffered samples between two stream times (all by default); the buffer then
        keeps only what follows `end_ms`."""
        audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, dtype=np.int16)
        rate = self._input.rate
        first = 0 if start_ms is None else max(0, int((start_ms - self._buffer_start_ms) * rate / 1000))
        last = audio.size if end_ms is None else min(audio.size, int((end_ms - self._buffer_start_ms) * rate / 1000))
        taken = audio[first:last]
        rest = audio[last:]
        self._buffer = [rest] if rest.size else []
        self._buffer_samples = rest.size
        self._buffer_start_ms = self._stream_ms - self._ms(rest.size)
        return taken

    def _peek_buffer(self, start_ms: float, end_ms: float) -> np.ndarray:
        """The buffered samples between two stream times, left in the buffer."""
        audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, dtype=np.int16)
        rate = self._input.rate
        first = max(0, int((start_ms - self._buffer_start_ms) * rate / 1000))
        return audio[first : max(first, int((end_ms - self._buffer_start_ms) * rate / 1000))].copy()

    def _trim_buffer(self, keep_ms: float) -> None:
        excess = self._buffer_samples - int(keep_ms * self._input.rate / 1000)
        if excess > 0 and self._buffer:
            audio = np.concatenate(self._buffer)[excess:]
            self._buffer, self._buffer_samples = [audio], audio.size
            self._buffer_start_ms = self._stream_ms - self._ms(audio.size)

    async def _append(self, event: dict[str, Any], event_id: str | None) -> None:
        samples = self._input.decode(decode_base64(event.get("audio")))
        if self._ms(self._buffer_samples + samples.size) > self.limits.max_buffer_seconds * 1000:
            self.error(
                f"the input audio buffer holds at most {self.limits.max_buffer_seconds:g} s: commit or clear it "
                "(this chunk was dropped)",
                code="input_audio_buffer_too_large",
                event_id=event_id,
            )
            return
        self._buffer.append(samples)
        self._buffer_samples += samples.size
        self._stream_ms += self._ms(samples.size)
        if self._vad is None or self._detector is None:
            return
        probabilities = await anyio.to_thread.run_sync(self._vad.feed, to_recogniser(samples, self._input.rate))
        for voice in self._detector.push(probabilities):
            at_ms = self._vad_origin_ms + voice.at_ms
            if voice.kind == "started":
                self._speech_started(at_ms)
            elif voice.kind == "paused":
                self._speculate(at_ms)
            elif voice.kind == "resumed":
                self._drop_speculation()
            else:
                self._speech_stopped(at_ms)
        if self._speech_item is None:
            assert self.config.turn_detection is not None
            self._trim_buffer(self.config.turn_detection["prefix_padding_ms"] + VAD_KEEP_MS)

    def _speech_started(self, at_ms: float) -> None:
        self._drop_speculation()
        self._speech_item = new_id("item")
        self._speech_start_ms = max(at_ms, self._buffer_start_ms)
        self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(self._speech_start_ms),
                "item_id": self._speech_item,
            }
        )
        detection = self.config.turn_detection
        if self.response is not None and detection is not None and detection.get("interrupt_response", True):
            self._cancel_response("turn_detected")

    def _speculate(self, at_ms: float) -> None:
        """The broker paused: recognise the speech so far now, so that little is left to do if
        the pause turns out to be the end of the turn."""
        self._drop_speculation()
        # Only on an idle recogniser: a recognition cannot be stopped inside its segment, and
        # one dropped at every pause would hold the engine while the real turn waits behind.
        queue = self.engines.voice.asr_queue
        if queue.depth or queue.slot.busy >= queue.slot.capacity:
            return
        samples = self._peek_buffer(self._speech_start_ms, at_ms)
        task, deadline = self._recognition_task(to_recogniser(samples, self._input.rate), at_pause=True)
        self._speculation = (at_ms, task, deadline)

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            _, task, deadline = self._speculation
            self._speculation = None
            deadline.end("cancelled")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its outcome is not wanted

    def _speech_stopped(self, at_ms: float) -> None:
        item_id, self._speech_item = self._speech_item or new_id("item"), None
        self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(at_ms), "item_id": item_id})
        samples = self._take_buffer(self._speech_start_ms, at_ms)
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation[0] != at_ms:  # of other audio: not this turn's
            self._speculation = speculation
            self._drop_speculation()
            speculation = None
        transcription = self._commit(samples, item_id, speculation[1] if speculation else None)
        detection = self.config.turn_detection
        if detection is not None and detection.get("create_response", True):
            self._spawn(self._respond_once_heard(transcription, item_id))

    async def _respond_once_heard(self, transcription: asyncio.Task[str | None], item_id: str) -> None:
        """Server VAD's response: once the turn's words are known, and only if there are any
        (noise that fooled the detector makes no turn). A turn heard while a response runs (the
        broker spoke over Léa without barge-in) is answered once that response ends, as
        OpenAI's server does: one such turn waits at most (the newest; its answer reads the
        others too)."""
        try:
            heard = await transcription
        except Exception:
            heard = None
        if not heard:
            if self.response is None and self._queued_turn is not None:
                self._answer_queued(None)  # a turn waiting behind a barge-in that was only noise
            return
        if self.response is None:
            self._start_response(self._default_response())
        else:
            self._queued_turn = item_id

    def _answer_queued(self, finished: Response | None) -> None:
        """The turn heard while `finished` ran gets its answer now, unless that response
        already read it."""
        queued, self._queued_turn = self._queued_turn, None
        if queued is None or self.response is not None or self._erased or self._find(queued) is None:
            return
        if finished is not None and finished.conversation and queued in finished.seen:
            return
        self._start_response(self._default_response())

    async def _commit_event(self, event: dict[str, Any], event_id: str | None) -> None:
        if self._ms(self._buffer_samples) < MIN_COMMIT_MS:
            self.error(
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms of "
                f"audio, but buffer only has {self._ms(self._buffer_samples):.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
                event_id=event_id,
            )
            return
        item_id, self._speech_item = self._speech_item or new_id("item"), None
        if self._detector is not None:
            self._reset_vad()  # a manual commit ends the speech being detected
        self._commit(self._take_buffer(), item_id)

    async def _clear(self, event: dict[str, Any], event_id: str | None) -> None:
        self._clear_buffer()
        if self._detector is not None:
            self._reset_vad()
        self.emit({"type": "input_audio_buffer.cleared"})

    def _commit(
        self,
        samples: np.ndarray,
        item_id: str,
        recognised: asyncio.Task[tuple[str | None, float]] | None = None,
    ) -> asyncio.Task[str | None]:
        """The committed audio becomes a user item, transcribed in the background; the task
        gives its words (None: no speech, and the item is gone again)."""
        previous = self.items[-1].id if self.items else None
        item = Item(item_id, "message", role="user", content=[Part("input_audio")])
        self.items.append(item)
        self.emit({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        self._item_added(item, previous)
        audio = to_recogniser(samples, self._input.rate)
        task = self._spawn(self._transcribe(item, audio, recognised))
        self._transcribing[item_id] = task
        task.add_done_callback(lambda _: self._transcribing.pop(item_id, None))
        return task

    def _item_added(self, item: Item, previous: str | None) -> None:
        self.emit(
            {
                "type": event_name("conversation.item.added", self.dialect),
                "previous_item_id": previous,
                "item": item.render(self.dialect),
            }
        )

    def _item_done(self, item: Item) -> None:
        if self.dialect == "ga":
            self.emit(
                {"type": "conversation.item.done", "previous_item_id": self._previous(item), "item": item.render("ga")}
            )

    def _previous(self, item: Item) -> str | None:
        for index, candidate in enumerate(self.items):
            if candidate is item:
                return self.items[index - 1].id if index else None
        return None

    # --- transcription ------------------------------------------------------------------------

    async def _recognition(
        self, samples: np.ndarray, deadline: Deadline, at_pause: bool = False
    ) -> tuple[str | None, float]:
        """The words in 16 kHz samples (None: no speech), on the ASR queue, admitted like any
        turn's recognition; and the recogniser's seconds. Raises QueueFull, EngineFailure,
        GenerationCancelled."""
        voice = self.engines.voice
        self._deadlines.add(deadline)
        token = current_deadline.set(deadline)
        queued = time.perf_counter()
        try:
            with admit(deadline, [(voice.asr_queue, 1.0)]):
                text, seconds = await voice.asr_queue.run(self._recognise, samples, deadline.cancel)
        finally:
            current_deadline.reset(token)
            self._deadlines.discard(deadline)
        log.info(
            "realtime transcription",
            extra={
                "event": "realtime.transcription",
                "audio_seconds": round(samples.size / RECOGNISER_RATE, 3),
                "asr_seconds": round(seconds, 3),
                "total_seconds": round(time.perf_counter() - queued, 3),
                "at_pause": at_pause,
            },
        )
        return text, seconds

    def _recognition_task(
        self, samples: np.ndarray, at_pause: bool = False
    ) -> tuple[asyncio.Task[tuple[str | None, float]], Deadline]:
        deadline = Deadline(time.monotonic() + self.limits.turn_seconds)
        return self._spawn(self._recognition(samples, deadline, at_pause)), deadline

    async def _transcribe(
        self,
        item: Item,
        samples: np.ndarray,
        recognised: asyncio.Task[tuple[str | None, float]] | None = None,
    ) -> str | None:
        """The item's words, from its audio (`recognised`: a recognition already under way of
        that very audio, started while the broker paused)."""
        text: str | None = None
        failure: tuple[str, str] | None = None
        try:
            if recognised is None:
                recognised, _ = self._recognition_task(samples)
            text, _ = await recognised
        except QueueFull as exc:
            failure = ("overloaded", str(exc))
        except EngineFailure as exc:
            failure = ("server_error", str(exc))
        except (GenerationCancelled, asyncio.CancelledError):
            return None  # the session ended
        if text is None:
            failure = failure or ("no_speech", "no speech was heard in the committed audio: it makes no turn")
            if self.config.transcription is not None:
                self.emit(
                    {
                        "type": "conversation.item.input_audio_transcription.failed",
                        "item_id": item.id,
                        "content_index": 0,
                        "error": {"type": "transcription_error", "code": failure[0], "message": failure[1]},
                    }
                )
            if item in self.items:
                self.items.remove(item)
                self.emit({"type": "conversation.item.deleted", "item_id": item.id})
            return None
        item.content[0].text = text
        if self.config.transcription is not None:
            self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item.id,
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": round(samples.size / RECOGNISER_RATE, 3)},
                }
            )
        if item in self.items:
            self._item_done(item)
        return text

    def _recognise(
        self, samples: np.ndarray, cancel: threading.Event
    ) -> tuple[str | None, float]:  # in a worker thread
        """The words heard (None: none) and the recogniser's seconds."""
        voice = self.engines.voice
        decoded = DecodedAudio(samples=samples.astype(np.float32), container="realtime")
        started = time.perf_counter()
        try:
            transcript = voice.transcribe(decoded, cancel, language=self.config.language)
        except NoSpeech:
            voice.record_transcription(log, decoded, self.config.language, "", speech=False)
            return None, time.perf_counter() - started
        heard = not is_hallucination(transcript.text)
        voice.record_transcription(log, decoded, transcript.language, transcript.text, speech=heard)
        return (transcript.text.strip() if heard else None), time.perf_counter() - started

    # --- conversation items -------------------------------------------------------------------

    def _find(self, item_id: Any) -> Item | None:
        return next((item for item in self.items if item.id == item_id), None)

    async def _item_create(self, event: dict[str, Any], event_id: str | None) -> None:
        item = item_from_client(event.get("item"), self.dialect)
        if self._find(item.id) is not None:
            raise ConfigError(f"an item with id {item.id!r} already exists", "item.id", "duplicate_item_id")
        previous = event.get("previous_item_id")
        if previous is None or (self.items and previous == self.items[-1].id):
            position = len(self.items)
        elif previous == "root":
            position = 0
        elif (anchor := self._find(previous)) is not None:
            position = self.items.index(anchor) + 1
        else:
            raise ConfigError(
                f"previous_item_id {previous!r} is not in the conversation", "previous_item_id", "item_not_found"
            )
        self.items.insert(position, item)
        self._item_added(item, self.items[position - 1].id if position else None)
        audio_parts = [p for p in item.content if p.kind == "input_audio" and p.audio]
        if not audio_parts:
            self._item_done(item)
            return
        # An input_audio part: heard like committed audio, its words as the part's transcript.
        samples = self._input.decode(decode_base64(audio_parts[0].audio))
        audio_parts[0].audio = None
        task = self._spawn(self._transcribe(item, to_recogniser(samples, self._input.rate)))
        self._transcribing[item.id] = task
        task.add_done_callback(lambda _: self._transcribing.pop(item.id, None))

    async def _item_delete(self, event: dict[str, Any], event_id: str | None) -> None:
        item = self._find(event.get("item_id"))
        if item is None:
            raise ConfigError(f"item {event.get('item_id')!r} is not in the conversation", "item_id", "item_not_found")
        self.items.remove(item)
        self.emit({"type": "conversation.item.deleted", "item_id": item.id})

    async def _item_retrieve(self, event: dict[str, Any], event_id: str | None) -> None:
        item = self._find(event.get("item_id"))
        if item is None:
            raise ConfigError(f"item {event.get('item_id')!r} is not in the conversation", "item_id", "item_not_found")
        self.emit({"type": "conversation.item.retrieved", "item": item.render(self.dialect)})

    async def _item_truncate(self, event: dict[str, Any], event_id: str | None) -> None:
        """Keeps of an answer's transcript only the pieces whose audio was played up to
        `audio_end_ms` (the client says how far it played)."""
        item = self._find(event.get("item_id"))
        if item is None or item.role != "assistant":
            raise ConfigError(
                "'item_id' must name an assistant message of the conversation", "item_id", "item_not_found"
            )
        end_ms = event.get("audio_end_ms")
        if isinstance(end_ms, bool) or not isinstance(end_ms, int) or end_ms < 0:
            raise ConfigError("'audio_end_ms' must be a non-negative integer", "audio_end_ms")
        kept, played = [], 0.0
        for text, ms in item.spoken:
            if played >= end_ms:
                break
            kept.append(text)
            played += ms
        if item.content and item.content[0].kind == "audio":
            item.content[0].text = " ".join(kept)
            item.status = "incomplete"
            # Stored already (`response.done` came first): the stored reply is cut the same way.
            self._store_later(lambda: self._store_truncation(item))
        self.emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": int(event.get("content_index") or 0),
                "audio_end_ms": end_ms,
            }
        )

    # --- responses ----------------------------------------------------------------------------

    def _default_response(self) -> Response:
        config = self.config
        return Response(
            id=new_id("resp"),
            conversation=True,
            modalities=config.output_modalities,
            instructions=config.instructions,
            max_tokens=None if config.max_output_tokens == "inf" else config.max_output_tokens,
            temperature=config.temperature,
            tools=config.tools,
            tool_choice=config.tool_choice,
            parallel_tool_calls=config.parallel_tool_calls,
        )

    async def _response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        if self.response is not None:
            self.error(
                f"Conversation already has an active response in progress: {self.response.id}. Wait until the "
                "response is finished before creating a new one.",
                code="conversation_already_has_active_response",
                event_id=event_id,
            )
            return
        response = self._default_response()
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise ConfigError("'response' must be an object", "response", "invalid_type")
        if isinstance(params.get("instructions"), str):
            response.instructions = params["instructions"]
        key = "modalities" if self.dialect == "beta" else "output_modalities"
        if key in params:
            response.modalities = modalities(params[key], f"response.{key}")
        key = "max_response_output_tokens" if self.dialect == "beta" else "max_output_tokens"
        if key in params:
            limit = max_tokens(params[key], f"response.{key}")
            response.max_tokens = None if limit == "inf" else limit
        if "conversation" in params:
            if params["conversation"] not in ("auto", "none"):
                raise ConfigError("'response.conversation' must be 'auto' or 'none'", "response.conversation")
            response.conversation = params["conversation"] == "auto"
        if "tools" in params:
            if not isinstance(params["tools"], list) or not all(isinstance(t, dict) for t in params["tools"]):
                raise ConfigError("'response.tools' must be a list of tools", "response.tools", "invalid_type")
            response.tools = params["tools"]
        if "tool_choice" in params:
            response.tool_choice = params["tool_choice"]
        if "parallel_tool_calls" in params:
            if not isinstance(params["parallel_tool_calls"], bool):
                raise ConfigError("'response.parallel_tool_calls' must be a boolean", "response.parallel_tool_calls")
            response.parallel_tool_calls = params["parallel_tool_calls"]
        tool_use(response.tools, response.tool_choice, "response.tools")  # checked before it starts
        response.metadata = params.get("metadata")
        self._start_response(response)

    async def _response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self.response is None or (wanted is not None and wanted != self.response.id):
            self.error(
                "Cancellation failed: no active response found", code="response_cancel_not_active", event_id=event_id
            )
            return
        self._cancel_response("client_cancelled")

    def _start_response(self, response: Response) -> None:
        response.deadline = Deadline(time.monotonic() + self.limits.turn_seconds)
        response.loop = asyncio.get_running_loop()
        response.started_at = utcnow()
        self.response = response
        if response.conversation:
            self._queued_turn = None  # it reads every turn heard so far
        self.emit({"type": "response.created", "response": self._render_response(response)})
        response.task = self._spawn(self._run_response(response))

    def _cancel_response(self, reason: str) -> None:
        """At once: `response.done` (cancelled) goes out now; the engines stop behind it. The
        answer keeps, in the conversation, only what was already sent of it."""
        response = self.response
        if response is None:
            return
        self.response = None
        response.deadline.end("cancelled")
        if response.item is not None:
            part = response.item.content[0]
            part.text = " ".join(text for text, _ in response.spoken) if part.kind == "audio" else response.sent_text
            response.item.status = "incomplete"
        for output in response.outputs:
            if output.type == "function_call" and output.status != "completed":
                output.status = "incomplete"  # left out of later prompts (`Item.chat_message`)
        response.status = "cancelled"
        response.status_details = {"type": "cancelled", "reason": reason}
        self._finish(response)

    def _finish(self, response: Response) -> None:
        if response.closed:
            return
        response.closed = True
        if self.response is response:
            self.response = None
        self.emit({"type": "response.done", "response": self._render_response(response)})
        self._last_activity = time.monotonic()
        if response.conversation and response.status in ("completed", "incomplete", "cancelled"):
            # Not cancelled by a hang-up: a client that heard `response.done` may leave at once.
            self._store_later(lambda: self._store_turn(response))
        reason = (response.status_details or {}).get("reason")
        if self._queued_turn is not None and reason != "turn_detected":  # else the new turn's answer reads it
            self._answer_queued(response)

    def _send(self, response: Response, event: dict[str, Any]) -> None:
        """A response's event, unless the response is already over."""
        if not response.closed:
            self.emit({**event, "type": event_name(event["type"], self.dialect), "response_id": response.id})

    def _render_response(self, response: Response) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": response.id,
            "object": "realtime.response",
            "status": response.status,
            "status_details": response.status_details,
            "output": [item.render(self.dialect) for item in response.outputs],
            "conversation_id": self.conversation_id if response.conversation else None,
            "usage": response.usage,
            "metadata": response.metadata,
        }
        max_output = response.max_tokens if response.max_tokens is not None else "inf"
        if self.dialect == "beta":
            shown.update(
                modalities=list(response.modalities),
                voice=self.config.voice,
                output_audio_format=self.config.output_format,
                temperature=response.temperature,
                max_output_tokens=max_output,
            )
        else:
            shown.update(
                output_modalities=list(response.modalities),
                audio={
                    "output": {
                        "format": render_session(self.config, "ga", self.id)["audio"]["output"]["format"],
                        "voice": self.config.voice,
                    }
                },
                max_output_tokens=max_output,
            )
        return shown

    def _prompt(self, response: Response) -> list[ChatMessage]:
        """The session's conversation as chat messages: consecutive turns of one role joined
        (chat templates want them alternating), a function's calls with the answer before them,
        each call's output as a `tool` message naming its function."""
        messages = [ChatMessage("system", response.instructions or self.engines.chat.system_prompt.content)]
        names = {item.call_id: item.name for item in self.items if item.type == "function_call"}
        for item in self.items:
            if (message := item.chat_message()) is None:
                continue
            response.seen.add(item.id)
            last = messages[-1]
            if message.role == "system":
                messages[0] = ChatMessage("system", f"{messages[0].content}\n\n{message.content}")
            elif message.role == "tool":
                messages.append(replace(message, name=names.get(message.tool_call_id)))
            elif message.tool_calls and last.role == "assistant" and len(messages) > 1:
                messages[-1] = replace(last, tool_calls=last.tool_calls + message.tool_calls)
            elif len(messages) > 1 and last.role == message.role and not last.tool_calls and message.role != "tool":
                messages[-1] = ChatMessage(message.role, f"{last.content}\n{message.content}")
            else:
                messages.append(message)
        return messages

    async def _run_response(self, response: Response) -> None:
        chat, speech = self.engines.chat, self.engines.speech
        token = current_deadline.set(response.deadline)
        self._deadlines.add(response.deadline)
        try:
            pending = list(self._transcribing.values())
            if pending:  # a commit just before: its words are part of the prompt
                heard = await asyncio.gather(*pending, return_exceptions=True)
                if all(not isinstance(h, str) for h in heard):
                    response.status = "failed"
                    response.status_details = {
                        "type": "failed",
                        "error": {
                            "type": "invalid_request_error",
                            "code": "no_speech",
                            "message": "no speech was heard: nothing to answer",
                        },
                    }
                    self._finish(response)
                    return
            stages: list[tuple[InferenceQueue, float]] = [(chat.llm_queue, 1.0)]
            spoken = "audio" in response.modalities
            if spoken:
                stages.append((speech.queue, SPEECH_JOBS_PER_REPLY))
            with admit(response.deadline, stages):
                await self._generate_and_speak(response, spoken)
            incomplete = response.status_details is not None and response.status_details.get("type") == "incomplete"
            response.status = "incomplete" if incomplete else "completed"
            self._finish(response)
        except QueueFull as exc:
            self._fail(response, "overloaded", str(exc))
        except (EngineFailure, PromptTooLong, PromptRejected, FeatureRefused, ConfigError) as exc:
            self._fail(response, "server_error", str(exc))
        except GenerationCancelled:
            pass  # cancelled: its response.done is already out
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a realtime response failed")
            self._fail(response, "server_error", "the response failed")
        finally:
            current_deadline.reset(token)
            self._deadlines.discard(response.deadline)
            log.info(
                "realtime response",
                extra={
                    "event": "realtime.response",
                    "status": response.status,
                    "reason": (response.status_details or {}).get("reason"),
                    "output_tokens": (response.usage or {}).get("output_tokens"),
                    "spoken_pieces": len(response.spoken),
                },
            )

    # --- memory -------------------------------------------------------------------------------

    async def _load_history(self) -> None:
        """A continued session starts with its stored conversation's newest turns."""
        chat = self.engines.chat
        context = await anyio.to_thread.run_sync(chat.store.context_for, self.store_session, None, chat.history_chars)
        self.stored_conversation = context.conversation_id
        for message in context.history:
            if message.role not in ("user", "assistant"):
                continue
            kind = "input_text" if message.role == "user" else "text"
            item = Item(new_id("item"), "message", role=message.role, content=[Part(kind, message.content)])  # type: ignore[arg-type]
            self.items.append(item)
            self._stored_items[item.id] = message.id

    def _store_later(self, write: Callable[[], Awaitable[None]]) -> None:
        """A write to the store, after the writes asked before it (a truncation after the turn it
        cuts); the session waits for them all before it ends."""
        previous = self._store_chain

        async def in_turn() -> None:
            if previous is not None:
                await asyncio.wait([previous])  # its failure is its own (logged there)
            await write()

        task = asyncio.ensure_future(in_turn())
        self._store_chain = task
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _store_turn(self, response: Response) -> None:
        """A finished answer and the user's words before it, stored as one turn of the
        session's conversation (the text routes continue it with the same `session_id`)."""
        item = response.item
        if self._erased or item is None or item not in self.items or not item.text():
            return
        index = self.items.index(item)
        said = [
            i
            for i in self.items[:index]
            if i.id not in self._stored_items and i.type == "message" and i.role == "user" and i.text()
        ]
        if not said:
            return
        chat = self.engines.chat
        now = utcnow()
        record = TurnRecord(
            session_id=self.store_session,
            conversation_id=self.stored_conversation,
            user_message="\n".join(i.text() for i in said),
            user_at=response.started_at or now,
            reply=item.text(),
            reply_at=now,
            model=chat.engine.model_name,
            prompt_tokens=(response.usage or {}).get("input_tokens", 0),
            completion_tokens=(response.usage or {}).get("output_tokens", 0),
            user_id=self.user_id,
            # What this session holds of the store: if an erasure took any of it, nothing is stored.
            held_messages=tuple(sorted({self._stored_items[i.id] for i in self.items if i.id in self._stored_items})),
        )
        try:
            async with chat.session_locks.turn(self.store_session, self.user_id):
                await chat.session_locks.confirm(self.store_session)
                if self._erased:  # erased while this turn waited for the session
                    return
                stored = await anyio.to_thread.run_sync(chat.store.record_turn_messages, record)
        except ConversationNotFound:
            # Erased where this session could not be told (another replica): it ends now.
            log.info(
                "realtime turn not stored",
                extra={"event": "realtime.stored", "stored": False, "erased": True, "session": self.id},
            )
            self.conversation_erased()
            return
        except Exception:
            log.exception("a realtime turn could not be stored")
            log.info(
                "realtime turn not stored", extra={"event": "realtime.stored", "stored": False, "session": self.id}
            )
            return
        self.stored_conversation = stored.conversation_id
        self._stored_items.update({i.id: stored.user_message_id for i in said})
        self._stored_items[item.id] = stored.reply_id
        log.info(
            "realtime turn stored",
            extra={
                "event": "realtime.stored",
                "stored": True,
                "conversation_id": self.stored_conversation,
                "session": self.id,
            },
        )

    async def _store_truncation(self, item: Item) -> None:
        """An answer cut by `conversation.item.truncate` after its turn was stored: the stored
        reply becomes what the client played, the same text as the item's."""
        message_id = self._stored_items.get(item.id)
        if message_id is None or self._erased:
            return  # not stored (yet: when it is, it is stored as cut)
        chat = self.engines.chat
        try:
            async with chat.session_locks.turn(self.store_session, self.user_id):
                await chat.session_locks.confirm(self.store_session)
                if self._erased:
                    return
                await anyio.to_thread.run_sync(chat.store.replace_reply, self.store_session, message_id, item.text())
        except ConversationNotFound:
            self.conversation_erased()
            return
        except Exception:
            log.exception("a realtime truncation could not be stored")
            return
        log.info("realtime reply truncated", extra={"event": "realtime.truncated", "session": self.id})

    def conversation_erased(self) -> None:
        """This session's stored conversation (or a turn of it that the session holds) was
        erased: the session forgets all it holds (items, audio, the response under way, a
        turn waiting) and ends, with an `error` `conversation_erased` then close code 1008;
        nothing of it is stored any more. Called by the erasure route on the event loop, or by
        the session itself when the store finds its messages gone (an erasure elsewhere)."""
        if self._erased:
            return
        self._erased = True
        self.close()
        self.items.clear()
        self._stored_items.clear()
        self._queued_turn = None
        self._clear_buffer()
        self.error(
            "the conversation of this session was erased: the session ends and nothing of it is kept "
            "(open a new session to go on)",
            code="conversation_erased",
        )

    def _fail(self, response: Response, code: str, message: str) -> None:
        response.status = "failed"
        response.status_details = {
            "type": "failed",
            "error": {"type": "server_error", "code": code, "message": message},
        }
        if response.item is not None:
            response.item.status = "incomplete"
        self._finish(response)

    def _open_output(self, response: Response, item: Item) -> int:
        """A new output item of the response (on the event loop): announced, and added to the
        conversation unless the response is out of band. Returns its output index."""
        previous = self.items[-1].id if self.items else None
        response.outputs.append(item)
        if response.conversation:
            self.items.append(item)
        index = len(response.outputs) - 1
        self._send(
            response, {"type": "response.output_item.added", "output_index": index, "item": item.render(self.dialect)}
        )
        if response.conversation:
            self._item_added(item, previous)
        return index

    async def _generate_and_speak(self, response: Response, spoken: bool) -> None:
        chat = self.engines.chat
        if response.closed:
            return
        tools = tool_use(response.tools, response.tool_choice, parallel=response.parallel_tool_calls)
        prompt = self._prompt(response)
        loop = asyncio.get_running_loop()
        where: dict[str, Any] = {}

        def open_message() -> None:  # on the event loop: the answer's message, once it says something
            if response.item is not None or response.closed:
                return
            item = Item(
                new_id("item"),
                "message",
                role="assistant",
                content=[Part("audio" if spoken else "text", "")],
                status="in_progress",
            )
            item.spoken = response.spoken  # the same list: conversation.item.truncate reads it
            response.item = item
            where.update(item_id=item.id, output_index=self._open_output(response, item), content_index=0)
            self._send(
                response, {"type": "response.content_part.added", **where, "part": item.content[0].render(self.dialect)}
            )

        if tools is None:
            open_message()  # without tools, the answer is a message from the start
        delta_event = "response.output_audio_transcript.delta" if spoken else "response.output_text.delta"
        cleaner = ReplyStream()
        splitter = SentenceSplitter()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.ensure_future(self._speak(response, sentences, where)) if spoken else None
        # Where the LLM and the voice share the CPU (one slot, `LEA_TTS_OVERLAP` after the reply),
        # each sentence is spoken inside the LLM's job, generation pausing meanwhile: the first
        # audio leaves after the first sentence instead of after the whole reply, and the two
        # engines never fight over the cores. Else (a GPU, a remote engine) speech runs beside
        # generation on its own queue.
        inline = spoken and not self.engines.speech.overlap_generation
        cancel = response.deadline.cancel
        calls: dict[int, Item] = {}

        def send_text(delta: str) -> None:  # on the event loop
            if delta and not response.closed:
                open_message()
                response.sent_text += delta
                self._send(response, {"type": delta_event, **where, "delta": delta})

        def take_call(delta: ToolCallDelta) -> None:  # on the event loop
            if response.closed:
                return
            item = calls.get(delta.index)
            if item is None:
                call_id = delta.id or new_id("call")
                item = Item(
                    new_id("item"),
                    "function_call",
                    call_id=call_id,
                    name=delta.name or "",
                    arguments="",
                    status="in_progress",
                )
                calls[delta.index] = item
                self._open_output(response, item)
            if delta.arguments:
                item.arguments = (item.arguments or "") + delta.arguments
                self._send(
                    response,
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item.id,
                        "output_index": response.outputs.index(item),
                        "call_id": item.call_id,
                        "delta": delta.arguments,
                    },
                )

        head: list[str | None] = [""]  # the answer's text until its first pause: spoken as soon as it is there

        def pieces(delta: str) -> list[str]:
            """What of the text so far can be spoken: its first phrase as soon as its end is
            written (a pause, a linking word, or a word boundary past 40 characters), then
            whole sentences."""
            if head[0] is not None:
                head[0] += delta
                cut = first_phrase_end(head[0])
                if cut is None:
                    return []
                first, delta = head[0][:cut].strip(), head[0][cut:]
                head[0] = None
                response.first_phrase_cut = True
                return [first, *splitter.feed(delta)]
            return splitter.feed(delta)

        def on_text(piece: str) -> None:  # in the LLM's thread
            delta = cleaner.feed(piece)
            if not delta:
                return
            loop.call_soon_threadsafe(send_text, delta)
            for sentence in pieces(delta):
                if inline:
                    self._speak_now(response, sentence, where, cancel)
                elif spoken:
                    loop.call_soon_threadsafe(sentences.put_nowait, sentence)

        def on_tool_call(delta: ToolCallDelta) -> None:  # in the LLM's thread
            loop.call_soon_threadsafe(take_call, delta)

        try:
            cap = min(chat.max_reply_tokens, response.max_tokens or chat.max_reply_tokens)
            reply: ChatReply = await chat.llm_queue.run(
                self._generate, prompt, cap, response.temperature, on_text, cancel, tools, on_tool_call
            )
            await asyncio.sleep(0)  # the last pieces' callbacks run first
            final = clean_reply(reply.text)
            if not final and not reply.tool_calls:
                final = EMPTY_REPLY_FALLBACK
            rest = cleaner.finish(final)
            send_text(rest)
            if spoken:
                if head[0] is not None:  # no pause in the whole answer
                    rest, head[0] = head[0] + rest, None
                for sentence in splitter.feed(rest) + splitter.flush():
                    sentences.put_nowait(sentence)
            sentences.put_nowait(None)
            if speaker is not None:
                await speaker
        finally:
            if speaker is not None and not speaker.done():
                speaker.cancel()
        if response.closed:
            return
        response.usage = _usage(reply)
        if response.max_tokens is not None and reply.finish_reason == "length" and cap == response.max_tokens:
            response.status_details = {"type": "incomplete", "reason": "max_output_tokens"}
        item = response.item
        if item is not None:
            final_text = cleaner.sent if not cleaner.retracted else final
            item.content[0].text = final_text
            item.status = "completed"
            if spoken:
                self._send(response, {"type": "response.output_audio.done", **where})
                self._send(
                    response, {"type": "response.output_audio_transcript.done", **where, "transcript": final_text}
                )
            else:
                self._send(response, {"type": "response.output_text.done", **where, "text": final_text})
            self._send(
                response, {"type": "response.content_part.done", **where, "part": item.content[0].render(self.dialect)}
            )
            self._send(
                response,
                {
                    "type": "response.output_item.done",
                    "output_index": where["output_index"],
                    "item": item.render(self.dialect),
                },
            )
            if response.conversation and item in self.items:
                self._item_done(item)
        # The calls as the engine finished them (their arguments valid against their schema).
        for index, call in enumerate(reply.tool_calls):
            if (call_item := calls.get(index)) is None:
                call_item = calls[index] = Item(
                    new_id("item"), "function_call", call_id=call.id, name=call.name, arguments=""
                )
                self._open_output(response, call_item)
            call_item.call_id, call_item.name, call_item.arguments = call.id, call.name, call.arguments
            call_item.status = "completed"
            output_index = response.outputs.index(call_item)
            self._send(
                response,
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": call_item.id,
                    "output_index": output_index,
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
            )
            self._send(
                response,
                {
                    "type": "response.output_item.done",
                    "output_index": output_index,
                    "item": call_item.render(self.dialect),
                },
            )
            if response.conversation and call_item in self.items:
                self._item_done(call_item)

    def _generate(
        self,
        prompt: list[ChatMessage],
        max_tokens: int,
        temperature: float,
        on_text: Callable[[str], None],
        cancel: threading.Event,
        tools: ToolUse | None = None,
        on_tool_call: Callable[[ToolCallDelta], None] | None = None,
    ) -> ChatReply:  # in a worker thread
        engine = self.engines.chat.engine
        budget = engine.context_size - max_tokens
        # The oldest turns go first when the conversation outgrows the window.
        while len(prompt) > 2 and engine.count_prompt_tokens(prompt) > budget:
            prompt = [prompt[0], *prompt[2:]]
        if self.log_content:
            log.info(
                "llm.prompt", extra={"event": "llm.prompt", "api": "realtime", "prompt": [m.content for m in prompt]}
            )
        try:
            if tools is None:
                return engine.generate(
                    prompt, max_tokens=max_tokens, temperature=temperature, on_text=on_text, cancel=cancel
                )
            return engine.generate(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                on_text=on_text,
                cancel=cancel,
                tools=tools,
                on_tool_call=on_tool_call,
            )
        except (GenerationCancelled, PromptTooLong, PromptRejected, FeatureRefused, QueueFull):
            raise
        except Exception as exc:
            log.exception("the language model failed")
            raise EngineFailure("language model") from exc

    async def _speak(self, response: Response, sentences: asyncio.Queue[str | None], where: dict[str, Any]) -> None:
        """The sentences not spoken during generation, one by one on the speech queue."""
        speech = self.engines.speech
        while (sentence := await sentences.get()) is not None:
            for phrase in self._phrases(response, sentence):
                text = normalize_for_speech(phrase, speech.locale)
                if not text or response.closed:
                    continue
                pcm, rate = await speech.queue.run(self._synthesize, text, response.deadline.cancel)
                self._send_audio(response, where, phrase, pcm, rate)

    def _phrases(self, response: Response, sentence: str) -> list[str]:
        """The answer's first sentence cut at its first pause: its audio is ready sooner."""
        if response.spoken or response.first_phrase_cut:
            return [sentence]
        response.first_phrase_cut = True
        return split_first_phrase(sentence)

    def _speak_now(self, response: Response, sentence: str, where: dict[str, Any], cancel: threading.Event) -> None:
        """A sentence spoken in the LLM's thread (generation waits); its audio goes out at once."""
        speech = self.engines.speech
        for phrase in self._phrases(response, sentence):
            text = normalize_for_speech(phrase, speech.locale)
            if text:
                pcm, rate = self._synthesize(text, cancel)
                assert response.loop is not None
                response.loop.call_soon_threadsafe(self._send_audio, response, where, phrase, pcm, rate)

    def _send_audio(self, response: Response, where: dict[str, Any], phrase: str, pcm: np.ndarray, rate: int) -> None:
        """A phrase's audio, in the session's output format, in deltas (on the event loop)."""
        if response.closed or not pcm.size:
            return
        codec = AudioCodec(self.config.output_format)
        data = from_voice(pcm, rate, codec)
        step = int(codec.bytes_per_second() * AUDIO_DELTA_SECONDS)
        for start in range(0, len(data), step):
            self._send(
                response,
                {
                    "type": "response.output_audio.delta",
                    **where,
                    "delta": base64.b64encode(data[start : start + step]).decode("ascii"),
                },
            )
        response.spoken.append((phrase, len(data) * 1000 / codec.bytes_per_second()))

    def _synthesize(self, text: str, cancel: threading.Event) -> tuple[np.ndarray, int]:  # in a worker thread
        """The text's samples in the session's voice, and their rate."""
        if cancel.is_set():
            raise GenerationCancelled("the response ended before its speech")
        synthesizer = self._synthesizer
        chunks = list(synthesizer.synthesize(text, speed=self.config.speed))
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return pcm, synthesizer.sample_rate


def _usage(reply: ChatReply) -> dict[str, Any]:
    return {
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "input_tokens": reply.prompt_tokens,
        "output_tokens": reply.completion_tokens,
        "input_token_details": {"text_tokens": reply.prompt_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": reply.completion_tokens, "audio_tokens": 0},
    }
