"""POST /api/external/agent/chat/voice on the real server: real ffmpeg, faster-whisper base,
SmolLM2 and Piper. Recordings in every container browsers produce, under both field names."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.audio import BROWSER_FORMATS, CLIP, CLIP_KEY_WORDS, OTHER_FORMATS, encode, normalise_words
from tests.conftest import db_rows
from tests.server import API_KEY, VOICE_PATH

HEADERS = {"X-API-Key": API_KEY}


def post_voice(
    server, data: bytes, *, field: str = "audio", mime: str = "audio/webm", name: str = "rec.webm", **form
) -> httpx.Response:
    with server.client() as client:
        return client.post(VOICE_PATH, files={field: (name, data, mime)}, data=form, headers=HEADERS)


def assert_heard_the_clip(body: dict) -> None:
    heard = normalise_words(body["transcription"]).split()
    missing = [w for w in CLIP_KEY_WORDS if normalise_words(w) not in heard]
    assert len(missing) <= 1, f"transcription {body['transcription']!r} misses {missing}"


@pytest.mark.parametrize("field", ["audio", "file"])
@pytest.mark.parametrize("container", list(BROWSER_FORMATS))
def test_browser_recordings_are_transcribed_and_answered(server, container, field):
    args, mime, name = BROWSER_FORMATS[container]
    r = post_voice(server, encode(CLIP, args), field=field, mime=mime, name=name)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {
        "success",
        "transcription",
        "response",
        "session_id",
        "conversation_id",
        "assistant_audio_url",
        "model",
        "provider",
        "usage",
        "sources",
    }
    assert body["success"] is True
    assert_heard_the_clip(body)
    assert body["response"].strip()
    assert uuid.UUID(body["session_id"])
    assert isinstance(body["conversation_id"], int)
    assert body["assistant_audio_url"].startswith(f"{server.url}/media/tts/")


@pytest.mark.parametrize("container", list(OTHER_FORMATS))
def test_other_audio_files_are_accepted(server, container):
    args, mime, name = OTHER_FORMATS[container]
    r = post_voice(server, encode(CLIP, args), mime=mime, name=name)
    assert r.status_code == 200, r.text
    assert_heard_the_clip(r.json())


def test_container_is_detected_from_the_bytes_not_the_name_or_type(server):
    """Safari's MP4 sent with a WebM name and type, as a misconfigured client might."""
    args, _, _ = BROWSER_FORMATS["mp4-aac"]
    r = post_voice(server, encode(CLIP, args), mime="audio/webm", name="recording.webm")
    assert r.status_code == 200, r.text
    assert_heard_the_clip(r.json())


def test_audio_wins_when_both_fields_are_sent(server):
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    with server.client() as client:
        r = client.post(
            VOICE_PATH,
            files={
                "audio": (name, encode(CLIP, args), mime),
                "file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/png"),
            },
            headers=HEADERS,
        )
    assert r.status_code == 200, r.text
    assert_heard_the_clip(r.json())


@pytest.mark.slow
def test_voice_turn_is_the_same_conversation_turn_as_text(server):
    with server.client() as client:
        first = server.chat(client, "Bonjour, je prépare une estimation.").json()
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    r = post_voice(
        server,
        encode(CLIP, args),
        session_id=first["session_id"],
        conversation_id=str(first["conversation_id"]),
        user_id="agent-42",
        user_email="agent42@agence.fr",
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"] == first["session_id"]
    assert body["conversation_id"] == first["conversation_id"]
    rows = db_rows(server.data_dir)
    messages = [m for m in rows["messages"] if m[1] == first["conversation_id"]]
    assert [m[2] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2][3] == body["transcription"] and messages[3][3] == body["response"]
    conversation = [c for c in rows["conversations"] if c[0] == first["conversation_id"]][0]
    assert conversation[2:] == ("agent-42", "agent42@agence.fr")
    assert "agent42@agence.fr" not in server.log_text()


def test_new_voice_session_stores_user_identity(server):
    args, mime, name = BROWSER_FORMATS["ogg-opus"]
    r = post_voice(server, encode(CLIP, args), mime=mime, name=name, user_id="u-7", user_email="u7@agence.fr")
    assert r.status_code == 200, r.text
    conversation = [c for c in db_rows(server.data_dir)["conversations"] if c[0] == r.json()["conversation_id"]][0]
    assert conversation[1:] == (r.json()["session_id"], "u-7", "u7@agence.fr")


@pytest.mark.slow
def test_openai_whisper_engine_serves_voice_turns(make_server, models_dir):
    checkpoint = models_dir / "openai-whisper-base-from-ct2" / "base.pt"
    assert checkpoint.is_file(), "scripts/install --test builds it with tests/tools/ct2_to_openai_whisper.py"
    lea = make_server(
        {"LEA_ASR_ENGINE": "openai-whisper", "LEA_ASR_MODEL": str(checkpoint), "LEA_LLM_MAX_REPLY_TOKENS": "32"}
    )
    with lea.client() as client:
        assert client.get("/ready").json()["models"]["asr"] == "openai-whisper:base"
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    r = post_voice(lea, encode(CLIP, args), mime=mime, name=name)
    assert r.status_code == 200, r.text
    assert_heard_the_clip(r.json())
