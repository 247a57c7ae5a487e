"""Speech recogniser on a remote server speaking OpenAI's `/v1/audio/transcriptions` (another
lea-local, speaches, a Whisper server…): the decoded 16 kHz recording is posted as WAV and
`verbose_json` gives its segments."""

from __future__ import annotations

import io
import logging
import threading
import wave
from typing import Any

import numpy as np

from lea_local.asr.base import SAMPLE_RATE, Transcript, TranscriptSegment, raise_if_cancelled, transcript_of
from lea_local.asr.languages import LANGUAGE_NAMES
from lea_local.runtime.remote_http import RemoteEngineError, make_client, request_json, wait_for_server

log = logging.getLogger(__name__)

ENGINE = "speech recognizer"
DEFAULT_MODEL = "whisper-1"
_CODES = {name: code for code, name in LANGUAGE_NAMES.items()}


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono float32 samples (-1…1) as a 16-bit WAV file."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def language_code(reported: object) -> str | None:
    """OpenAI reports the language's English name ("french"); some servers its code ("fr")."""
    if not isinstance(reported, str) or not reported:
        return None
    name = reported.strip().lower()
    return name if name in LANGUAGE_NAMES else _CODES.get(name)


class RemoteSpeechRecognizer:
    """`SpeechRecognizer` over HTTP; one request per recording (cancelled while it waits)."""

    remote = True
    on_gpu = False

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        language: str | None = None,
        initial_prompt: str | None = None,
        wait_seconds: float = 120.0,
    ) -> None:
        self._client = make_client(url, api_key)
        models = wait_for_server(self._client, "/v1/models", engine=ENGINE, wait_seconds=wait_seconds)
        self.request_model = model or DEFAULT_MODEL
        self.model_name = model or _root_of(models, DEFAULT_MODEL) or DEFAULT_MODEL
        self.language = language
        self.initial_prompt = initial_prompt

    def transcribe(
        self,
        samples: np.ndarray,
        *,
        cancel: threading.Event | None = None,
        initial_prompt: str | None = None,
        language: str | None = None,
        temperature: float | None = None,
    ) -> Transcript:
        raise_if_cancelled(cancel)
        audio_seconds = len(samples) / SAMPLE_RATE
        prompt = self.initial_prompt if initial_prompt is None else initial_prompt
        language = language or self.language
        form: dict[str, str] = {"model": self.request_model, "response_format": "verbose_json"}
        if language:
            form["language"] = language
        if prompt is not None:
            form["prompt"] = prompt  # even empty: no vocabulary prompt, rather than the server's
        if temperature is not None:
            form["temperature"] = str(temperature)
        answer = request_json(
            self._client,
            "POST",
            "/v1/audio/transcriptions",
            engine=ENGINE,
            cancel=cancel,
            data=form,
            files={"file": ("recording.wav", wav_bytes(samples), "audio/wav")},
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise RemoteEngineError(f"the {ENGINE} server's answer has no text")
        segments = [_segment(i, raw) for i, raw in enumerate(answer.get("segments") or [])]
        if not segments and answer["text"].strip():  # a server that gives the text alone
            segments = [_segment(0, {"text": answer["text"], "start": 0.0, "end": audio_seconds})]
        return transcript_of(segments, language_code(answer.get("language")) or language, audio_seconds)

    def close(self) -> None:
        self._client.close()


def _segment(index: int, raw: dict[str, Any]) -> TranscriptSegment:
    try:
        return TranscriptSegment(
            id=index,
            seek=int(raw.get("seek", 0)),
            start=float(raw.get("start", 0.0)),
            end=float(raw.get("end", 0.0)),
            text=str(raw.get("text", "")),
            tokens=tuple(int(t) for t in raw.get("tokens") or ()),
            temperature=float(raw.get("temperature", 0.0)),
            avg_logprob=float(raw.get("avg_logprob", 0.0)),
            compression_ratio=float(raw.get("compression_ratio", 0.0)),
            no_speech_prob=float(raw.get("no_speech_prob", 0.0)),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise RemoteEngineError(f"the {ENGINE} server sent a malformed segment") from exc


def _root_of(models: Any, alias: str) -> str | None:
    """The model behind an OpenAI name, where the server says (lea-local's and llama.cpp's `root`)."""
    for entry in models.get("data", []) if isinstance(models, dict) else []:
        if isinstance(entry, dict) and entry.get("id") == alias and isinstance(entry.get("root"), str):
            return entry["root"]
    return None
