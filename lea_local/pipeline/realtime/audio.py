"""The Realtime protocol's audio on the wire, with numpy only: PCM16 24 kHz mono (little-endian),
and G.711 μ-law / A-law at 8 kHz for telephone gateways. What comes in is turned into the 16 kHz
float32 samples the recogniser and the voice-activity detector take; what Piper speaks (its
voice's own rate, 22.05 kHz for most) into the session's output format."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

import numpy as np

RECOGNISER_RATE = 16_000

WireFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
"""The session's audio formats, by their beta names (GA: `audio/pcm`, `audio/pcmu`, `audio/pcma`)."""

WIRE_RATES: dict[str, int] = {"pcm16": 24_000, "g711_ulaw": 8_000, "g711_alaw": 8_000}
GA_NAMES: dict[str, str] = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
BETA_NAMES: dict[str, str] = {ga: beta for beta, ga in GA_NAMES.items()}


class BadAudio(ValueError):
    """A chunk that is not what the session's format says (bad base64, half a sample)."""


@dataclass(frozen=True)
class AudioCodec:
    """One wire format: bytes ↔ int16 samples at `rate`."""

    format: WireFormat

    @property
    def rate(self) -> int:
        return WIRE_RATES[self.format]

    def bytes_per_second(self) -> int:
        return self.rate * (2 if self.format == "pcm16" else 1)

    def decode(self, data: bytes) -> np.ndarray:
        """Wire bytes → int16 samples at `rate`."""
        if self.format == "pcm16":
            if len(data) % 2:
                raise BadAudio("PCM16 audio must hold whole 16-bit samples (an even number of bytes)")
            return np.frombuffer(data, dtype="<i2").astype(np.int16)
        codes = np.frombuffer(data, dtype=np.uint8)
        return ulaw_decode(codes) if self.format == "g711_ulaw" else alaw_decode(codes)

    def encode(self, samples: np.ndarray) -> bytes:
        """int16 samples at `rate` → wire bytes."""
        pcm = np.asarray(samples, dtype=np.int16)
        if self.format == "pcm16":
            return pcm.astype("<i2").tobytes()
        return (ulaw_encode(pcm) if self.format == "g711_ulaw" else alaw_encode(pcm)).tobytes()


def decode_base64(text: object) -> bytes:
    if not isinstance(text, str):
        raise BadAudio("audio must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadAudio("audio is not valid base64") from exc


# --- resampling ---------------------------------------------------------------------------------


def _lowpass(samples: np.ndarray, cutoff: float, taps: int = 63) -> np.ndarray:
    """A windowed-sinc low-pass filter; `cutoff` as a fraction of the sampling rate (< 0.5)."""
    n = np.arange(taps) - (taps - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(taps)
    kernel /= kernel.sum()
    return np.convolve(samples, kernel, mode="same")


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Float samples from one rate to another: low-passed below the new Nyquist frequency
    when going down, then linearly interpolated. Good enough for speech, in numpy alone."""
    x = np.asarray(samples, dtype=np.float32)
    if source_rate == target_rate or x.size == 0:
        return x.copy()
    if target_rate < source_rate:
        x = _lowpass(x.astype(np.float64), 0.45 * target_rate / source_rate).astype(np.float32)
    length = max(1, int(round(x.size * target_rate / source_rate)))
    positions = np.arange(length) * (source_rate / target_rate)
    return np.interp(positions, np.arange(x.size), x).astype(np.float32)


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return (np.asarray(samples, dtype=np.float32) / 32768.0).astype(np.float32)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def to_recogniser(samples: np.ndarray, rate: int) -> np.ndarray:
    """int16 wire samples → the recogniser's 16 kHz float32."""
    return resample(int16_to_float(samples), rate, RECOGNISER_RATE)


def from_voice(samples: np.ndarray, voice_rate: int, codec: AudioCodec) -> bytes:
    """A voice's int16 samples → wire bytes in the session's output format."""
    if voice_rate != codec.rate:
        samples = float_to_int16(resample(int16_to_float(samples), voice_rate, codec.rate))
    return codec.encode(samples)


# --- G.711 (ITU-T), vectorised --------------------------------------------------------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
# The segment (exponent) of a biased magnitude's top 8 bits.
_SEGMENT = np.zeros(256, dtype=np.int32)
_SEGMENT[1:] = np.floor(np.log2(np.arange(1, 256))).astype(np.int32)


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    exponent = _SEGMENT[(magnitude >> 7) & 0xFF]
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def ulaw_decode(codes: np.ndarray) -> np.ndarray:
    u = ~np.asarray(codes, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + _ULAW_BIAS) << exponent
    magnitude -= _ULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = np.asarray(pcm, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    x = np.minimum(x, 0xFFF)
    segment = np.where(x >= 0x20, _SEGMENT[np.minimum(x >> 4, 255)], 0)  # 0..7
    shift = np.where(segment < 2, 1, segment)
    value = (segment << 4) | ((x >> shift) & 0x0F)
    return ((value ^ mask) & 0xFF).astype(np.uint8)


def alaw_decode(codes: np.ndarray) -> np.ndarray:
    a = np.asarray(codes, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    t = np.where(segment == 0, t + 8, t + 0x108)
    t = np.where(segment > 1, t << np.maximum(segment - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)
