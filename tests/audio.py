"""Test recordings: the human French clips, re-encoded by real ffmpeg into what browsers send."""

from __future__ import annotations

import csv
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


def manifest() -> list[Clip]:
    with (FIXTURES / "manifest.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [Clip(FIXTURES / r["filename"], r["reference_transcript"], float(r["duration_s"])) for r in rows]


def normalise_words(text: str) -> str:
    """Lowercase, no punctuation, apostrophes and hyphens split: the comparison WER uses."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[^\w'\s-]", " ", text)
    text = re.sub(r"[-'_]", " ", text)
    return " ".join(text.split())
