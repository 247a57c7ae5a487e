"""Lengths are checked before anything reads a value character by character: `is_blank` is a
Python loop, and 24 MB of zero-width spaces in one field held the event loop for 0.7 s."""

from __future__ import annotations

import pytest

from lea_local.api import validation
from lea_local.api.errors import ApiError
from tests.audio import CLIP, OTHER_FORMATS, encode
from tests.conftest import db_rows
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH

ZWSP = "\u200b"
HEADERS = {"X-API-Key": API_KEY}
MAX_MESSAGE_CHARS = 4000  # the default LEA_MAX_MESSAGE_CHARS


def error_of(r) -> str:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["success"] is False
    return body["error"]


def test_a_message_of_invisible_characters_over_the_limit_is_too_long(server):
    before = db_rows(server.data_dir)
    with server.client() as client:
        r = client.post(CHAT_PATH, json={"message": ZWSP * (MAX_MESSAGE_CHARS + 1)}, headers=HEADERS)
        assert "too long" in error_of(r)
        r = client.post(CHAT_PATH, json={"message": ZWSP * MAX_MESSAGE_CHARS}, headers=HEADERS)
        assert "blank" in error_of(r)  # within the limit, blank is still refused as blank
    assert db_rows(server.data_dir) == before


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("session_id", ZWSP * 129, "session_id is too long"),
        ("user_id", " " * 257, "user_id is too long"),
        ("conversation_id", ZWSP * 100_000, "conversation_id must be a positive integer"),
    ],
)
def test_long_invisible_multipart_fields_are_refused_before_any_decoding(server, field, value, words):
    """Today's code took these as blank (absent) and went on to transcribe the recording."""
    wav = encode(CLIP, OTHER_FORMATS["wav"][0], input_args=["-t", "2"])
    before = db_rows(server.data_dir)
    with server.client() as client:
        r = client.post(VOICE_PATH, files={"audio": ("r.wav", wav, "audio/wav")}, data={field: value}, headers=HEADERS)
    assert words in error_of(r)
    assert db_rows(server.data_dir) == before


@pytest.fixture
def is_blank_forbidden(monkeypatch):
    def refuse(text: str) -> bool:
        raise AssertionError(f"is_blank ran on {len(text)} characters before the length check")

    monkeypatch.setattr(validation, "is_blank", refuse)


def test_length_is_checked_before_is_blank(is_blank_forbidden):
    with pytest.raises(ApiError, match="too long"):
        validation.clean_message(ZWSP * 11, max_chars=10)
    with pytest.raises(ApiError, match="session_id is too long"):
        validation.clean_identifier(ZWSP * 129, "session_id")
    with pytest.raises(ApiError, match="positive integer"):
        validation.parse_conversation_id(" " * 65)


def test_blank_values_within_the_limits_are_still_blank():
    with pytest.raises(ApiError, match="blank"):
        validation.clean_message(ZWSP * 10, max_chars=10)
    assert validation.clean_identifier(ZWSP * 128, "session_id") is None
    assert validation.parse_conversation_id(" " * 64) is None
    assert validation.parse_conversation_id(" 42 ") == 42
