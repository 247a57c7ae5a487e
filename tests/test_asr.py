"""Speech recognition on the human French clips: word error rate of the default engine, and
openai-whisper on the very same weights (a checkpoint rebuilt from the faster-whisper base)."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from lea_local.asr.base import NoSpeech
from lea_local.asr.decode import decode_audio
from lea_local.services import build_recognizer
from lea_local.settings import Settings
from tests.audio import CLIP, manifest, normalise_words

# Measured on this project's 2-core machine: faster-whisper base, int8, greedy: WER 0.282 over
# the 15 clips (openai-whisper, same weights: 0.289). The bound leaves room for CPU-dependent
# rounding in int8 kernels, not for a regression in decoding or language settings.
WER_BOUND = 0.32


def decoded(path: Path) -> np.ndarray:
    return decode_audio(path.read_bytes(), max_seconds=120, timeout=60).samples


@pytest.fixture(scope="module")
def default_recognizer(models_dir):
    settings = Settings(_env_file=None, api_keys="k", models_dir=models_dir)
    assert settings.asr_engine == "faster-whisper" and settings.asr_language == "fr"
    return build_recognizer(settings, models_dir / "faster-whisper-base")


@pytest.fixture(scope="module")
def openai_recognizer(models_dir):
    checkpoint = models_dir / "openai-whisper-base-from-ct2" / "base.pt"
    settings = Settings(_env_file=None, api_keys="k", asr_engine="openai-whisper")
    return build_recognizer(settings, checkpoint)


def word_error_rate(recognizer) -> float:
    clips = manifest()
    assert len(clips) == 15
    references = [normalise_words(c.reference) for c in clips]
    hypotheses = [normalise_words(recognizer.transcribe(decoded(c.path)).text) for c in clips]
    return jiwer.wer(references, hypotheses)


def test_default_engine_word_error_rate_on_human_french_speech(default_recognizer):
    wer = word_error_rate(default_recognizer)
    print(f"\nfaster-whisper base WER over 15 human French clips: {wer:.3f} (bound {WER_BOUND})")
    assert wer < WER_BOUND


def test_openai_whisper_transcribes_with_real_weights(openai_recognizer, default_recognizer):
    samples = decoded(CLIP)
    openai_text = normalise_words(openai_recognizer.transcribe(samples).text)
    faster_text = normalise_words(default_recognizer.transcribe(samples).text)
    print(f"\nopenai-whisper: {openai_text!r}\nfaster-whisper: {faster_text!r}")
    assert "meilleur lanceur" in openai_text
    # Same weights, both greedy: the two engines should agree almost word for word.
    assert jiwer.wer(faster_text, openai_text) < 0.2


@pytest.mark.parametrize("engine", ["default_recognizer", "openai_recognizer"])
def test_silence_is_no_speech_not_invented_words(engine, request):
    recognizer = request.getfixturevalue(engine)
    rng = np.random.default_rng(0)
    for samples in (
        np.zeros(16_000 * 4, dtype=np.float32),
        (rng.standard_normal(16_000 * 4) * 1e-4).astype(np.float32),
    ):
        with pytest.raises(NoSpeech):
            recognizer.transcribe(samples)
