"""Every error of the text endpoint: its status, and a body in the contract's shape
`{"success": false, "error": "<clear message>", "detail": "<same>"}`. None of them stores anything."""

from __future__ import annotations

import pytest

from tests.conftest import db_rows
from tests.server import API_KEY, CHAT_PATH

HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}


@pytest.fixture
def unchanged_db(server):
    before = db_rows(server.data_dir)
    yield
    assert db_rows(server.data_dir) == before


def post_raw(server, body: bytes | str, headers=None):
    with server.client() as client:
        return client.post(CHAT_PATH, content=body, headers=headers or HEADERS)


def assert_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["success"] is False
    assert set(body) == {"success", "error", "detail"}
    assert isinstance(body["error"], str) and body["error"] and body["detail"] == body["error"]
    for word in words:
        assert word.lower() in body["error"].lower(), body["error"]


def test_malformed_json_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour"'), 400)


def test_body_that_is_not_an_object_is_400(server, unchanged_db):
    assert_error(post_raw(server, '["Bonjour"]'), 400)


def test_empty_body_is_400(server, unchanged_db):
    assert_error(post_raw(server, ""), 400)


def test_missing_message_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"session_id": "abc"}'), 400, "message")


def test_message_of_wrong_type_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": 42}'), 400, "message")


def test_null_message_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": null}'), 400, "message")


def test_blank_message_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "   \\n\\t "}'), 400, "message", "blank")


def test_message_over_the_maximum_length_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "%s"}' % ("a" * 4001)), 400, "too long")


def test_session_id_of_wrong_type_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour", "session_id": 12}'), 400, "session_id")


def test_conversation_id_as_string_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour", "conversation_id": "12"}'), 400, "conversation_id")


def test_conversation_id_as_boolean_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour", "conversation_id": true}'), 400, "conversation_id")


def test_conversation_id_as_float_is_400(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour", "conversation_id": 1.5}'), 400, "conversation_id")


def test_unknown_conversation_id_is_404(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour", "conversation_id": 99999999}'), 404, "conversation")


def test_missing_api_key_is_401(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour"}', {"Content-Type": "application/json"}), 401, "X-API-Key")


def test_wrong_api_key_is_401(server, unchanged_db):
    assert_error(post_raw(server, '{"message": "Bonjour"}', {"X-API-Key": "not-the-key"}), 401, "X-API-Key")


def test_api_key_is_checked_before_the_body(server, unchanged_db):
    assert_error(post_raw(server, "{not json", {"X-API-Key": "nope"}), 401)


def test_unknown_route_is_404(server):
    with server.client() as client:
        assert_error(client.get("/api/external/agent/nothing", headers=HEADERS), 404, "route")


def test_wrong_method_is_405(server):
    with server.client() as client:
        assert_error(client.get(CHAT_PATH, headers=HEADERS), 405, "GET")


@pytest.mark.parametrize(
    ("raised", "status", "message"),
    [
        ("engine", 500, "The language model failed to process the request"),
        ("queue", 503, "busy"),
        ("missing", 404, "conversation 7 not found"),
        ("unexpected", 500, "Internal server error"),
    ],
)
def test_an_error_after_a_stream_began_is_its_last_event_with_the_routes_status(raised, status, message, caplog):
    """Narrow: the event a streamed turn ends with, for each kind of error (api/streaming.py)."""
    from lea_local.api.streaming import error_event
    from lea_local.runtime.inference_queue import QueueFull
    from lea_local.store.conversations import ConversationNotFound
    from lea_local.pipeline.errors import EngineFailure

    errors = {
        "engine": EngineFailure("language model"),
        "queue": QueueFull("busy", 5, "llm"),
        "missing": ConversationNotFound("conversation 7 not found"),
        "unexpected": KeyError("/srv/secret/path"),
    }
    assert error_event(errors[raised]) == {"error": message, "detail": message, "status": status}
    assert ("a streamed turn failed" in caplog.text) == (raised == "unexpected")
