"""What the voice pipeline needs from a speech recogniser, and the decoding bounds both Whisper
engines share. Another engine (whisper.cpp, a NeMo model…) is one new module that satisfies
`SpeechRecognizer`."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from lea_local.runtime.cancellation import GenerationCancelled

SAMPLE_RATE = 16_000

# Whisper decodes the audio in windows of 30 s. Greedy decoding with Whisper's usual temperature
# fallback (0.0, 0.2 … 1.0, five sampled candidates each) re-decodes hard audio (synthetic
# voices, music) up to six times, each up to the model's 448 tokens: a 6-second recording once
# took 90 s. One fallback, sampled once, keeps the work proportional to the audio.
FALLBACK_STEP = 0.2
TEMPERATURES = (0.0, FALLBACK_STEP)
BEST_OF = 1
# Human French speech over the test clips: at most ~6.5 text tokens per second of audio (two
# timestamp tokens per segment on top). A window's output is capped at this rate, with room for
# a short utterance's timestamps and punctuation: what goes past it is a repetition loop.
TOKENS_PER_SECOND = 10
TOKENS_MARGIN = 16
WINDOW_SECONDS = 30.0


def max_tokens_per_window(audio_seconds: float) -> int:
    """Tokens one window may produce, for a recording of this length."""
    return math.ceil(min(audio_seconds, WINDOW_SECONDS) * TOKENS_PER_SECOND) + TOKENS_MARGIN


def decoding_temperatures(first: float | None) -> tuple[float, ...]:
    """The temperatures a window is decoded at: from `first` (a caller's, 0 to 1; None: 0),
    with one fallback at most, as `TEMPERATURES`."""
    if first is None:
        return TEMPERATURES
    if first >= 1.0:
        return (1.0,)
    return (first, round(min(first + FALLBACK_STEP, 1.0), 2))


def raise_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled("speech recognition cancelled")


class NoSpeech(Exception):
    """The recording holds no speech (silence, noise, tones, music)."""

    def __init__(self) -> None:
        super().__init__("no speech detected in the recording")


@dataclass(frozen=True)
class TranscriptSegment:
    """A stretch of the recording and its text, with Whisper's figures for it (the fields of
    OpenAI's verbose transcription)."""

    id: int
    seek: int
    """Where its window starts, in mel frames (100 a second)."""
    start: float
    end: float
    """Seconds from the start of the recording."""
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    segments: tuple[TranscriptSegment, ...] = ()
    """In order; their texts, stripped and joined with spaces, are `text`."""


# Whisper's own reading of a window: above this probability, it holds no speech.
NO_SPEECH_PROBABILITY = 0.6


def invented_over_silence(segment: TranscriptSegment) -> bool:
    """Text sampled for a window that Whisper itself takes for no speech: its greedy decoding
    failed (a loop, or too unlikely), and the fallback's random draw invents words ("Les
    autorités de la Lévis…" over a hummed vowel, in 4 draws of 6). Whisper keeps such text
    unless it is also unlikely (avg_logprob < -1), so the verdict hung on the draw."""
    return segment.temperature > 0 and segment.no_speech_prob > NO_SPEECH_PROBABILITY


def transcript_of(raw_segments: list[TranscriptSegment], language: str | None, audio_seconds: float) -> Transcript:
    """The transcript of an engine's segments: empty ones dropped, ids renumbered from 0 as
    OpenAI's, times kept inside the recording (Whisper's last timestamp may overshoot its end),
    text invented over silence dropped. Raises NoSpeech when no text is left."""
    segments = []
    for segment in raw_segments:
        if not segment.text.strip() or invented_over_silence(segment):
            continue
        end = min(max(segment.end, 0.0), audio_seconds)
        start = min(max(segment.start, 0.0), end)
        segments.append(replace(segment, id=len(segments), start=start, end=end))
    text = " ".join(segment.text.strip() for segment in segments)
    if not text:
        raise NoSpeech()
    return Transcript(text=text, language=language, segments=tuple(segments))


class SpeechRecognizer(Protocol):
    model_name: str
    language: str | None
    """The spoken language (a Whisper code such as "fr"); None: detected per recording."""
    remote: bool
    """Computed by another server: its queue needs no local CPU."""
    on_gpu: bool
    """Computes on a GPU of this machine (False for a remote engine)."""

    def close(self) -> None:
        """Release a remote engine's HTTP connections; nothing for a local engine."""
        ...

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        cancel: threading.Event | None = None,
        initial_prompt: str | None = None,
        language: str | None = None,
        temperature: float | None = None,
    ) -> Transcript:
        """16 kHz mono float32 samples → text and its segments. Raises NoSpeech when nothing was
        said, and GenerationCancelled once `cancel` is set (checked between windows and segments).
        For this call only: `initial_prompt` replaces the engine's vocabulary prompt ("" for none),
        `language` the engine's language, `temperature` the first decoding temperature (see
        `decoding_temperatures`). Blocking; implementations serialise calls when their model is
        not thread-safe."""
        ...
