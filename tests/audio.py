"""Test recordings: the human French clips, re-encoded by real ffmpeg into what browsers send,
and synthetic sounds that are not speech (tones, noise, music)."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "audio" / "fr"

# The clip used for the container tests, and words a correct transcription contains.
CLIP = FIXTURES / "picovoice_cheetah_test_fr_v2.2.wav"
CLIP_KEY_WORDS = ["récompense", "meilleur", "lanceur", "relève", "ligue", "nationale"]

# container name → (ffmpeg output arguments, MIME type a browser would send, file name)
BROWSER_FORMATS: dict[str, tuple[list[str], str, str]] = {
    # Chrome and Firefox: WebM/Opus, written to a pipe so that, as from Chrome, the header
    # holds no duration.
    "webm-opus": (["-c:a", "libopus", "-b:a", "32k", "-f", "webm"], "audio/webm;codecs=opus", "recording.webm"),
    # Safari: AAC in MP4, index (moov) at the end as MediaRecorder writes it.
    "mp4-aac": (
        ["-c:a", "aac", "-b:a", "64k", "-f", "mp4", "-movflags", "frag_keyframe+empty_moov"],
        "audio/mp4",
        "recording.mp4",
    ),
    "ogg-opus": (["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"], "audio/ogg;codecs=opus", "recording.ogg"),
    "ogg-vorbis": (["-c:a", "libvorbis", "-q:a", "3", "-f", "ogg"], "audio/ogg", "recording.ogg"),
}
OTHER_FORMATS: dict[str, tuple[list[str], str, str]] = {
    "wav": (["-c:a", "pcm_s16le", "-f", "wav"], "audio/wav", "recording.wav"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"], "audio/mpeg", "recording.mp3"),
    "m4a": (["-c:a", "aac", "-b:a", "64k", "-f", "ipod"], "audio/x-m4a", "recording.m4a"),
    "flac": (["-c:a", "flac", "-f", "flac"], "audio/flac", "recording.flac"),
}


def encode(source: Path | str, output_args: list[str], *, input_args: list[str] | None = None) -> bytes:
    """Encode with real ffmpeg, to a pipe (no seeking back: like a live recorder), or to a
    file for the formats that must seek back (an M4A file's index)."""
    command = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *(input_args or []),
        "-i",
        str(source),
        *output_args,
    ]
    if "ipod" in output_args:
        with tempfile.NamedTemporaryFile(suffix=".m4a") as out:
            subprocess.run([*command, out.name], capture_output=True, check=True, timeout=120)
            return Path(out.name).read_bytes()
    return subprocess.run([*command, "pipe:1"], capture_output=True, check=True, timeout=120).stdout


def silence(seconds: float, output_args: list[str] | None = None) -> bytes:
    return encode(
        f"anullsrc=r=48000:cl=mono:d={seconds}",
        output_args or BROWSER_FORMATS["webm-opus"][0],
        input_args=["-f", "lavfi"],
    )


@dataclass(frozen=True)
class Clip:
    path: Path
    reference: str
    seconds: float


def manifest(directory: Path = FIXTURES) -> list[Clip]:
    with (directory / "manifest.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [Clip(directory / r["filename"], r["reference_transcript"], float(r["duration_s"])) for r in rows]


def normalise_words(text: str) -> str:
    """Lowercase, no punctuation, apostrophes and hyphens split: the comparison WER uses."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^\w'\s-]", " ", text)
    text = re.sub(r"[-'_]", " ", text)
    return " ".join(text.split())


# --- synthetic sounds that are not speech (16 kHz mono float32) ---------------------------------

RATE = 16_000


def tone(seconds: float, frequency: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def noise(seconds: float, color: str = "white", amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """White noise, or pink (power falling as 1/f, like rain or a fan)."""
    n = int(RATE * seconds)
    white = np.random.default_rng(seed).standard_normal(n)
    if color == "pink":
        spectrum = np.fft.rfft(white)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        white = np.fft.irfft(spectrum, n)
    return (amplitude * white / np.abs(white).max()).astype(np.float32)


def chords(seconds: float) -> np.ndarray:
    """Piano-like music: a chord a second (four harmonics, decaying) under a melody."""
    t = np.arange(RATE) / RATE
    progression = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    melody = [523.3, 587.3, 659.3, 784.0, 659.3, 587.3]
    bars = []
    for i in range(math.ceil(seconds)):
        bar = 0.8 * np.sin(2 * np.pi * melody[i % len(melody)] * t)
        for f in progression[i % len(progression)]:
            for harmonic, weight in ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)):
                bar += weight * np.sin(2 * np.pi * f * harmonic * t)
        bars.append(bar * np.exp(-2.5 * t))
    music = np.concatenate(bars)[: int(RATE * seconds)]
    return (0.25 * music / np.abs(music).max()).astype(np.float32)


def hum(seconds: float) -> np.ndarray:
    """A hummed vowel: a glottal pulse train with a gliding pitch through an "a" formant band,
    three swells a second. Voice-like enough that Silero VAD takes part of it for speech."""
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    pulses = (np.diff(np.floor(np.cumsum(pitch) / RATE), prepend=0) > 0).astype(np.float64)
    spectrum = np.fft.rfft(pulses)
    frequencies = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(frequencies < 600) | (frequencies > 1300)] = 0
    vowel = np.fft.irfft(spectrum, n)
    return (0.5 * vowel / np.abs(vowel).max() * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
