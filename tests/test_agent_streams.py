"""Streamed agent turns on the real server: POST /api/external/agent/chat/stream and
/chat/voice/stream (server-sent events in the shape ImmoAssist's web app reads), stored exactly
like non-streamed turns; a client that hangs up stores nothing; each spoken piece's own audio
file is fetchable, decodable and erased with the session."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import db_rows
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer
from tests.waiting import wait_for

CHAT_STREAM = CHAT_PATH + "/stream"
VOICE_STREAM = VOICE_PATH + "/stream"
KEY = {"X-API-Key": API_KEY}
HUMAN_CLIP = Path("/work/shared/audio/fr/fleurs_fr_000.ogg")
# English: the tiny model writes a few sentences to this.
ASK = "Give me three short tips for visiting a house."
SETTINGS = {
    "LEA_LOG_CONTENT": "true",
    "LEA_LLM_MAX_REPLY_TOKENS": "32",
    "LEA_LLM_TEMPERATURE": "0",
    "LEA_TTS_OVERLAP": "after_reply",
}


def events_of(response: httpx.Response) -> Iterator[dict]:
    """The `data:` events of a server-sent event stream, parsed as JSON, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[len("data:") :].strip())
        else:
            assert line == "", f"not a server-sent event line: {line!r}"


def stream(client: httpx.Client, path: str, **kwargs) -> list[dict]:
    with client.stream("POST", path, headers=KEY, **kwargs) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        return list(events_of(response))


def check_chat_events(events: list[dict]) -> str:
    """Deltas, then one done event carrying the turn; returns the deltas joined."""
    *deltas, done = events
    assert deltas and all(set(e) == {"delta"} and e["delta"] for e in deltas), events
    assert done["done"] is True
    assert set(done) >= {"session_id", "conversation_id", "model", "provider", "usage", "assistant_audio_url"}
    assert done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"] > 0
    joined = "".join(e["delta"] for e in deltas)
    assert joined == done["response"]
    return joined


def stored_replies(lea: LeaServer, conversation_id: int) -> list[str]:
    return [m[3] for m in db_rows(lea.data_dir)["messages"] if m[1] == conversation_id and m[2] == "assistant"]


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    server = LeaServer(tmp_path_factory.mktemp("streams"), models_dir, SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_chat_stream_is_stored_like_a_chat_turn(lea: LeaServer) -> None:
    with lea.client() as client:
        events = stream(client, CHAT_STREAM, json={"message": ASK})
        joined = check_chat_events(events)
        done = events[-1]
        assert done["assistant_audio_url"] is None  # no speech for text turns by default
        assert stored_replies(lea, done["conversation_id"]) == [joined]

        # The same message in a new session, not streamed: rows of the same shape, each holding
        # its own turn's reply and usage. The two replies are two generations and are not
        # compared: even at temperature 0 a prompt evaluated from the cache or afresh can round
        # differently and tip the tiny model's argmax (seen on another CPU).
        plain = lea.chat(client, ASK).json()
        rows = db_rows(lea.data_dir)["messages"]
        streamed_rows = [r[2:] for r in rows if r[1] == done["conversation_id"]]
        plain_rows = [r[2:] for r in rows if r[1] == plain["conversation_id"]]

        def expected_rows(turn: dict) -> list[tuple]:
            usage = turn["usage"]
            return [
                ("user", ASK, None, None, None),
                ("assistant", turn["response"], turn["model"], usage["prompt_tokens"], usage["completion_tokens"]),
            ]

        assert streamed_rows == expected_rows(done)
        assert plain_rows == expected_rows(plain)
        # The same prompt either way: the same history, the same tokens before the reply.
        assert done["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]

        # The next turn of the streamed session sees the streamed turn in its history.
        follow = lea.chat(client, "Thanks. And the first tip?", session_id=done["session_id"]).json()
        assert follow["conversation_id"] == done["conversation_id"]
        prompts = [
            e["prompt"]
            for e in lea.log_events()
            if e.get("event") == "llm.prompt" and e.get("conversation_id") == done["conversation_id"] and "prompt" in e
        ]
        assert {"role": "user", "content": ASK} in prompts[-1]
        assert {"role": "assistant", "content": joined} in prompts[-1]


@pytest.mark.slow
def test_a_client_that_hangs_up_stores_nothing_and_stops_the_generation(lea: LeaServer) -> None:
    before = db_rows(lea.data_dir)
    cancelled_before = sum(1 for e in lea.log_events() if e.get("event") == "llm.cancelled")
    with lea.client() as client:
        with client.stream("POST", CHAT_STREAM, headers=KEY, json={"message": ASK}) as response:
            assert response.status_code == 200
            first = next(events_of(response))
            assert set(first) == {"delta"}
        # Closed after the first delta: the server notices and stops the generation between tokens.
        for _ in range(600):
            if sum(1 for e in lea.log_events() if e.get("event") == "llm.cancelled") > cancelled_before:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the generation was not cancelled")
        # Nothing was stored, and the server serves on.
        assert lea.chat(client, "Hello").status_code == 200
    rows = db_rows(lea.data_dir)
    assert len(rows["messages"]) == len(before["messages"]) + 2  # the "Hello" turn only
    assert ASK not in [m[3] for m in rows["messages"][len(before["messages"]) :]]


@pytest.mark.slow
def test_a_voice_client_that_hangs_up_before_done_stores_nothing(lea: LeaServer) -> None:
    """A voice stream's `done` waits for every spoken piece, and the turn is stored only then:
    a client that hangs up at the first piece (speech still under way) stores nothing, and the
    piece it was given is deleted with the rest of the speech; the next voice stream, read to
    the end, stores its two rows."""
    files = {"audio": ("clip.ogg", HUMAN_CLIP.read_bytes(), "audio/ogg")}
    before = len(db_rows(lea.data_dir)["messages"])

    def gave_up() -> int:
        return sum(1 for e in lea.log_events() if e.get("event") == "llm.cancelled")

    gave_up_before = gave_up()
    with lea.client() as client:
        with client.stream("POST", VOICE_STREAM, headers=KEY, files=files) as response:
            assert response.status_code == 200
            first_piece = next(e for e in events_of(response) if "audio_url" in e or "done" in e)
            assert set(first_piece) == {"audio_url", "index"}, first_piece
        # Hung up at the first piece: the turn gives up before it is stored (a stored turn
        # means it never will).
        wait_for(
            lambda: gave_up() > gave_up_before,
            "the voice turn gave up after its client hung up",
            while_possible=lambda: len(db_rows(lea.data_dir)["messages"]) == before,
        )
        assert len(db_rows(lea.data_dir)["messages"]) == before
        assert client.get(first_piece["audio_url"]).status_code == 404

        events = stream(client, VOICE_STREAM, files=files)
        audio, joined = check_voice_events(events)
        # The same recording, the same reply: the hang-up above came with pieces still to write.
        assert len(audio) >= 2
    rows = db_rows(lea.data_dir)["messages"]
    assert [r[1:4] for r in rows[before:]] == [
        (events[-1]["conversation_id"], "user", events[0]["transcription"]),
        (events[-1]["conversation_id"], "assistant", joined),
    ]


def test_errors_before_the_stream_are_ordinary_http_errors(lea: LeaServer) -> None:
    before = db_rows(lea.data_dir)
    with lea.client() as client:
        missing = client.post(CHAT_STREAM, headers=KEY, json={"message": "Hello", "conversation_id": 999999})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/json")
        assert missing.json()["success"] is False and missing.json()["detail"]

        assert client.post(CHAT_STREAM, json={"message": "Hello"}).status_code == 401
        assert client.post(CHAT_STREAM, headers={"X-API-Key": "wrong-key-0123456789"}, json={}).status_code == 401
        blank = client.post(CHAT_STREAM, headers=KEY, json={"message": "  "})
        assert blank.status_code == 400 and blank.json()["success"] is False

        garbage = client.post(VOICE_STREAM, headers=KEY, files={"audio": ("a.webm", b"not audio at all" * 64)})
        assert garbage.status_code == 400
        assert garbage.json()["success"] is False and garbage.json()["error"]
        assert client.post(VOICE_STREAM, files={"audio": ("a.ogg", HUMAN_CLIP.read_bytes())}).status_code == 401
    assert db_rows(lea.data_dir) == before


def check_voice_events(events: list[dict]) -> tuple[list[dict], str]:
    """transcription first, then deltas and audio_url events, done last; returns the audio
    events and the deltas joined."""
    first, *middle, done = events
    assert set(first) == {"transcription"} and first["transcription"].strip()
    deltas = [e for e in middle if "delta" in e]
    audio = [e for e in middle if "audio_url" in e]
    assert len(deltas) + len(audio) == len(middle), middle
    assert all(set(e) == {"audio_url", "index"} for e in audio)
    assert [e["index"] for e in audio] == list(range(len(audio))) and audio
    joined = "".join(e["delta"] for e in deltas)
    assert done["done"] is True and done["response"] == joined
    assert done["transcription"] == first["transcription"]
    assert done["assistant_audio_url"]
    return audio, joined


def decoded_seconds(data: bytes) -> float:
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 32000


def test_voice_stream_after_the_reply(lea: LeaServer) -> None:
    """CPU mode: speech starts once the reply is complete, so every audio event follows the last
    delta; each piece's file plays, and the session's erasure removes them all."""
    with lea.client() as client:
        events = stream(client, VOICE_STREAM, files={"audio": ("clip.ogg", HUMAN_CLIP.read_bytes(), "audio/ogg")})
        audio, joined = check_voice_events(events)
        last_delta = max(i for i, e in enumerate(events) if "delta" in e)
        assert min(events.index(e) for e in audio) > last_delta
        done = events[-1]
        assert stored_replies(lea, done["conversation_id"]) == [joined]

        pieces = [client.get(e["audio_url"]) for e in audio]
        assert all(r.status_code == 200 and r.headers["content-type"] == "audio/mpeg" for r in pieces)
        assert all(decoded_seconds(r.content) > 0.2 for r in pieces)
        whole = client.get(done["assistant_audio_url"])
        assert whole.status_code == 200
        # The pieces are the whole reply's speech, each encoded on its own.
        assert sum(decoded_seconds(r.content) for r in pieces) == pytest.approx(decoded_seconds(whole.content), abs=0.5)

        erased = client.post("/api/external/agent/erase", headers=KEY, json={"session_id": done["session_id"]})
        assert erased.json()["erased"]["audio_files"] == 1 + len(audio)
        assert all(client.get(e["audio_url"]).status_code == 404 for e in audio)
        assert client.get(done["assistant_audio_url"]).status_code == 404
    assert stored_replies(lea, done["conversation_id"]) == []


@pytest.mark.slow
def test_voice_stream_speaks_during_generation(make_server) -> None:
    """Overlap mode, engines side by side: the pieces' audio is announced while the reply is
    still being written, and stays in order with it."""
    lea = make_server(
        {
            **SETTINGS,
            "LEA_TTS_OVERLAP": "during_generation",
            "LEA_ENGINES_SHARE_CPU": "false",
            "LEA_LLM_MAX_REPLY_TOKENS": "96",
        }
    )
    clip = HUMAN_CLIP.read_bytes()
    interleaved = False
    with lea.client() as client:
        for _ in range(3):  # a reply of a single sentence has nothing to overlap: try another
            events = stream(client, VOICE_STREAM, files={"audio": ("clip.ogg", clip, "audio/ogg")})
            audio, joined = check_voice_events(events)
            assert stored_replies(lea, events[-1]["conversation_id"])[-1] == joined
            assert all(client.get(e["audio_url"]).status_code == 200 for e in audio)
            last_delta = max(i for i, e in enumerate(events) if "delta" in e)
            if min(events.index(e) for e in audio) < last_delta:
                interleaved = True
                break
    assert interleaved, "no audio event came before the reply was complete"
