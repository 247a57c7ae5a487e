"""Whisper through faster-whisper (CTranslate2): the default engine, with Silero VAD so that
silence, tones and noise do not turn into invented words, and decoding bounded by the audio's
length (see `lea_local.asr.base`)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from lea_local.asr.base import (
    BEST_OF,
    SAMPLE_RATE,
    Transcript,
    TranscriptSegment,
    decoding_temperatures,
    max_tokens_per_window,
    raise_if_cancelled,
    transcript_of,
)
from lea_local.runtime.hardware import cuda_device_count

# Whisper's context holds 448 tokens: the prompt (at most 223 tokens of initial prompt, plus the
# start-of-transcript sequence) and the output share it.
CONTEXT_TOKENS = 448
PROMPT_TOKENS_MAX = CONTEXT_TOKENS // 2 - 1
SOT_TOKENS = 4
SAMPLING_SEED = 0


class FasterWhisperRecognizer:
    remote = False

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

    def _prompt_tokens(self, prompt: str | None) -> int:
        if not prompt:
            return SOT_TOKENS
        tokens = len(self._model.hf_tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids)
        return min(tokens, PROMPT_TOKENS_MAX) + 1 + SOT_TOKENS

    def decoding_options(
        self,
        audio_seconds: float,
        prompt: str | None,
        *,
        language: str | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """The arguments of faster-whisper's `transcribe`, bounded for audio of this length."""
        max_new_tokens = min(max_tokens_per_window(audio_seconds), CONTEXT_TOKENS - self._prompt_tokens(prompt))
        return dict(
            language=language or self.language,
            beam_size=self.beam_size,
            best_of=BEST_OF,
            temperature=decoding_temperatures(temperature),
            max_new_tokens=max_new_tokens,
            vad_filter=True,
            initial_prompt=prompt or None,
            condition_on_previous_text=False,
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
        import ctranslate2

        prompt = self.initial_prompt if initial_prompt is None else initial_prompt
        audio_seconds = len(samples) / SAMPLE_RATE
        options = self.decoding_options(audio_seconds, prompt, language=language, temperature=temperature)
        found: list[TranscriptSegment] = []
        with self._lock:
            raise_if_cancelled(cancel)
            # The fallback temperature samples: a fixed seed makes one recording give one
            # transcript on a machine, run after run.
            ctranslate2.set_random_seed(SAMPLING_SEED)
            segments, info = self._model.transcribe(samples, **options)
            # The generator is lazy: each window is decoded when its first segment is asked for,
            # here, inside the lock and the worker thread; a cancelled request stops between them.
            pending = iter(segments)
            while True:
                raise_if_cancelled(cancel)
                segment = next(pending, None)
                if segment is None:
                    break
                found.append(
                    TranscriptSegment(
                        id=segment.id,
                        seek=segment.seek,
                        start=segment.start,
                        end=segment.end,
                        text=segment.text,
                        tokens=tuple(segment.tokens),
                        temperature=options["temperature"][0] if segment.temperature is None else segment.temperature,
                        avg_logprob=segment.avg_logprob,
                        compression_ratio=segment.compression_ratio,
                        no_speech_prob=segment.no_speech_prob,
                    )
                )
        return transcript_of(found, info.language, audio_seconds)
