"""Uploaded recordings → 16 kHz mono float32 samples, through ffmpeg (ffmpeg-python).

The container is recognised from the bytes themselves: a browser's file name and content type
say little (Safari's "audio/mp4" is AAC in MP4, Chrome's "audio/webm" has no duration in its
header), and a PNG named `.webm` must be refused before ffmpeg sees it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import ffmpeg
import numpy as np
from anyio.abc import TaskStatus

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
SUPPORTED = "webm, mp4/m4a, ogg (opus, vorbis), wav, mp3, flac, aac"

UPLOAD_PREFIX = "lea-upload-"
# A decode holds its copy of the upload for at most the decode timeout: a copy older than a
# few timeouts belongs to no running decode.
STALE_AFTER_TIMEOUTS = 4

# ffmpeg messages that mean the input stops before its own end.
_TRUNCATION_MARKERS = ("ended prematurely", "partial file", "moov atom not found", "truncat", "end of file")


class AudioRejected(Exception):
    """The upload cannot be used; `status` is the HTTP status to answer (400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, 16 kHz
    container: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def sniff_container(data: bytes) -> str | None:
    """The ffmpeg demuxer for these bytes, from their magic numbers; None if not audio we take."""
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"  # WebM is Matroska
    if data.startswith(b"OggS"):
        return "ogg"
    if data[4:8] == b"ftyp":
        return "mov"  # MP4, M4A, 3GP
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"fLaC"):
        return "flac"
    if data.startswith(b"ID3"):
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        # 11-bit frame sync: MP3, unless the layer bits are 00, which is ADTS AAC.
        return "aac" if data[1] & 0x06 == 0 else "mp3"
    return None


def ogg_is_complete(data: bytes) -> bool:
    """Whether an Ogg stream reaches its end-of-stream page. A cut upload ends on a page without
    that flag (or mid-page), which ffmpeg decodes silently as a shorter recording."""
    pos, n = 0, len(data)
    while pos + 27 <= n:
        if data[pos : pos + 4] != b"OggS":
            return False
        header_type = data[pos + 5]
        segments = data[pos + 26]
        if pos + 27 + segments > n:
            return False
        body = sum(data[pos + 27 : pos + 27 + segments])
        end = pos + 27 + segments + body
        if end > n:
            return False
        if header_type & 0x04:
            return True
        pos = end
    return False


def decode_audio(
    data: bytes,
    *,
    max_seconds: float,
    timeout: float,
    temp_dir: Path | None = None,
) -> DecodedAudio:
    """Decode an upload or raise AudioRejected. Blocking: run it in a worker thread."""
    if not data:
        raise AudioRejected("the audio file is empty")
    container = sniff_container(data)
    if container is None:
        raise AudioRejected(f"unsupported or unrecognised audio format (expected {SUPPORTED})")
    if container == "ogg" and not ogg_is_complete(data):
        raise AudioRejected("the audio file is truncated or corrupt (incomplete Ogg stream)")
    # A real file, not a pipe: MP4's index (moov) may sit at the end of the file.
    fd, path = tempfile.mkstemp(prefix=UPLOAD_PREFIX, dir=temp_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # Decode a little past the limit: enough to tell "too long" without decoding an hour.
        command = (
            ffmpeg.input(path, f=container, protocol_whitelist="file")
            .output("pipe:1", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE, t=max_seconds + 0.5)
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
            .compile()
        )
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AudioRejected(f"the audio could not be decoded within {timeout:g} s") from exc
        except FileNotFoundError as exc:
            raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)") from exc
    finally:
        os.unlink(path)
    errors = result.stderr.decode("utf-8", "replace").lower()
    if result.returncode != 0 or any(marker in errors for marker in _TRUNCATION_MARKERS):
        raise AudioRejected("the audio file is truncated or corrupt and could not be decoded")
    samples = np.frombuffer(result.stdout, dtype=np.float32).copy()  # writable, as torch wants
    if samples.size == 0:
        raise AudioRejected("the audio file contains no sound")
    decoded = DecodedAudio(samples=samples, container=container)
    if decoded.seconds > max_seconds:
        raise AudioRejected(f"the recording is longer than {max_seconds:g} s", status=413)
    return decoded


def remove_temp_files(directory: Path, older_than: float | None = None) -> int:
    """Delete the files in the upload folder: all of them, or those last written more than
    `older_than` seconds ago. Returns how many. A decode deletes its own copy; one that stays
    was left by a killed server and holds a recording outside erasure and retention."""
    cutoff = None if older_than is None else time.time() - older_than
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                continue
            if cutoff is not None and entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            continue  # its decode finished meanwhile
    return removed


async def keep_temp_dir_clean(
    directory: Path, decode_timeout: float, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """For the app's lifespan (`await tasks.start(...)`): empties the upload folder before the
    server serves (no decode can be running yet), then deletes stale copies periodically."""
    directory.mkdir(parents=True, exist_ok=True)
    removed = remove_temp_files(directory)
    if removed:
        log.warning("deleted uploads left by an earlier run", extra={"event": "tmp.cleared", "deleted": removed})
    task_status.started()
    max_age = decode_timeout * STALE_AFTER_TIMEOUTS
    while True:
        await anyio.sleep(max_age)
        try:
            removed = await anyio.to_thread.run_sync(remove_temp_files, directory, max_age)
        except OSError:
            log.exception("sweeping stale uploads failed")
            continue
        if removed:
            log.warning("deleted stale uploads", extra={"event": "tmp.sweep", "deleted": removed})
