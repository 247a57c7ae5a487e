"""Voice-to-voice latency over /v1/realtime (`lea-local bench` prints it per preset): a French
utterance streamed at the microphone's pace (100 ms every 100 ms) into a session with server
VAD (`silence_duration_ms` 500), timed from the server's `speech_stopped`, and from the last
chunk of the utterance, to the first answer audio delta; with the stages in between."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from pathlib import Path

from websockets.asyncio.client import connect

CHUNK_SECONDS = 0.1
RATE = 24_000


def utterance_pcm(clip: Path) -> bytes:
    """The clip as PCM16 24 kHz mono, by ffmpeg."""
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(clip)]
    command += ["-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"]
    return subprocess.run(command, capture_output=True, check=True, timeout=120).stdout


async def _turn(url: str, key: str, speech: bytes, silence_ms: int, threshold: float) -> dict[str, float]:
    step = int(RATE * CHUNK_SECONDS) * 2
    lead, tail = bytes(int(RATE * 0.3) * 2), bytes(int(RATE * 2.0) * 2)
    audio = lead + speech + tail
    speech_end = len(lead) + len(speech)
    headers = {"Authorization": f"Bearer {key}", "OpenAI-Beta": "realtime=v1"}
    marks: dict[str, float] = {}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": silence_ms,
                            "threshold": threshold,
                        },
                        "input_audio_transcription": {"model": "whisper-1", "language": "fr"},
                    },
                }
            )
        )

        async def microphone() -> None:
            for start in range(0, len(audio), step):
                piece = audio[start : start + step]
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})
                )
                if start + step >= speech_end and "last_speech_chunk" not in marks:
                    marks["last_speech_chunk"] = time.perf_counter()
                await asyncio.sleep(CHUNK_SECONDS)

        talking = asyncio.create_task(microphone())
        names = {
            "input_audio_buffer.speech_stopped": "speech_stopped",
            "conversation.item.input_audio_transcription.completed": "transcribed",
            "response.created": "response_created",
            "response.audio_transcript.delta": "first_text",
            "response.audio.delta": "first_audio",
        }
        try:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 300))
                name = names.get(event["type"])
                if name and name not in marks:
                    marks[name] = time.perf_counter()
                if event["type"] == "response.done":
                    if event["response"]["status"] != "completed":
                        raise RuntimeError(f"the response ended {event['response']['status']}")
                    break
                if event["type"] == "error":
                    raise RuntimeError(event["error"]["message"])
        finally:
            talking.cancel()
    stopped = marks["speech_stopped"]
    return {
        "realtime_stopped_to_first_audio": marks["first_audio"] - stopped,
        "realtime_last_speech_to_first_audio": marks["first_audio"] - marks["last_speech_chunk"],
        "realtime_stopped_to_transcript": marks["transcribed"] - stopped,
        "realtime_stopped_to_first_text": marks["first_text"] - stopped,
    }


def realtime_round(
    base_url: str, key: str, speech: bytes, silence_ms: int = 500, threshold: float = 0.5
) -> dict[str, float]:
    """One voice turn over /v1/realtime; seconds from `speech_stopped` and from the utterance's
    last chunk to the answer's first audio (and to its transcript and first text)."""
    url = base_url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime?model=bench"
    return asyncio.run(_turn(url, key, speech, silence_ms, threshold))


def immoassist_round(base_url: str, key: str, speech: bytes) -> dict[str, float]:
    """The same turn with the server VAD settings ImmoAssist's Léa sends (silence_duration_ms
    1200, threshold 0.6): the recognition started at the pause is done by `speech_stopped`."""
    measured = realtime_round(base_url, key, speech, silence_ms=1200, threshold=0.6)
    return {"realtime_immoassist_stopped_to_first_audio": measured["realtime_stopped_to_first_audio"]}


NOTES = {
    "realtime_stopped_to_first_audio": "speech_stopped → first audio delta, target ≤ 1.0 s (tiny, 2 cores)",
    "realtime_last_speech_to_first_audio": "utterance's last chunk → first audio delta, silence_duration_ms 500",
    "realtime_stopped_to_transcript": "speech_stopped → transcription completed",
    "realtime_stopped_to_first_text": "speech_stopped → first transcript delta",
    "realtime_immoassist_stopped_to_first_audio": "the same with ImmoAssist's VAD (silence 1200 ms, threshold 0.6)",
}
