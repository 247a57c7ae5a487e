"""`semantic_vad`, served by the same voice-activity model as `server_vad`: accepted and echoed
as the client set it, its eagerness deciding how long a silence ends a turn (real Silero, real
French speech with a 0.9 s pause in the middle)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.audio import CLIP
from tests.realtime_client import beta_session, events_until, of_type, pcm, send, silence_pcm, stream_audio


def speech_only(audio: bytes) -> bytes:
    """The recording without its leading and trailing silence."""
    samples = np.frombuffer(audio, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 0.05 * np.abs(samples).max())
    return samples[loud[0] : loud[-1] + 1].tobytes()


TWO_PHRASES = silence_pcm(0.5) + speech_only(pcm(CLIP)) + silence_pcm(0.9) + speech_only(pcm(CLIP)) + silence_pcm(2.5)


async def turns_heard(server, eagerness: str) -> tuple[dict, int]:
    """The session as echoed, and how many turns the two phrases made."""
    detection = {"type": "semantic_vad", "eagerness": eagerness, "create_response": False}
    async with beta_session(server) as (ws, _):
        await send(ws, {"type": "session.update", "session": {"turn_detection": detection}})
        (updated,) = await events_until(ws, lambda e: e["type"] in ("session.updated", "error"))
        await stream_audio(ws, TWO_PHRASES)
        await send(ws, {"type": "input_audio_buffer.clear"})  # answered after every earlier append
        events = await events_until(ws, of_type("input_audio_buffer.cleared"))
    return updated, sum(e["type"] == "input_audio_buffer.speech_stopped" for e in events)


@pytest.mark.slow
def test_semantic_vad_ends_a_turn_after_a_silence_its_eagerness_sets(server) -> None:
    updated, eager_turns = asyncio.run(turns_heard(server, "high"))  # 500 ms of silence end a turn
    assert updated["type"] == "session.updated", updated
    assert updated["session"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": False,
        "interrupt_response": True,
    }
    _, patient_turns = asyncio.run(turns_heard(server, "low"))  # 1.5 s: the 0.9 s pause is no end
    assert (eager_turns, patient_turns) == (2, 1)


def test_an_unknown_eagerness_is_an_error_naming_it(server) -> None:
    async def scenario() -> dict:
        async with beta_session(server) as (ws, _):
            detection = {"type": "semantic_vad", "eagerness": "impatient"}
            await send(ws, {"type": "session.update", "session": {"turn_detection": detection}})
            (error,) = await events_until(ws, lambda e: e["type"] in ("session.updated", "error"))
            return error

    error = asyncio.run(scenario())
    assert error["type"] == "error"
    assert error["error"]["param"] == "session.turn_detection.eagerness"
