"""What the voice pipeline needs from a speech recogniser, and the decoding bounds both Whisper
engines share. Another engine (whisper.cpp, a NeMo model…) is one new module that satisfies
`SpeechRecognizer`."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lea_local.llm.base import GenerationCancelled

SAMPLE_RATE = 16_000

# Whisper decodes the audio in windows of 30 s. Greedy decoding with Whisper's usual temperature
# fallback (0.0, 0.2 … 1.0, five sampled candidates each) re-decodes hard audio (synthetic
# voices, music) up to six times, each up to the model's 448 tokens: a 6-second recording once
# took 90 s. One fallback, sampled once, keeps the work proportional to the audio.
TEMPERATURES = (0.0, 0.2)
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


def raise_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled("speech recognition cancelled")


class NoSpeech(Exception):
    """The recording holds no speech (silence, noise, tones, music)."""

    def __init__(self) -> None:
        super().__init__("no speech detected in the recording")


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None


class SpeechRecognizer(Protocol):
    model_name: str

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        cancel: threading.Event | None = None,
        initial_prompt: str | None = None,
    ) -> Transcript:
        """16 kHz mono float32 samples → text. Raises NoSpeech when nothing was said, and
        GenerationCancelled once `cancel` is set (checked between windows and segments).
        `initial_prompt` replaces the engine's vocabulary prompt for this call ("" for none).
        Blocking; implementations serialise calls when their model is not thread-safe."""
        ...
