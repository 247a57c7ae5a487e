"""What the voice pipeline needs from a speech recogniser. Another engine (whisper.cpp, a NeMo
model…) is one new module that satisfies `SpeechRecognizer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class NoSpeech(Exception):
    """The recording holds no speech (silence, noise)."""

    def __init__(self) -> None:
        super().__init__("no speech detected in the recording")


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None


class SpeechRecognizer(Protocol):
    model_name: str

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """16 kHz mono float32 samples → text. Raises NoSpeech when nothing was said.
        Blocking; implementations serialise calls when their model is not thread-safe."""
        ...
