"""Whisper through openai-whisper (PyTorch), loading an official `.pt` checkpoint. It has no
voice-activity filter of its own: Silero VAD (shipped with faster-whisper) screens the audio
first, and whisper's own no-speech test drops what remains of silence. Decoding is bounded as
in the default engine (see `lea_local.asr.base`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from lea_local.asr.base import (
    BEST_OF,
    SAMPLE_RATE,
    NoSpeech,
    Transcript,
    TranscriptSegment,
    decoding_temperatures,
    max_tokens_per_window,
    raise_if_cancelled,
    transcript_of,
)

# openai-whisper samples at most half its 448-token context per window.
SAMPLE_LEN_MAX = 224


def has_speech(samples: np.ndarray) -> bool:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(samples, VadOptions()))


class _CancellableModel:
    """The model as openai-whisper's `transcribe()` sees it, checking `cancel` before each
    window is decoded (transcribe() itself has no way to stop)."""

    def __init__(self, model: Any, cancel: threading.Event | None) -> None:
        self._model = model
        self._cancel = cancel
        self.windows_decoded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def decode(self, mel: Any, options: Any) -> Any:
        raise_if_cancelled(self._cancel)
        self.windows_decoded += 1
        return self._model.decode(mel, options)


class OpenAIWhisperRecognizer:
    remote = False

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

    def decoding_options(
        self,
        audio_seconds: float,
        prompt: str | None,
        *,
        language: str | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """The arguments of openai-whisper's `transcribe`, bounded for audio of this length."""
        return dict(
            language=language or self.language,
            fp16=self.device == "cuda",  # float16 on a GPU, float32 on a CPU
            temperature=decoding_temperatures(temperature),
            best_of=BEST_OF,
            beam_size=self.beam_size if self.beam_size > 1 else None,
            sample_len=min(max_tokens_per_window(audio_seconds), SAMPLE_LEN_MAX),
            condition_on_previous_text=False,
            initial_prompt=prompt or None,
            verbose=None,
        )

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"

    def close(self) -> None:
        """Nothing to release: the model lives as long as the process."""

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        cancel: threading.Event | None = None,
        initial_prompt: str | None = None,
        language: str | None = None,
        temperature: float | None = None,
    ) -> Transcript:
        from whisper.transcribe import transcribe as whisper_transcribe

        if not has_speech(samples):
            raise NoSpeech()
        prompt = self.initial_prompt if initial_prompt is None else initial_prompt
        audio_seconds = len(samples) / SAMPLE_RATE
        options = self.decoding_options(audio_seconds, prompt, language=language, temperature=temperature)
        with self._lock:
            raise_if_cancelled(cancel)
            model = _CancellableModel(self._model, cancel)
            result = whisper_transcribe(model, samples, **options)  # type: ignore[arg-type]
        segments = [
            TranscriptSegment(
                id=int(segment["id"]),
                seek=int(segment["seek"]),
                start=float(segment["start"]),
                end=float(segment["end"]),
                text=str(segment["text"]),
                tokens=tuple(int(token) for token in segment["tokens"]),
                temperature=float(segment["temperature"]),
                avg_logprob=float(segment["avg_logprob"]),
                compression_ratio=float(segment["compression_ratio"]),
                no_speech_prob=float(segment["no_speech_prob"]),
            )
            for segment in result["segments"]
        ]
        return transcript_of(segments, result.get("language"), audio_seconds)
