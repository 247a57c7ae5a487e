"""Piper voices (piper-tts): ONNX models, espeak-ng phonemisation bundled in the wheel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# espeak-ng, which phonemises inside synthesize(), is not thread-safe, and it is one library
# for the whole process: every loaded voice shares this lock.
_ESPEAK_LOCK = threading.Lock()


class PiperSynthesizer:
    remote = False

    def __init__(self, voice_path: Path, *, use_cuda: bool = False, length_scale: float | None = None) -> None:
        from piper import PiperVoice, SynthesisConfig

        if not voice_path.is_file():
            raise FileNotFoundError(f"Piper voice not found: {voice_path}")
        self._voice = PiperVoice.load(voice_path, use_cuda=use_cuda)
        self.on_gpu = use_cuda
        self._config = SynthesisConfig(length_scale=length_scale)
        # The voice's own pace (its .onnx.json), which `speed` divides.
        self._length_scale = length_scale or self._voice.config.length_scale
        self.voice_name = voice_path.name.removesuffix(".onnx")
        self.sample_rate = self._voice.config.sample_rate

    def synthesize(self, text: str, *, speed: float = 1.0) -> Iterator[np.ndarray]:
        from piper import SynthesisConfig

        config = self._config if speed == 1.0 else SynthesisConfig(length_scale=self._length_scale / speed)
        with _ESPEAK_LOCK:
            for chunk in self._voice.synthesize(text, config):
                yield chunk.audio_int16_array

    def close(self) -> None:
        """Nothing to release: the voice lives as long as the process."""
