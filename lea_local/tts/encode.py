"""Speech samples → an audio stream a browser's <audio> element plays, through ffmpeg.

One encoder process per reply takes raw PCM on stdin as sentences come and writes one
continuous MP3 / Ogg-Opus / WAV stream on stdout: a player can start on the first bytes, and the
stream has none of the gaps or stale duration headers of concatenated files. /v1/audio/speech adds
OpenAI's other formats (AAC in ADTS, FLAC, raw PCM) to the same encoder."""

from __future__ import annotations

import struct
import subprocess
from typing import Literal

import numpy as np

AudioFormat = Literal["mp3", "ogg", "wav", "opus", "aac", "flac", "pcm"]
"""`mp3`, `ogg` (Opus) and `wav` for Léa's replies; also OpenAI's `opus` (Ogg Opus, as `ogg`),
`aac` (ADTS), `flac` and `pcm` for /v1/audio/speech."""

PCM_SAMPLE_RATE = 24_000
"""OpenAI's `pcm`: raw 24 kHz, 16-bit signed little-endian, mono, whatever the voice's rate."""

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}

_OGG_OPUS = ["-ar", "24000", "-c:a", "libopus", "-b:a", "32k", "-application", "voip", "-f", "ogg"]
_OUTPUT_ARGS: dict[str, list[str]] = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "ogg": _OGG_OPUS,
    "opus": _OGG_OPUS,
    # Written to a pipe, a WAV header holds 0xFFFFFFFF sizes (unknown length): players and
    # ffmpeg read it to the end of the stream; `finalize` fixes them for a stored file.
    "wav": ["-c:a", "pcm_s16le", "-f", "wav"],
    # ADTS: a header per frame, so that a player starts anywhere (MP4 would need its index).
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
    "pcm": ["-ar", str(PCM_SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "s16le"],
}


def encoder_command(audio_format: AudioFormat, sample_rate: int) -> list[str]:
    """ffmpeg reading mono int16 PCM on stdin, writing `audio_format` on stdout as it goes."""
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        # Raw PCM needs no probing: without these, ffmpeg waits for seconds of input first.
        "-probesize", "32", "-analyzeduration", "0", "-fflags", "+nobuffer",
        "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0",
        *_OUTPUT_ARGS[audio_format],
        "-flush_packets", "1",  # hand each encoded frame over at once, not per 32 KB
        "pipe:1",
    ]  # fmt: skip


def finalize(data: bytes, audio_format: AudioFormat) -> bytes:
    """The complete file: a WAV written to a pipe has unknown sizes in its header (streaming
    players accept that, file readers do not); set them now that the length is known."""
    if audio_format != "wav" or data[:4] != b"RIFF":
        return data
    fixed = bytearray(data)
    fixed[4:8] = struct.pack("<I", len(data) - 8)
    position = 12
    while position + 8 <= len(fixed):
        chunk, size = bytes(fixed[position : position + 4]), struct.unpack("<I", fixed[position + 4 : position + 8])[0]
        if chunk == b"data":
            fixed[position + 4 : position + 8] = struct.pack("<I", len(fixed) - position - 8)
            break
        position += 8 + size + (size & 1)
    return bytes(fixed)


def encode_audio(samples: np.ndarray, sample_rate: int, audio_format: AudioFormat) -> bytes:
    """Whole samples at once, through the same encoder (benchmarks, tests)."""
    result = subprocess.run(
        encoder_command(audio_format, sample_rate),
        input=samples.astype("<i2").tobytes(),
        capture_output=True,
        check=True,
        timeout=120,
    )
    return finalize(result.stdout, audio_format)
