"""ImmoAssist's "integrated" mode, run against lea-local exactly as ImmoAssist runs it against
OpenAI (docs/contract/immoassist-client.md): the official SDK built as
`AsyncOpenAI(api_key=os.getenv("OPENAI_API_KEY"))`, its base URL taken from `OPENAI_BASE_URL`;
the voice flow Whisper (`whisper-1`, language "fr", the browser's `recording.webm`) → chat
completion (streamed, its Québec system prompt and platform context, max_tokens 256,
temperature 0.7) → speech (`tts-1-hd`, `shimmer`, speed 1.2), whose MP3 must decode."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess

import httpx
import jiwer
import pytest
from openai import AsyncOpenAI

from tests.audio import BROWSER_FORMATS, CLIP, CLIP_KEY_WORDS, encode
from tests.server import API_KEY

# The shape of ImmoAssist's own prompt (backend/app/api/v1/endpoints/lea.py), shortened.
LEA_SYSTEM_PROMPT = (
    "Tu es Léa, une assistante immobilière experte au Québec. Tu aides les courtiers et les "
    "particuliers : transactions, formulaires OACIQ, vente, achat.\n\n"
    "Règles générales:\n- Réponds en français, de façon courtoise et professionnelle.\n"
    "- Garde tes réponses **courtes** (2 à 4 phrases max)."
)
PLATFORM_CONTEXT = (
    "Données plateforme (transactions et dossiers de l'utilisateur connecté) :\n"
    "  - D-2026-014: Vente condo — 2643 Sherbrooke Est, Montréal (Québec) H2K 1E1 — statut: en cours"
)


@pytest.fixture
def integrated_env(server, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agency's ImmoAssist backend configured for lea-local: two environment variables."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def mp3_seconds(data: bytes) -> float:
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 2 / 16_000


def test_immoassist_integrated_voice_flow(integrated_env, server) -> None:
    async def voice_turn() -> tuple[str, str, str, bytes]:
        client = AsyncOpenAI(api_key=os.getenv("OPENAI_API_KEY"))  # as ImmoAssist builds it
        output_args, mime, _ = BROWSER_FORMATS["webm-opus"]
        recording = io.BytesIO(encode(CLIP, output_args))
        recording.name = "recording.webm"
        transcript = await client.audio.transcriptions.create(model="whisper-1", file=recording, language="fr")
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": f"{LEA_SYSTEM_PROMPT}\n\n{PLATFORM_CONTEXT}"},
                {"role": "user", "content": transcript.text},
            ],
            temperature=0.7,
            max_tokens=256,
            stream=True,
        )
        deltas: list[str] = []
        model = ""
        async for chunk in stream:
            model = chunk.model
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
        reply = "".join(deltas)
        speech = await client.audio.speech.create(model="tts-1-hd", voice="shimmer", input=reply, speed=1.2)
        await client.close()
        return transcript.text, reply, model, speech.content

    assert os.environ["OPENAI_BASE_URL"].startswith(server.url)  # the SDK reads it: no base_url passed
    text, reply, model, audio = asyncio.run(voice_turn())

    words = jiwer.process_words(" ".join(CLIP_KEY_WORDS), text.lower())
    assert words.hits >= len(CLIP_KEY_WORDS) - 1, text  # the human clip, recognised
    assert reply.strip(), "the streamed completion produced no text"
    assert model == httpx.get(f"{server.url}/ready").json()["models"]["llm"]  # the real local model is named
    assert audio[:3] == b"ID3" or audio[0] == 0xFF  # an MP3 stream
    seconds = mp3_seconds(audio)
    assert 0.3 < seconds < 60, seconds


def test_immoassist_integrated_text_chat_reads_usage(integrated_env, server) -> None:
    """Its non-streamed path (`AIService.chat_completion`) reads content, model, usage and
    finish_reason from the answer."""

    async def chat() -> object:
        client = AsyncOpenAI(api_key=os.getenv("OPENAI_API_KEY"))
        try:
            return await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {"role": "system", "content": LEA_SYSTEM_PROMPT},
                    {"role": "user", "content": "Quels formulaires OACIQ pour une promesse d'achat ?"},
                ],
                temperature=0.7,
                max_tokens=24,
            )
        finally:
            await client.close()

    response = asyncio.run(chat())
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
