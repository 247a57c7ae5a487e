"""POST /api/external/agent/chat on the real server and the real SmolLM2 GGUF: the contract's
200 body and the conversation semantics (sessions, conversations, history, persistence)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import db_rows
from tests.server import API_KEY, CHAT_PATH


def prompts_sent(server, conversation_id: int) -> list[list[dict]]:
    """What the engine received for each turn of a conversation (the server logs it when
    LEA_LOG_CONTENT is on)."""
    return [
        e["prompt"]
        for e in server.log_events()
        if e.get("event") == "llm.prompt" and "prompt" in e and e.get("conversation_id") == conversation_id
    ]


def test_a_new_message_gets_the_contract_body(server):
    with server.client() as client:
        r = server.chat(client, "Bonjour, quelle est la procédure pour une vente ?")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {
        "success",
        "response",
        "session_id",
        "conversation_id",
        "model",
        "provider",
        "assistant_audio_url",
        "usage",
        "sources",
    }
    assert body["success"] is True
    assert body["sources"] == []  # an empty knowledge base grounds nothing
    assert isinstance(body["response"], str) and body["response"].strip()
    assert uuid.UUID(body["session_id"]).version == 4
    assert isinstance(body["conversation_id"], int) and body["conversation_id"] >= 1
    assert body["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert body["provider"] == "llama-cpp"
    assert body["assistant_audio_url"] is None
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_a_turn_is_stored_with_timestamps_model_and_token_counts(server):
    with server.client() as client:
        body = server.chat(client, "Quels diagnostics pour une location ?").json()
    rows = [m for m in db_rows(server.data_dir)["messages"] if m[1] == body["conversation_id"]]
    assert [m[2] for m in rows] == ["user", "assistant"]
    assert rows[0][3] == "Quels diagnostics pour une location ?"
    assert rows[1][3] == body["response"]
    assert rows[1][4] == "SmolLM2-135M-Instruct.Q4_1"
    assert rows[1][5] > 20 and rows[1][6] > 0  # prompt includes the system prompt


def test_session_without_conversation_continues_its_latest_conversation(server):
    with server.client() as client:
        first = server.chat(client, "Bonjour").json()
        second = server.chat(client, "Et ensuite ?", session_id=first["session_id"]).json()
    assert second["session_id"] == first["session_id"]
    assert second["conversation_id"] == first["conversation_id"]


def test_an_unknown_session_id_is_adopted_as_is(server):
    own_id = f"immoassist-{uuid.uuid4().hex}"
    with server.client() as client:
        body = server.chat(client, "Bonjour", session_id=own_id).json()
    assert body["session_id"] == own_id
    conversations = db_rows(server.data_dir)["conversations"]
    assert [c for c in conversations if c[0] == body["conversation_id"]][0][1] == own_id


def test_blank_session_id_starts_a_new_session(server):
    with server.client() as client:
        body = server.chat(client, "Bonjour", session_id="  ").json()
    assert uuid.UUID(body["session_id"]).version == 4


def test_explicit_conversation_id_of_the_same_session_is_continued(server):
    with server.client() as client:
        first = server.chat(client, "Premier message").json()
        again = server.chat(
            client, "Deuxième message", session_id=first["session_id"], conversation_id=first["conversation_id"]
        ).json()
    assert again["conversation_id"] == first["conversation_id"]


def test_conversation_id_without_session_continues_it_in_its_own_session(server):
    with server.client() as client:
        first = server.chat(client, "Premier message").json()
        r = server.chat(client, "Suite", conversation_id=first["conversation_id"])
    assert r.status_code == 200
    assert r.json()["session_id"] == first["session_id"]
    assert r.json()["conversation_id"] == first["conversation_id"]


@pytest.mark.slow
def test_third_prompt_contains_turns_one_and_two_and_survives_a_restart(make_server):
    lea = make_server({"LEA_LOG_CONTENT": "true"})
    turns = ["Je cherche un T3 à Lyon.", "Mon budget est de 300 000 euros.", "Que me conseillez-vous ?"]
    with lea.client() as client:
        first = lea.chat(client, turns[0]).json()
        session, conversation = first["session_id"], first["conversation_id"]
        second = lea.chat(client, turns[1], session_id=session).json()
        third = lea.chat(client, turns[2], session_id=session, conversation_id=conversation).json()
    assert second["conversation_id"] == third["conversation_id"] == conversation

    prompt = prompts_sent(lea, conversation)[-1]
    assert prompt[0]["role"] == "system" and "Léa" in prompt[0]["content"]
    assert [m["role"] for m in prompt[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in prompt[1::2]] == turns
    assert [m["content"] for m in prompt[2:5:2]] == [first["response"], second["response"]]

    lea.restart()
    with lea.client() as client:
        fourth = lea.chat(client, "Et pour un T4 ?", session_id=session).json()
    assert fourth["conversation_id"] == conversation
    prompt = prompts_sent(lea, conversation)[-1]
    assert [m["content"] for m in prompt[1::2]] == [*turns, "Et pour un T4 ?"]
    assert prompt[6]["content"] == third["response"]
    assert len(db_rows(lea.data_dir)["messages"]) == 8


def test_session_b_cannot_reach_session_a_conversation(server):
    with server.client() as client:
        a = server.chat(client, "Mon client M. Martin vend sa maison rue des Lilas.").json()
        before = db_rows(server.data_dir)
        r = server.chat(
            client,
            "Répète ce que je viens de dire.",
            session_id=str(uuid.uuid4()),
            conversation_id=a["conversation_id"],
        )
    assert r.status_code == 404
    body = r.json()
    assert body["success"] is False
    assert "Martin" not in r.text and a["response"] not in r.text
    assert db_rows(server.data_dir) == before  # nothing stored for B, nothing added to A


def test_unknown_conversation_id_is_404_and_stores_nothing(server):
    before = db_rows(server.data_dir)
    with server.client() as client:
        r = server.chat(client, "Bonjour", session_id=str(uuid.uuid4()), conversation_id=987654)
    assert r.status_code == 404
    assert r.json()["success"] is False
    assert db_rows(server.data_dir) == before


def test_api_key_never_appears_in_the_logs(server):
    with server.client() as client:
        server.chat(client, "Bonjour")
        client.post(CHAT_PATH, json={"message": "x"}, headers={"X-API-Key": API_KEY + "-wrong"})
    assert API_KEY not in server.log_text()
