"""Voice activity as it streams in: the Silero VAD model that faster-whisper ships (its
`silero_vad_v6.onnx`, run by onnxruntime; nothing to download), fed 32 ms windows one after
the other with its recurrent state kept, so that each window's speech probability is the one
the model gives over the whole recording (`faster_whisper.vad.SileroVADModel` on a recording,
window by window). On top, the Realtime protocol's turn detection: speech starts when a window
reaches `threshold`, and stops after `silence_duration_ms` below it."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16_000
WINDOW = 512
"""Samples per window at 16 kHz (32 ms), as the model takes them."""
CONTEXT = 64
"""Samples of the previous window the model sees before each window."""
WINDOW_MS = WINDOW * 1000 // SAMPLE_RATE


@functools.lru_cache(maxsize=1)
def _session():  # type: ignore[no-untyped-def]
    """The ONNX session of faster-whisper's Silero model, shared: its `run` is thread-safe."""
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


class SpeechProbabilities:
    """One stream's speech probabilities, window by window, its state carried over."""

    def __init__(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._lock = threading.Lock()

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz float32 samples → the probability of each window now complete (a window's
        samples that are not all there yet wait for the next call). Blocking (milliseconds)."""
        with self._lock:
            audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
            count = audio.size // WINDOW
            self._pending = audio[count * WINDOW :]
            if count == 0:
                return np.zeros(0, dtype=np.float32)
            windows = audio[: count * WINDOW].reshape(count, WINDOW)
            contexts = np.concatenate([self._context[None, :], windows[:-1, -CONTEXT:]])
            self._context = windows[-1, -CONTEXT:].copy()
            batch = np.concatenate([contexts, windows], axis=1)
            output, self._h, self._c = _session().run(None, {"input": batch, "h": self._h, "c": self._c})
            return np.asarray(output, dtype=np.float32).reshape(-1)[:count]


@dataclass(frozen=True)
class TurnDetection:
    """The session's `server_vad` settings."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class VoiceEvent:
    kind: str
    """`started`, `paused`, `resumed` or `stopped`."""
    at_ms: int
    """Milliseconds of the stream where speech started (its padding included) or stopped."""


class TurnDetector:
    """Speech started / stopped over a stream of windows' probabilities. A start needs
    `MIN_SPEECH_WINDOWS` windows over the threshold in a row (a click is no turn); a stop,
    `silence_duration_ms` of windows below `threshold - 0.15` (Silero's own hysteresis)."""

    MIN_SPEECH_WINDOWS = 3
    PAUSE_MS = 160
    """Silence inside speech after which a `paused` event comes (the turn may be ending: its
    recognition can start), followed by `resumed` if speech goes on, or by `stopped` at the same
    `at_ms` once the silence reaches `silence_duration_ms`. None when that is no longer."""

    def __init__(self, options: TurnDetection) -> None:
        self.options = options
        self.windows = 0
        self.speaking = False
        self._run = 0
        self._silent = 0

    def push(self, probabilities: np.ndarray) -> list[VoiceEvent]:
        events = []
        low = max(self.options.threshold - 0.15, 0.01)
        for p in probabilities:
            self.windows += 1
            end_ms = self.windows * WINDOW_MS
            if not self.speaking:
                self._run = self._run + 1 if p >= self.options.threshold else 0
                if self._run >= self.MIN_SPEECH_WINDOWS:
                    self.speaking, self._silent = True, 0
                    start = end_ms - self._run * WINDOW_MS
                    events.append(VoiceEvent("started", max(0, start - self.options.prefix_padding_ms)))
            else:
                pause_windows = -(-self.PAUSE_MS // WINDOW_MS)
                pausing = self.options.silence_duration_ms > pause_windows * WINDOW_MS
                if p >= self.options.threshold:
                    if pausing and self._silent >= pause_windows:
                        events.append(VoiceEvent("resumed", end_ms))
                    self._silent = 0
                elif p < low or self._silent:  # between the thresholds, a silence goes on
                    self._silent += 1
                    if pausing and self._silent == pause_windows:
                        events.append(VoiceEvent("paused", end_ms - self._silent * WINDOW_MS))
                    if self._silent * WINDOW_MS >= self.options.silence_duration_ms:
                        self.speaking, self._run = False, 0
                        events.append(VoiceEvent("stopped", end_ms - self._silent * WINDOW_MS))
        return events
