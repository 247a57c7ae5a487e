"""Whisper through openai-whisper (PyTorch), loading an official `.pt` checkpoint. It has no
voice-activity filter of its own: Silero VAD (shipped with faster-whisper) screens the audio
first, and whisper's own no-speech test drops what remains of silence."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lea_local.asr.base import NoSpeech, Transcript


def has_speech(samples: np.ndarray) -> bool:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(samples, VadOptions()))


class OpenAIWhisperRecognizer:
    def __init__(
        self,
        checkpoint: Path,
        *,
        device: str = "auto",
        language: str | None = "fr",
        beam_size: int = 1,
        initial_prompt: str | None = None,
        threads: int = 0,
    ) -> None:
        import torch
        import whisper

        if not checkpoint.is_file():
            raise FileNotFoundError(f"openai-whisper checkpoint not found: {checkpoint}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self._model = whisper.load_model(str(checkpoint), device=device)
        self.model_name = f"openai-whisper:{checkpoint.stem}"
        self.language = language
        self.beam_size = beam_size
        self.initial_prompt = initial_prompt
        # Concurrent transcribe() calls on one model interfere (shared KV-cache hooks).
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray) -> Transcript:
        if not has_speech(samples):
            raise NoSpeech()
        with self._lock:
            result = self._model.transcribe(
                samples,
                language=self.language,
                fp16=self.device == "cuda",  # float16 on a GPU, float32 on a CPU
                temperature=0.0,
                beam_size=self.beam_size if self.beam_size > 1 else None,
                condition_on_previous_text=False,
                initial_prompt=self.initial_prompt,
                verbose=None,
            )
        text = str(result["text"]).strip()
        if not text:
            raise NoSpeech()
        return Transcript(text=text, language=result.get("language"))
