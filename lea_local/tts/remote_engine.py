"""Speech synthesiser on a remote server speaking OpenAI's `/v1/audio/speech` (another lea-local,
speaches…): raw PCM (`response_format: "pcm"`, 24 kHz 16-bit little-endian mono), handed on
in chunks as it streams."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from lea_local.runtime.remote_http import make_client, open_response, wait_for_server

log = logging.getLogger(__name__)

ENGINE = "speech synthesizer"
DEFAULT_MODEL = "tts-1"
DEFAULT_VOICE = "alloy"
PCM_SAMPLE_RATE = 24_000
"""OpenAI's `pcm`, whatever the remote voice's own rate."""
# About a quarter of a second of audio per chunk handed on.
CHUNK_BYTES = PCM_SAMPLE_RATE // 2


class RemoteSpeechSynthesizer:
    """`SpeechSynthesizer` over HTTP: one request per text; thread-safe."""

    remote = True
    on_gpu = False
    sample_rate = PCM_SAMPLE_RATE

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        voice: str | None = None,
        model: str = DEFAULT_MODEL,
        wait_seconds: float = 120.0,
    ) -> None:
        self._client = make_client(url, api_key)
        wait_for_server(self._client, "/v1/models", engine=ENGINE, wait_seconds=wait_seconds)
        self.request_voice = voice or DEFAULT_VOICE
        self.voice_name = self.request_voice
        self.request_model = model

    def synthesize(self, text: str, *, speed: float = 1.0) -> Iterator[np.ndarray]:
        body = {
            "model": self.request_model,
            "input": text,
            "voice": self.request_voice,
            "response_format": "pcm",
            "speed": speed,
        }
        with open_response(self._client, "POST", "/v1/audio/speech", engine=ENGINE, json=body) as response:
            pending = b""
            for data in response.iter_bytes(CHUNK_BYTES):
                pending += data
                whole = len(pending) - len(pending) % 2  # a sample may straddle two reads
                if whole:
                    yield np.frombuffer(pending[:whole], dtype="<i2").astype(np.int16)
                    pending = pending[whole:]

    def close(self) -> None:
        self._client.close()
