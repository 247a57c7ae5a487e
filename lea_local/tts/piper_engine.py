"""Piper voices (piper-tts): ONNX models, espeak-ng phonemisation bundled in the wheel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class PiperSynthesizer:
    def __init__(self, voice_path: Path, *, use_cuda: bool = False, length_scale: float | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        if not voice_path.is_file():
            raise FileNotFoundError(f"Piper voice not found: {voice_path}")
        self._voice = PiperVoice.load(voice_path, use_cuda=use_cuda)
        self._config = SynthesisConfig(length_scale=length_scale)
        self.voice_name = voice_path.name.removesuffix(".onnx")
        self.sample_rate = self._voice.config.sample_rate
        # espeak-ng, which phonemises inside synthesize(), is not thread-safe.
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        with self._lock:
            for chunk in self._voice.synthesize(text, self._config):
                yield chunk.audio_int16_array
