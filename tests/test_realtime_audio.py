"""The Realtime session's audio without a server: G.711 against real ffmpeg's codecs, the
resampling between Piper's rate and the wire's, the streaming voice-activity detector against
faster-whisper's own run of the same Silero model, turn detection on human French speech, and
Whisper's known inventions over noise."""

from __future__ import annotations

import numpy as np
import pytest

from lea_local.asr.vad import WINDOW, SpeechProbabilities, TurnDetection, TurnDetector
from lea_local.pipeline.realtime.audio import (
    AudioCodec,
    alaw_decode,
    alaw_encode,
    float_to_int16,
    from_voice,
    resample,
    to_recogniser,
    ulaw_decode,
    ulaw_encode,
)
from lea_local.pipeline.realtime.transcripts import is_hallucination
from tests.audio import CLIP, noise, tone
from tests.realtime_client import ffmpeg_raw, pcm

FFMPEG_CODECS = {"mulaw": (ulaw_encode, ulaw_decode), "alaw": (alaw_encode, alaw_decode)}


@pytest.mark.parametrize("codec", list(FFMPEG_CODECS))
def test_g711_matches_ffmpeg_both_ways(codec):
    encode, decode = FFMPEG_CODECS[codec]
    # Every 16-bit value: each segment and its edges.
    samples = np.arange(-32768, 32768, dtype=np.int16)
    codes = np.arange(256, dtype=np.uint8)
    decoded = np.frombuffer(ffmpeg_raw(codes.tobytes(), codec, "s16le", 8_000), dtype="<i2")
    assert np.array_equal(decode(codes), decoded)  # decoding: exactly ffmpeg's
    # Encoding: ffmpeg rounds to the nearest level where G.711's reference code truncates; the
    # two agree but at the decision edges, where they pick neighbouring levels.
    ours = decode(encode(samples))
    theirs = decode(np.frombuffer(ffmpeg_raw(samples.astype("<i2").tobytes(), "s16le", codec, 8_000), dtype=np.uint8))
    levels = np.unique(decoded)
    apart = np.abs(np.searchsorted(levels, ours) - np.searchsorted(levels, theirs))
    assert apart.max() <= 1
    assert (apart == 0).mean() > 0.5
    assert np.abs(ours.astype(int) - samples).max() <= 1024  # within the widest step


def test_pcm16_round_trips_and_refuses_half_samples():
    codec = AudioCodec("pcm16")
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    assert np.array_equal(codec.decode(codec.encode(samples)), samples)
    with pytest.raises(ValueError):
        codec.decode(b"\x00\x01\x02")


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize(("source", "target"), [(22_050, 24_000), (24_000, 16_000), (22_050, 8_000), (8_000, 16_000)])
def test_resampling_keeps_pitch_and_length(source, target):
    t = np.arange(source) / source  # one second
    samples = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = resample(samples, source, target)
    assert out.size == target
    assert abs(dominant_frequency(out, target) - 440) < 3
    assert 0.4 < np.abs(out[100:-100]).max() < 0.6


def test_downsampling_filters_what_the_new_rate_cannot_hold():
    t = np.arange(24_000) / 24_000
    high = (0.5 * np.sin(2 * np.pi * 7_000 * t)).astype(np.float32)  # above 8 kHz's Nyquist
    assert np.abs(resample(high, 24_000, 8_000)[200:-200]).max() < 0.1


def test_piper_audio_reaches_the_wire_at_its_rate():
    t = np.arange(22_050) / 22_050
    voice = float_to_int16(0.3 * np.sin(2 * np.pi * 300 * t))
    for wire, rate, width in (("pcm16", 24_000, 2), ("g711_ulaw", 8_000, 1), ("g711_alaw", 8_000, 1)):
        codec = AudioCodec(wire)  # type: ignore[arg-type]
        data = from_voice(voice, 22_050, codec)
        assert len(data) == rate * width
        back = codec.decode(data) / 32768
        assert abs(dominant_frequency(back, rate) - 300) < 3


def test_streaming_vad_gives_the_model_s_own_probabilities():
    from faster_whisper.vad import get_vad_model

    speech = to_recogniser(np.frombuffer(pcm(CLIP), dtype="<i2"), 24_000)
    speech = speech[: speech.size // WINDOW * WINDOW]
    whole = np.asarray(get_vad_model()(speech.copy())).reshape(-1)
    stream = SpeechProbabilities()
    pieces = [stream.feed(speech[i : i + 1_600]) for i in range(0, speech.size, 1_600)]  # 100 ms appends
    streamed = np.concatenate(pieces)
    assert streamed.size == whole.size
    assert np.allclose(streamed, whole, atol=1e-4)
    assert whole.max() > 0.9  # it does hear the speech


def turn_events(samples: np.ndarray, options: TurnDetection | None = None):
    stream, detector = SpeechProbabilities(), TurnDetector(options or TurnDetection())
    events = []
    for i in range(0, samples.size, 1_600):
        events += detector.push(stream.feed(samples[i : i + 1_600]))
    return events


def test_a_spoken_sentence_is_one_turn_from_its_start_to_its_end():
    speech = to_recogniser(np.frombuffer(pcm(CLIP), dtype="<i2"), 24_000)
    quiet = np.zeros(16_000, dtype=np.float32)
    events = turn_events(np.concatenate([quiet, speech, quiet]), TurnDetection(silence_duration_ms=800))
    turns = [e for e in events if e.kind in ("started", "stopped")]
    assert [e.kind for e in turns] == ["started", "stopped"]
    started, stopped = turns
    # Each pause inside the speech is announced, then either resumed or, the last, the stop.
    pauses = [e.kind for e in events if e.kind in ("paused", "resumed")]
    assert pauses and pauses[-1] == "paused" and pauses.count("paused") == pauses.count("resumed") + 1
    last_pause = [e for e in events if e.kind == "paused"][-1]
    assert last_pause.at_ms == stopped.at_ms  # its recognition is the turn's
    assert 1_000 - 300 - 100 <= started.at_ms + 300 <= 1_000 + len(speech) / 16  # speech starts after the quiet second
    assert stopped.at_ms - started.at_ms > 2_000  # the whole sentence, not its first word
    assert stopped.at_ms <= 1_000 + len(speech) / 16 + 100


@pytest.mark.parametrize("sound", ["tone", "white", "pink", "silence"])
def test_tones_noise_and_silence_start_no_turn(sound):
    samples = {
        "tone": lambda: tone(4.0),
        "white": lambda: noise(4.0),
        "pink": lambda: noise(4.0, "pink"),
        "silence": lambda: np.zeros(64_000, dtype=np.float32),
    }[sound]()
    assert turn_events(samples) == []


@pytest.mark.parametrize(
    "text",
    [
        "Sous-titrage ST' 501",
        "Sous-titres réalisés par la communauté d'Amara.org",
        "Merci d'avoir regardé cette vidéo !",
        "[Musique]",
        "Merci.",
        "",
        " ... ",
    ],
)
def test_whispers_inventions_over_noise_are_no_turn(text):
    assert is_hallucination(text)


@pytest.mark.parametrize(
    "text",
    ["Bonjour, je voudrais vendre ma maison à Longueuil.", "Merci, et quel est le prix demandé ?"],
)
def test_real_requests_are_turns(text):
    assert not is_hallucination(text)
