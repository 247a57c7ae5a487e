"""Voice over /v1/realtime on the real server and models (Whisper base, SmolLM2, Piper), with
human French speech streamed in as a microphone sends it: push-to-talk in the beta dialect (as
ImmoAssist), server VAD through the official SDK (GA), barge-in and cancel, silence and noise
that make no turn, and G.711 telephone audio in and out."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.audio import CLIP, CLIP_KEY_WORDS, noise, normalise_words, tone
from tests.realtime_client import (
    G711_BYTES_PER_MS,
    assert_in_order,
    audio_of,
    beta_session,
    decode_wire,
    events_until,
    next_event,
    of_type,
    pcm,
    push_to_talk,
    realtime_prompts,
    respond,
    say_text,
    send,
    silence_pcm,
    start_response,
    stream_audio,
    text_of,
    update_session,
)
from tests.server import API_KEY

SPEECH = pcm(CLIP)
SPEECH_START = int(0.3 * 24_000) * 2  # the clip's first words start at about 0.35 s


def heard_the_clip(transcript: str) -> bool:
    heard = normalise_words(transcript).split()
    return sum(normalise_words(w) not in heard for w in CLIP_KEY_WORDS) <= 1


def loud(samples: np.ndarray) -> bool:
    return samples.size > 0 and float(np.sqrt(np.mean(samples**2))) > 0.01


@pytest.mark.slow
def test_push_to_talk_in_the_beta_dialect(server):
    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(
                ws, turn_detection=None, input_audio_transcription={"model": "whisper-1", "language": "fr"}
            )
            await push_to_talk(ws, SPEECH)
            events = await respond(ws)
            # The answer's transcript keeps only the pieces the client played (its first).
            answer = events[-1]["response"]["output"][0]
            await send(
                ws,
                {"type": "conversation.item.truncate", "item_id": answer["id"], "content_index": 0, "audio_end_ms": 1},
            )
            truncated = await next_event(ws)
            await send(ws, {"type": "conversation.item.retrieve", "item_id": answer["id"]})
            retrieved = await next_event(ws)
            return events, truncated, retrieved

    events, truncated, retrieved = asyncio.run(run())
    kinds = [e["type"] for e in events]
    committed = events[kinds.index("input_audio_buffer.committed")]
    created = events[kinds.index("conversation.item.created")]
    assert created["item"]["id"] == committed["item_id"]
    assert created["item"]["content"][0]["type"] == "input_audio"
    heard = events[kinds.index("conversation.item.input_audio_transcription.completed")]
    assert heard["item_id"] == committed["item_id"]
    assert heard_the_clip(heard["transcript"]), heard["transcript"]
    assert "input_audio_buffer.speech_started" not in kinds  # push-to-talk: no detector
    order = [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.audio_transcript.delta",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert_in_order(kinds, order)
    # The answer's audio is PCM16 at 24 kHz that decodes to speech.
    audio = decode_wire(audio_of(events), "s16le", 24_000)
    assert loud(audio) and audio.size > 24_000 // 2
    spoken = text_of(events, "response.audio_transcript.delta")
    assert spoken.strip()
    assert events[kinds.index("response.audio_transcript.done")]["transcript"] == spoken
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0] == {"type": "audio", "transcript": spoken}
    assert done["usage"]["output_tokens"] > 0
    assert truncated["type"] == "conversation.item.truncated" and truncated["audio_end_ms"] == 1
    kept = retrieved["item"]["content"][0]["transcript"]
    assert kept and spoken.startswith(kept) and len(kept) < len(spoken)


@pytest.mark.slow
def test_server_vad_through_the_official_sdk_in_real_time(server):
    """Silence, the sentence, silence, streamed at the microphone's pace: the server finds the
    turn, transcribes it, and answers with audio, on its own."""
    stream = silence_pcm(0.5) + SPEECH + silence_pcm(1.5)

    async def run():
        client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0)
        async with client.realtime.connect(model="gpt-realtime") as connection:
            await connection.session.update(
                session={
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                            "transcription": {"model": "whisper-1", "language": "fr"},
                        }
                    },
                }
            )

            # Real time: 100 ms of audio every 100 ms.
            talking = asyncio.create_task(stream_audio(connection, stream, realtime=True))
            events = []
            while True:
                event = await asyncio.wait_for(connection.recv(), 90)
                events.append(event)
                if event.type == "response.done":
                    break
            await talking
            return events

    events = asyncio.run(run())
    # Recognised while the broker was still silent, before the turn's end was certain: the
    # recognition started at the pause is the turn's.
    recognitions = [e for e in server.log_events() if e.get("event") == "realtime.transcription"]
    assert recognitions and recognitions[-1]["at_pause"] is True
    kinds = [e.type for e in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.done",
    ]
    assert_in_order(kinds, order)
    started = events[kinds.index("input_audio_buffer.speech_started")]
    stopped = events[kinds.index("input_audio_buffer.speech_stopped")]
    assert started.item_id == stopped.item_id
    assert 0 <= started.audio_start_ms <= 500 + 350  # within the silence's padding of the words
    assert stopped.audio_end_ms - started.audio_start_ms > 3_000  # the whole sentence
    heard = events[kinds.index("conversation.item.input_audio_transcription.completed")]
    assert heard.item_id == started.item_id
    assert heard_the_clip(heard.transcript), heard.transcript
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    assert loud(decode_wire(audio, "s16le", 24_000))
    assert events[-1].response.status == "completed"
    assert kinds.count("response.created") == 1


@pytest.mark.slow
def test_the_latency_benchmark_times_a_realtime_turn(server):
    from lea_local.tools.realtime_bench import realtime_round

    figures = realtime_round(server.url, API_KEY, SPEECH)
    assert set(figures) == {
        "realtime_stopped_to_first_audio",
        "realtime_last_speech_to_first_audio",
        "realtime_stopped_to_transcript",
        "realtime_stopped_to_first_text",
    }
    assert 0 < figures["realtime_stopped_to_transcript"] <= figures["realtime_stopped_to_first_text"]
    assert figures["realtime_stopped_to_first_text"] <= figures["realtime_stopped_to_first_audio"]


def test_silence_committed_makes_no_turn(server):
    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, turn_detection=None)
            await push_to_talk(ws, silence_pcm(2.0))
            return await respond(ws)

    events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    failed = events[kinds.index("conversation.item.input_audio_transcription.failed")]
    assert failed["error"]["code"] == "no_speech"
    assert events[kinds.index("conversation.item.deleted")]["item_id"] == failed["item_id"]
    assert "conversation.item.input_audio_transcription.completed" not in kinds
    assert "response.audio.delta" not in kinds
    done = events[-1]["response"]
    assert done["status"] == "failed" and done["status_details"]["error"]["code"] == "no_speech"


def test_noise_and_tones_under_server_vad_make_no_turn(server):
    sounds = np.concatenate([noise(2.0), tone(2.0), noise(2.0, "pink"), np.zeros(16_000, dtype=np.float32)])
    at_24k = np.interp(np.arange(sounds.size * 3 // 2) * 2 / 3, np.arange(sounds.size), sounds)
    audio = (at_24k * 32767).astype("<i2").tobytes()

    async def run():
        async with beta_session(server) as (ws, _):
            await stream_audio(ws, audio)
            events = await update_session(ws, instructions="marker")
            kinds = [e["type"] for e in events]
            if "input_audio_buffer.speech_started" in kinds:  # then wait for what it led to
                await events_until(
                    ws, lambda e: e["type"].startswith("conversation.item.input_audio_transcription."), events
                )
            return events

    kinds = [e["type"] for e in asyncio.run(run())]
    assert "conversation.item.input_audio_transcription.completed" not in kinds
    assert "response.created" not in kinds


def test_barge_in_cancels_the_answer_at_once(server):
    """The broker speaks while Léa answers: `response.done` (cancelled, turn_detected) comes
    right after `speech_started`, before any more of that answer."""

    async def run():
        async with beta_session(server) as (ws, _):
            await say_text(ws, "Décris en détail une belle maison de campagne avec jardin.")
            await start_response(ws)
            # Once she has begun: her answer is in the conversation and being written.
            events = await events_until(ws, of_type("response.audio_transcript.delta"))
            await stream_audio(ws, SPEECH[SPEECH_START:])  # the broker talks over her
            await events_until(ws, of_type("response.done"), events)
            await send(ws, {"type": "conversation.item.retrieve", "item_id": events[-1]["response"]["output"][0]["id"]})
            await events_until(ws, of_type("conversation.item.retrieved"), events)
            return events

    events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    response_id = events[0]["response"]["id"]
    started = kinds.index("input_audio_buffer.speech_started")
    after = [e for e in events[started + 1 :] if e.get("response_id") == response_id or e["type"] == "response.done"]
    assert after[0]["type"] == "response.done", [e["type"] for e in after]
    done = after[0]["response"]
    assert done["id"] == response_id
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    # In the conversation, the answer holds only what had been spoken.
    kept = events[-1]["item"]
    assert kept["status"] == "incomplete"
    spoken = text_of(events[:started], "response.audio_transcript.delta")
    assert spoken.startswith(kept["content"][0]["transcript"])


@pytest.mark.slow
@pytest.mark.parametrize(("wire", "ffmpeg_codec"), [("g711_ulaw", "mulaw"), ("g711_alaw", "alaw")])
def test_telephone_audio_in_and_out(server, wire, ffmpeg_codec):
    telephone = pcm(CLIP, rate=8_000, codec=ffmpeg_codec)

    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, turn_detection=None, input_audio_format=wire, output_audio_format=wire)
            await push_to_talk(ws, telephone, chunk_ms=200, bytes_per_ms=G711_BYTES_PER_MS)
            return await respond(ws)

    events = asyncio.run(run())
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert heard_the_clip(heard["transcript"]), heard["transcript"]
    answer = decode_wire(audio_of(events), ffmpeg_codec, 8_000)
    assert loud(answer) and answer.size > 8_000 // 2
    assert events[-1]["response"]["status"] == "completed"


@pytest.mark.slow
def test_an_input_audio_item_is_heard_and_answered(server):
    """A user message created with its audio (rather than appended and committed): transcribed
    like committed audio, its words the part's transcript, then answered."""

    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, turn_detection=None)
            audio = base64.b64encode(SPEECH).decode()
            item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
            await send(ws, {"type": "conversation.item.create", "item": item})
            events = await respond(ws, modalities=["text"])
            created = next(e for e in events if e["type"] == "conversation.item.created")
            await send(ws, {"type": "conversation.item.retrieve", "item_id": created["item"]["id"]})
            events.append(await next_event(ws))
            return events

    events = asyncio.run(run())
    heard = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert heard_the_clip(heard["transcript"]), heard["transcript"]
    kinds = [e["type"] for e in events]
    assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index("response.text.delta")
    assert events[-2]["response"]["status"] == "completed"
    retrieved = events[-1]["item"]["content"][0]
    assert retrieved == {"type": "input_audio", "transcript": heard["transcript"]}


IMMOASSIST_SESSION = {
    "modalities": ["text", "audio"],
    "voice": "shimmer",
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_noise_reduction": {"type": "near_field"},
    "turn_detection": {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 300, "silence_duration_ms": 1200},
    "tools": [{"type": "function", "name": "get_draft", "description": "Le brouillon en cours", "parameters": {}}],
    "tool_choice": "auto",
    "temperature": 0.7,
    "input_audio_transcription": {"model": "whisper-1", "language": "fr"},
}


@pytest.mark.slow
def test_a_call_as_immoassist_makes_it(server):
    """ImmoAssist's Léa service (`../shared/contract/immoassist-next.md`): the beta dialect, its own
    session.update, the broker's microphone forwarded at its pace; the turn is found after 1.2 s
    of silence and answered (spoken, or with a tool call)."""
    stream = silence_pcm(0.5) + SPEECH + silence_pcm(2.0)

    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, **IMMOASSIST_SESSION)
            talking = asyncio.create_task(stream_audio(ws, stream, realtime=True))
            events = await events_until(ws, of_type("response.done"))
            await talking
            return events

    events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("input_audio_buffer.committed")
    heard = events[kinds.index("conversation.item.input_audio_transcription.completed")]
    assert heard_the_clip(heard["transcript"]), heard["transcript"]
    done = events[-1]["response"]
    assert done["status"] == "completed" and done["output"]
    if done["output"][0]["type"] == "message":
        assert loud(decode_wire(audio_of(events), "s16le", 24_000))
    else:
        assert done["output"][0]["name"] == "get_draft"


@pytest.mark.slow
def test_without_transcription_events_the_words_are_still_heard(server):
    """`input_audio_transcription: null`: no transcription events, but Léa answers the words."""

    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, turn_detection=None, input_audio_transcription=None)
            await push_to_talk(ws, SPEECH)
            return await respond(ws, modalities=["text"])

    events = asyncio.run(run())
    assert not [e for e in events if e["type"].startswith("conversation.item.input_audio_transcription.")]
    assert events[-1]["response"]["status"] == "completed"
    prompts = realtime_prompts(server)
    assert heard_the_clip(prompts[-1][-1]), prompts[-1]
