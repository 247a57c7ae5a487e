"""The realtime session's `voice` picks the voice as /v1/audio/speech does: OpenAI's names and
the aliases of `LEA_TTS_VOICE_ALIASES`, or an installed voice by name; an unknown one is an
`error` naming the field, and the voice stays. Checked with two real Piper voices that differ
audibly: the installed one, and a copy of it speaking half as fast as the server's default."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.realtime_client import (
    ask_text,
    audio_of,
    beta_session,
    events_until,
    of_type,
    send,
    text_of,
    update_session,
)

INSTALLED = "en_US-joe-medium"


def slow_copy(models_dir: Path, directory: Path) -> Path:
    """The installed voice under another name, its length_scale doubled: half as fast."""
    onnx = next(models_dir.glob(f"piper-{INSTALLED}/**/{INSTALLED}.onnx"))
    copy = directory / "fr_CA-lente-medium.onnx"
    shutil.copyfile(onnx, copy)
    config = json.loads(Path(f"{onnx}.json").read_text())
    config["inference"]["length_scale"] = 2 * config["inference"].get("length_scale", 1.0)
    Path(f"{copy}.json").write_text(json.dumps(config))
    return copy


async def spoken_seconds(server, voice: str) -> tuple[float, str]:
    """One answer to the same question in `voice`: its audio's length and its transcript."""
    async with beta_session(server) as (ws, _):
        updated = await update_session(ws, voice=voice)
        assert updated[-1]["session"]["voice"] == voice
        events = await ask_text(ws, "Bonjour Léa.")
    return len(audio_of(events)) / (24_000 * 2), text_of(events, "response.audio_transcript.delta")


@pytest.mark.slow
def test_the_session_voice_is_the_one_that_speaks(make_server, models_dir: Path, tmp_path: Path) -> None:
    lea = make_server({"LEA_TTS_VOICE": str(slow_copy(models_dir, tmp_path)), "LEA_LLM_TEMPERATURE": "0"})
    default, default_text = asyncio.run(spoken_seconds(lea, "shimmer"))  # an OpenAI name: the default voice
    installed, installed_text = asyncio.run(spoken_seconds(lea, INSTALLED))
    # Seconds per character written: the pace of each voice, whatever words each answer has.
    default_pace, installed_pace = default / len(default_text), installed / len(installed_text)
    assert default_pace > 1.6 * installed_pace, (default, default_text, installed, installed_text)


@pytest.mark.slow
def test_an_unknown_voice_is_an_error_and_the_voice_stays(server) -> None:
    async def scenario() -> None:
        async with beta_session(server) as (ws, created):
            await send(ws, {"type": "session.update", "event_id": "evt_voice", "session": {"voice": "nobody"}})
            (error,) = await events_until(ws, lambda e: e["type"] in ("session.updated", "error"))
            assert error["type"] == "error", error
            assert error["error"]["param"] == "session.voice"
            assert error["error"]["event_id"] == "evt_voice"
            assert "nobody" in error["error"]["message"]
            await send(ws, {"type": "session.update", "session": {"instructions": "Réponds en un mot."}})
            (updated,) = await events_until(ws, of_type("session.updated"))
            assert updated["session"]["voice"] == created["session"]["voice"]

    asyncio.run(scenario())
