"""Whisper through faster-whisper (CTranslate2): the default engine, with Silero VAD so that
silence does not turn into invented words."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lea_local.asr.base import NoSpeech, Transcript
from lea_local.hardware import cuda_device_count


class FasterWhisperRecognizer:
    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        compute_type: str | None = None,
        language: str | None = "fr",
        beam_size: int = 1,
        initial_prompt: str | None = None,
        threads: int = 0,
    ) -> None:
        from faster_whisper import WhisperModel

        if not (model_dir / "model.bin").is_file():
            raise FileNotFoundError(f"faster-whisper model not found: {model_dir}/model.bin")
        if device == "auto":
            device = "cuda" if cuda_device_count() > 0 else "cpu"
        # int8 on CPU; on a GPU, float16 activations with int8 weights are as accurate and lighter.
        compute_type = compute_type or ("int8_float16" if device == "cuda" else "int8")
        self.device, self.compute_type = device, compute_type
        self._model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)
        self.model_name = f"faster-whisper:{model_dir.name}"
        self.language = language
        self.beam_size = beam_size
        self.initial_prompt = initial_prompt
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray) -> Transcript:
        with self._lock:
            segments, info = self._model.transcribe(
                samples,
                language=self.language,
                beam_size=self.beam_size,
                vad_filter=True,
                initial_prompt=self.initial_prompt,
                condition_on_previous_text=False,
            )
            # The generator is lazy: the work happens here, inside the lock and the thread.
            text = " ".join(segment.text.strip() for segment in segments).strip()
        if not text:
            raise NoSpeech()
        return Transcript(text=text, language=info.language)
