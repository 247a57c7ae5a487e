"""Reply text → an audio file in the store: normalise, synthesise, encode."""

from __future__ import annotations

import logging
import time

import numpy as np

from lea_local.inference_queue import InferenceQueue
from lea_local.tts.audio_store import TtsAudioStore
from lea_local.tts.base import SpeechSynthesizer
from lea_local.tts.encode import AudioFormat, encode_audio
from lea_local.tts.normalize_fr import normalize_for_speech

log = logging.getLogger(__name__)


class SpeechService:
    def __init__(
        self,
        synthesizer: SpeechSynthesizer,
        store: TtsAudioStore,
        queue: InferenceQueue,
        audio_format: AudioFormat,
    ) -> None:
        self.synthesizer = synthesizer
        self.store = store
        self.queue = queue
        self.audio_format = audio_format

    def synthesize_file(self, text: str, name: str) -> float:
        """Blocking: write the speech for `text` under `name`; returns its duration in seconds."""
        spoken = normalize_for_speech(text)
        if not spoken:
            raise ValueError("nothing to say once the text is normalised")
        started = time.perf_counter()
        chunks = list(self.synthesizer.synthesize(spoken))
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        synthesized = time.perf_counter()
        self.store.write(name, encode_audio(samples, self.synthesizer.sample_rate, self.audio_format))
        seconds = len(samples) / self.synthesizer.sample_rate
        log.info(
            "speech synthesised",
            extra={
                "event": "tts",
                "audio_seconds": round(seconds, 3),
                "tts_seconds": round(synthesized - started, 3),
                "encode_seconds": round(time.perf_counter() - synthesized, 3),
            },
        )
        return seconds

    async def render(self, text: str) -> str | None:
        """The stored file's name, or None when synthesis failed: the contract makes the audio
        optional, so a failure costs the turn its audio, never its answer."""
        name = self.store.new_name(self.audio_format)
        try:
            await self.queue.run(self.synthesize_file, text, name)
        except Exception:
            log.exception("speech synthesis failed; answering without audio")
            return None
        return name
