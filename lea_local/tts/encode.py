"""int16 speech → the bytes of an audio file a browser's <audio> element plays."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import soundfile as sf

AudioFormat = Literal["mp3", "ogg", "wav"]

MEDIA_TYPES: dict[str, str] = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav"}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def encode_audio(samples: np.ndarray, sample_rate: int, audio_format: AudioFormat) -> bytes:
    buffer = io.BytesIO()
    if audio_format == "mp3":
        sf.write(buffer, samples, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    elif audio_format == "ogg":
        # Opus takes only a few rates; Piper voices speak at 16 or 22.05 kHz.
        if sample_rate not in OPUS_RATES:
            import soxr

            target = min(r for r in OPUS_RATES if r >= sample_rate) if sample_rate <= 48000 else 48000
            samples = soxr.resample(samples, sample_rate, target)
            sample_rate = target
        sf.write(buffer, samples, sample_rate, format="OGG", subtype="OPUS")
    elif audio_format == "wav":
        sf.write(buffer, samples, sample_rate, format="WAV", subtype="PCM_16")
    else:
        raise ValueError(f"unknown audio format {audio_format!r}")
    return buffer.getvalue()
