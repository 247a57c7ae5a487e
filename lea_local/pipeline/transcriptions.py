"""Transcription of an upload, with nothing stored (POST /v1/audio/transcriptions): the voice
turn's first two stages, on the same queues, limits and bounded recognition, without the
conversation. Silence is an empty transcript here, not an error: an OpenAI client expects text."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from lea_local.asr.base import NoSpeech, Transcript, TranscriptSegment
from lea_local.asr.decode import DecodedAudio
from lea_local.pipeline.voice import VoiceTurns

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
    """Decodes with ffmpeg on the decode queue, recognises on the ASR queue: the voice turn's own
    steps, engines and bounds (`VoiceTurns`), under the request's deadline; nothing stored."""

    def __init__(self, voice: VoiceTurns) -> None:
        self.voice = voice

    def _recognise(
        self, decoded: DecodedAudio, options: TranscriptionOptions, cancel: threading.Event | None
    ) -> Transcript | None:
        """The transcript, or None when nothing was said."""
        try:
            return self.voice.transcribe(
                decoded,
                cancel,
                initial_prompt=options.prompt,
                language=options.language,
                temperature=options.temperature,
            )
        except NoSpeech:
            return None

    async def transcribe(
        self, audio: bytes, options: TranscriptionOptions, cancel: threading.Event | None = None
    ) -> Transcription:
        """Raises AudioRejected (400/413), QueueFull, GenerationCancelled, EngineFailure."""
        voice = self.voice
        decoded = await voice.decode_queue.run(voice.decode, audio)
        transcript = await voice.asr_queue.run(self._recognise, decoded, options, cancel)
        if transcript is None:
            result = Transcription("", options.language or voice.recognizer.language, (), decoded.seconds)
        else:
            result = Transcription(transcript.text, transcript.language, transcript.segments, decoded.seconds)
        voice.record_transcription(log, decoded, result.language, result.text, speech=transcript is not None)
        return result
