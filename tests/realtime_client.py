"""Talking to /v1/realtime in the tests: a raw `websockets` client (the beta dialect, as
ImmoAssist connects), audio turned into what the protocol carries by real ffmpeg, and waits that
end on events, never on the clock (the receive timeout only stops a hung test)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from tests.server import API_KEY

HANG_GUARD = 90.0
"""Longest wait for one event: only a hung server reaches it."""


def ws_url(server, query: str = "model=gpt-4o-realtime-preview-2024-12-17") -> str:
    return server.url.replace("http://", "ws://") + f"/v1/realtime?{query}"


@asynccontextmanager
async def beta_session(server, *, key: str = API_KEY, header: str = "Authorization", query: str | None = None):
    """A raw websocket in the beta dialect; yields (socket, session.created event)."""
    value = f"Bearer {key}" if header == "Authorization" else key
    headers = {header: value, "OpenAI-Beta": "realtime=v1"}
    async with connect(ws_url(server, *([query] if query else [])), additional_headers=headers, max_size=None) as ws:
        created = await next_event(ws)
        assert created["type"] == "session.created", created
        yield ws, created


async def send(ws: ClientConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    import asyncio

    return json.loads(await asyncio.wait_for(ws.recv(), HANG_GUARD))


async def events_until(
    ws: ClientConnection, done: Callable[[dict[str, Any]], bool], seen: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Every event up to and including the first for which `done` holds."""
    events = seen if seen is not None else []
    while True:
        event = await next_event(ws)
        events.append(event)
        if done(event):
            return events


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == kind


def pcm(source: Path | str, *, rate: int = 24_000, codec: str = "s16le", input_args: list[str] | None = None) -> bytes:
    """Any recording as the protocol's raw audio, by real ffmpeg: PCM16 (`s16le`) or G.711
    (`mulaw`, `alaw`), mono, at `rate`."""
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *(input_args or []), "-i", str(source)]
    command += ["-f", codec, "-ac", "1", "-ar", str(rate), "pipe:1"]
    return subprocess.run(command, capture_output=True, check=True, timeout=120).stdout


def silence_pcm(seconds: float, rate: int = 24_000) -> bytes:
    return np.zeros(int(seconds * rate), dtype="<i2").tobytes()


def chunks(audio: bytes, bytes_per_chunk: int) -> list[str]:
    """The audio in base64 appends, as a microphone sends it."""
    return [base64.b64encode(audio[i : i + bytes_per_chunk]).decode() for i in range(0, len(audio), bytes_per_chunk)]


def decode_wire(data: bytes, codec: str, rate: int) -> np.ndarray:
    """Wire audio decoded by real ffmpeg → float samples at `rate`."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            codec,
            "-ar",
            str(rate),
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "pipe:1",
        ],
        input=data,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return np.frombuffer(out, dtype=np.float32)


def audio_of(events: list[dict[str, Any]], kind: str = "response.audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == kind)
