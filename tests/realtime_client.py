"""Talking to /v1/realtime in the tests: a raw `websockets` client (the beta dialect, as
ImmoAssist connects), audio turned into what the protocol carries by real ffmpeg, and waits that
end on events, never on the clock (the receive timeout only stops a hung test). The steps the
tests repeat (a typed question and its response, audio streamed as a microphone sends it, a
refused handshake) are the helpers below."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from tests.server import API_KEY

HANG_GUARD = 90.0
"""Longest wait for one event: only a hung server reaches it."""

PCM16_BYTES_PER_MS = 48
"""PCM16, mono, at 24 kHz: the protocol's default audio."""
G711_BYTES_PER_MS = 8
"""G.711 (μ-law or A-law) at 8 kHz: one byte a sample."""


def ws_url(server, query: str = "model=gpt-4o-realtime-preview-2024-12-17") -> str:
    return server.url.replace("http://", "ws://") + f"/v1/realtime?{query}"


def beta_headers(key: str = API_KEY, header: str = "Authorization") -> dict[str, str]:
    """The key in `header` (`Authorization: Bearer` or `X-API-Key`) and the beta dialect's header."""
    return {header: f"Bearer {key}" if header == "Authorization" else key, "OpenAI-Beta": "realtime=v1"}


@asynccontextmanager
async def beta_session(server, *, key: str = API_KEY, header: str = "Authorization", query: str | None = None):
    """A raw websocket in the beta dialect; yields (socket, session.created event)."""
    headers = beta_headers(key, header)
    async with connect(ws_url(server, *([query] if query else [])), additional_headers=headers, max_size=None) as ws:
        created = await next_event(ws)
        assert created["type"] == "session.created", created
        yield ws, created


async def refused_handshake(server, *, headers: dict[str, str] | None = None, query: str | None = None) -> Response:
    """The HTTP answer to a handshake the server refuses before the upgrade; a session that
    opens instead fails the test."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(server, *([query] if query else [])), additional_headers=headers or {}):
            pass
    return refused.value.response


async def send(ws: ClientConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def next_event(ws: ClientConnection) -> dict[str, Any]:
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


async def update_session(ws: ClientConnection, **session: Any) -> list[dict[str, Any]]:
    """`session.update` with these fields; the events up to its `session.updated`."""
    await send(ws, {"type": "session.update", "session": session})
    return await events_until(ws, of_type("session.updated"))


def user_text(text: str, **fields: Any) -> dict[str, Any]:
    """A user message item that types `text` (`fields`: more of the item's, e.g. its `id`)."""
    return {**fields, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def create_item(ws: ClientConnection, item: dict[str, Any]) -> list[dict[str, Any]]:
    """`conversation.item.create`; the events up to its `conversation.item.created`."""
    await send(ws, {"type": "conversation.item.create", "item": item})
    return await events_until(ws, of_type("conversation.item.created"))


async def say_text(ws: ClientConnection, text: str) -> list[dict[str, Any]]:
    """A typed user message added to the conversation (no response asked for)."""
    return await create_item(ws, user_text(text))


async def start_response(ws: ClientConnection, **response: Any) -> None:
    """`response.create`, with these response fields if any."""
    await send(ws, {"type": "response.create", **({"response": response} if response else {})})


async def respond(ws: ClientConnection, **response: Any) -> list[dict[str, Any]]:
    """`response.create` (with these response fields); its events, up to its `response.done`."""
    await start_response(ws, **response)
    return await events_until(ws, of_type("response.done"))


async def ask_text(ws: ClientConnection, text: str, **response: Any) -> list[dict[str, Any]]:
    """A typed user message, then a response (with these response fields): the response's
    events, from `response.created` to `response.done`."""
    await say_text(ws, text)
    return await respond(ws, **response)


def assert_in_order(kinds: list[str], order: list[str]) -> None:
    """Each event type of `order` is among `kinds` (the types received), first seen in that order."""
    assert all(kind in kinds for kind in order), kinds
    assert [kinds.index(kind) for kind in order] == sorted(kinds.index(kind) for kind in order), kinds


def text_of(events: list[dict[str, Any]], kind: str = "response.text.delta") -> str:
    """What the `kind` deltas wrote, joined (text, a transcript, a call's arguments)."""
    return "".join(e["delta"] for e in events if e["type"] == kind)


def realtime_prompts(server) -> list[list[str]]:
    """The LLM's prompts for realtime responses, oldest first (logged with LEA_LOG_CONTENT)."""
    return [e["prompt"] for e in server.log_events() if e.get("event") == "llm.prompt" and e.get("api") == "realtime"]


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


async def stream_audio(
    client: Any,
    audio: bytes,
    *,
    chunk_ms: int = 100,
    bytes_per_ms: int = PCM16_BYTES_PER_MS,
    realtime: bool = False,
) -> None:
    """The audio in `input_audio_buffer.append`s of `chunk_ms` each, as a microphone sends it:
    back to back, or at the microphone's pace (`realtime`: one every `chunk_ms`). `client`: a
    raw websocket, or the official SDK's connection."""
    for piece in chunks(audio, chunk_ms * bytes_per_ms):
        if isinstance(client, ClientConnection):
            await send(client, {"type": "input_audio_buffer.append", "audio": piece})
        else:
            await client.input_audio_buffer.append(audio=piece)
        if realtime:
            await asyncio.sleep(chunk_ms / 1000)


async def push_to_talk(ws: ClientConnection, audio: bytes, **stream: Any) -> None:
    """The audio streamed (`stream`: as `stream_audio` takes it), then committed."""
    await stream_audio(ws, audio, **stream)
    await send(ws, {"type": "input_audio_buffer.commit"})


def ffmpeg_raw(data: bytes, source: str, target: str, rate: int) -> bytes:
    """Raw mono audio at `rate` converted by real ffmpeg from one of its formats to another
    (`s16le`, `mulaw`, `alaw`, `f32le`)."""
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    command += ["-f", source, "-ar", str(rate), "-ac", "1", "-i", "pipe:0"]
    command += ["-f", target, "-ar", str(rate), "-ac", "1", "pipe:1"]
    return subprocess.run(command, input=data, capture_output=True, check=True, timeout=60).stdout


def decode_wire(data: bytes, codec: str, rate: int) -> np.ndarray:
    """Wire audio decoded by real ffmpeg → float samples at `rate`."""
    return np.frombuffer(ffmpeg_raw(data, codec, "f32le", rate), dtype=np.float32)


def audio_of(events: list[dict[str, Any]], kind: str = "response.audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == kind)
