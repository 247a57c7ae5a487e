"""The voice turn: recording → decode (ffmpeg) → transcribe (Whisper) → the very same
conversation turn as text chat. Speech for the reply is the agent turn's (`pipeline.agent`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import anyio.to_thread

from lea_local.asr.base import NoSpeech, SpeechRecognizer, Transcript
from lea_local.asr.decode import DecodedAudio, decode_audio
from lea_local.pipeline.errors import EngineFailure
from lea_local.pipeline.turns import ChatTurns, TurnRequest, TurnResult
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import InferenceQueue, QueueFull
from lea_local.runtime.observability import count
from lea_local.store.conversations import ConversationNotFound

log = logging.getLogger(__name__)


class VoiceTurns:
    def __init__(
        self,
        *,
        chat: ChatTurns,
        recognizer: SpeechRecognizer,
        decode_queue: InferenceQueue,
        asr_queue: InferenceQueue,
        max_audio_seconds: float,
        decode_timeout: float,
        temp_dir: Path,
        log_content: bool = False,
    ) -> None:
        self.chat = chat
        self.recognizer = recognizer
        self.decode_queue = decode_queue
        self.asr_queue = asr_queue
        self.max_audio_seconds = max_audio_seconds
        self.decode_timeout = decode_timeout
        self.temp_dir = temp_dir
        self.log_content = log_content
        temp_dir.mkdir(parents=True, exist_ok=True)

    def decode(self, audio: bytes) -> DecodedAudio:
        return decode_audio(
            audio, max_seconds=self.max_audio_seconds, timeout=self.decode_timeout, temp_dir=self.temp_dir
        )

    def record_transcription(
        self,
        logger: logging.Logger,
        decoded: DecodedAudio,
        language: str | None,
        text: str,
        *,
        speech: bool | None = None,
    ) -> None:
        """Counts the audio transcribed and logs the `asr` event (on the caller's logger), the
        text only with LEA_LOG_CONTENT; `speech`: whether any was heard, when that may be no."""
        count("audio_transcribed", decoded.seconds)
        logger.info(
            "transcribed",
            extra={
                "event": "asr",
                "container": decoded.container,
                "audio_seconds": round(decoded.seconds, 3),
                "language": language,
                **({"speech": speech} if speech is not None else {}),
                **({"transcription": text} if self.log_content else {}),
            },
        )

    def transcribe(
        self,
        decoded: DecodedAudio,
        cancel: threading.Event | None = None,
        *,
        initial_prompt: str | None = None,
        language: str | None = None,
        temperature: float | None = None,
    ) -> Transcript:
        """Raises NoSpeech, GenerationCancelled, QueueFull, EngineFailure. The keywords apply to
        this call only (`/v1/audio/transcriptions`' options)."""
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled before transcription")
        try:
            return self.recognizer.transcribe(
                decoded.samples,
                cancel=cancel,
                initial_prompt=initial_prompt,
                language=language,
                temperature=temperature,
            )
        except (NoSpeech, GenerationCancelled, QueueFull):  # QueueFull: a remote engine unreachable (503)
            raise
        except Exception as exc:
            log.exception("speech recognition failed")
            raise EngineFailure("speech recognizer") from exc

    async def take_voice_turn(
        self,
        request: TurnRequest,
        *,
        on_text: Callable[[str], None] | None = None,
        audio_name: str | None = None,
        on_transcript: Callable[[str], None] | None = None,
        before_storing: Callable[[str], Awaitable[None]] | None = None,
    ) -> TurnResult:
        """The conversation turn on `request.audio`'s transcription (`ChatTurns.take_turn`'s
        `on_text`, `audio_name` and `before_storing`). Raises AudioRejected, NoSpeech,
        ConversationNotFound, QueueFull, EngineFailure; stores nothing unless the whole turn
        succeeded.
        `on_transcript` receives the transcription before the reply is generated (a streamed
        turn shows it at once)."""
        assert request.audio is not None
        session_id, conversation_id = request.session_id, request.conversation_id
        if conversation_id is not None:
            # Fail on a wrong conversation before spending decoding and transcription on it.
            owner = await anyio.to_thread.run_sync(self.chat.store.session_of, conversation_id)
            if session_id is not None and owner != session_id:
                raise ConversationNotFound(f"conversation {conversation_id} not found for this session")
        # The session is held from decoding on: an erasure of it, or of this user, that arrives
        # while the recording is decoded or transcribed waits for the turn and erases it too.
        async with self.chat.session(request) as session_id:
            # The queues record each stage's engine time and wait in the request's log line.
            decoded = await self.decode_queue.run(self.decode, request.audio)
            transcript = await self.asr_queue.run(self.transcribe, decoded, request.cancel)
            self.record_transcription(log, decoded, transcript.language, transcript.text)
            if on_transcript is not None:
                on_transcript(transcript.text)
            turn = await self.chat.take_turn_in_session(
                replace(request, message=transcript.text, session_id=session_id),
                on_text=on_text,
                audio_name=audio_name,
                audio_seconds=decoded.seconds,
                before_storing=before_storing,
            )
        return replace(turn, transcription=transcript.text)
