"""Transcription of an upload, with nothing stored (POST /v1/audio/transcriptions): the voice
turn's first two stages, on the same queues, limits and bounded recognition, without the
conversation. Silence is an empty transcript here, not an error: an OpenAI client expects text."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from lea_local.asr.base import NoSpeech, SpeechRecognizer, Transcript, TranscriptSegment
from lea_local.asr.decode import DecodedAudio, decode_audio
from lea_local.inference_queue import InferenceQueue, QueueFull
from lea_local.llm.base import GenerationCancelled
from lea_local.observability import count
from lea_local.turns import EngineFailure
from lea_local.voice import VoiceTurns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TranscriptionOptions:
    """A caller's choices for one transcription; None keeps the server's."""

    language: str | None = None
    """A Whisper language code ("fr")."""
    prompt: str | None = None
    """Replaces the locale's vocabulary prompt ("" for none)."""
    temperature: float | None = None
    """The first decoding temperature, 0 to 1."""


@dataclass(frozen=True)
class Transcription:
    text: str
    """"" when the recording holds no speech."""
    language: str | None
    segments: tuple[TranscriptSegment, ...]
    audio_seconds: float


class Transcriber:
    """Decodes with ffmpeg on the decode queue, recognises on the ASR queue: the voice turn's
    engines and bounds (`max_audio_seconds`, `decode_timeout`), under the request's deadline."""

    def __init__(
        self,
        *,
        recognizer: SpeechRecognizer,
        decode_queue: InferenceQueue,
        asr_queue: InferenceQueue,
        max_audio_seconds: float,
        decode_timeout: float,
        temp_dir: Path,
        log_content: bool = False,
    ) -> None:
        self.recognizer = recognizer
        self.decode_queue = decode_queue
        self.asr_queue = asr_queue
        self.max_audio_seconds = max_audio_seconds
        self.decode_timeout = decode_timeout
        self.temp_dir = temp_dir
        self.log_content = log_content

    @classmethod
    def of_voice(cls, voice: VoiceTurns) -> Transcriber:
        """The transcriber of the voice turns' engines, queues and limits."""
        return cls(
            recognizer=voice.recognizer,
            decode_queue=voice.decode_queue,
            asr_queue=voice.asr_queue,
            max_audio_seconds=voice.max_audio_seconds,
            decode_timeout=voice.decode_timeout,
            temp_dir=voice.temp_dir,
            log_content=voice.log_content,
        )

    def _decode(self, audio: bytes) -> DecodedAudio:
        return decode_audio(
            audio, max_seconds=self.max_audio_seconds, timeout=self.decode_timeout, temp_dir=self.temp_dir
        )

    def _recognise(
        self, decoded: DecodedAudio, options: TranscriptionOptions, cancel: threading.Event | None
    ) -> Transcript | None:
        """The transcript, or None when nothing was said."""
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("cancelled before transcription")
        try:
            return self.recognizer.transcribe(
                decoded.samples,
                cancel=cancel,
                initial_prompt=options.prompt,
                language=options.language,
                temperature=options.temperature,
            )
        except NoSpeech:
            return None
        except (GenerationCancelled, QueueFull):  # QueueFull: a remote engine unreachable (503)
            raise
        except Exception as exc:
            log.exception("speech recognition failed")
            raise EngineFailure("speech recognizer") from exc

    async def transcribe(
        self, audio: bytes, options: TranscriptionOptions, cancel: threading.Event | None = None
    ) -> Transcription:
        """Raises AudioRejected (400/413), QueueFull, GenerationCancelled, EngineFailure."""
        decoded = await self.decode_queue.run(self._decode, audio)
        transcript = await self.asr_queue.run(self._recognise, decoded, options, cancel)
        count("audio_transcribed", decoded.seconds)
        if transcript is None:
            result = Transcription("", options.language or self.recognizer.language, (), decoded.seconds)
        else:
            result = Transcription(transcript.text, transcript.language, transcript.segments, decoded.seconds)
        log.info(
            "transcribed",
            extra={
                "event": "asr",
                "container": decoded.container,
                "audio_seconds": round(decoded.seconds, 3),
                "language": result.language,
                "speech": transcript is not None,
                **({"transcription": result.text} if self.log_content else {}),
            },
        )
        return result
