"""Decoding uploads with real ffmpeg: container sniffing, limits, truncation."""

from __future__ import annotations

import pytest

from lea_local.asr.decode import SAMPLE_RATE, AudioRejected, decode_audio, sniff_container
from tests.audio import BROWSER_FORMATS, CLIP, OTHER_FORMATS, encode, silence

ALL_FORMATS = {**BROWSER_FORMATS, **OTHER_FORMATS}
EXPECTED_DEMUXER = {
    "webm-opus": "matroska", "mp4-aac": "mov", "ogg-opus": "ogg", "ogg-vorbis": "ogg",
    "wav": "wav", "mp3": "mp3", "m4a": "mov", "flac": "flac",
}  # fmt: skip


@pytest.mark.parametrize("name", list(ALL_FORMATS))
def test_every_format_decodes_to_16k_mono_float32(name):
    data = encode(CLIP, ALL_FORMATS[name][0])
    assert sniff_container(data) == EXPECTED_DEMUXER[name]
    audio = decode_audio(data, max_seconds=120, timeout=30)
    assert audio.samples.dtype.name == "float32" and audio.samples.ndim == 1
    assert 5.4 < audio.seconds < 5.8  # the clip lasts 5.58 s
    assert audio.samples.flags.writeable


def test_sniffing_ignores_non_audio():
    assert sniff_container(b"\x89PNG\r\n\x1a\n" + bytes(20)) is None
    assert sniff_container(b"%PDF-1.7") is None
    assert sniff_container(b"{}") is None
    assert sniff_container(b"\xff\xf1\x50\x80") == "aac"  # ADTS, not MP3


def test_duration_limit_is_413_without_decoding_everything():
    with pytest.raises(AudioRejected) as caught:
        decode_audio(silence(30), max_seconds=10, timeout=30)
    assert caught.value.status == 413


def test_recording_just_under_the_limit_passes():
    audio = decode_audio(silence(9.5), max_seconds=10, timeout=30)
    assert abs(audio.seconds - 9.5) < 0.1
    assert len(audio.samples) == pytest.approx(9.5 * SAMPLE_RATE, rel=0.01)


@pytest.mark.parametrize("name", ["webm-opus", "ogg-opus", "mp4-aac"])
def test_truncated_recordings_are_rejected(name):
    data = encode(CLIP, ALL_FORMATS[name][0])
    with pytest.raises(AudioRejected) as caught:
        decode_audio(data[: len(data) // 2], max_seconds=120, timeout=30)
    assert caught.value.status == 400
