"""Léa's turns grounded in the knowledge base, on the real server and models: the prompt the
engine received (logged with LEA_LOG_CONTENT) carries the passage that answers the question, the
response's `sources` name it (JSON, stream and voice), an unrelated question gets neither, a
deleted document is gone from the next turn, and a broken knowledge base does not fail a turn."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lea_local.knowledge import Passage
from lea_local.knowledge.grounding import Source, TurnGrounding, render
from lea_local.llm.base import ChatMessage
from tests.audio import CLIP
from tests.conftest import db_query, db_rows
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer

CORPUS = Path(__file__).parent / "fixtures" / "knowledge" / "corpus"
HEADERS = {"X-API-Key": API_KEY}
DOCUMENTS = "/api/knowledge/documents"
SETTINGS = {
    "LEA_LOG_CONTENT": "true",
    "LEA_LLM_MAX_REPLY_TOKENS": "16",
    "LEA_TTS_FOR_TEXT_CHAT": "false",
    "LEA_REQUEST_TIMEOUT_SECONDS": "600",  # what is checked is the prompt, not its speed on a shared CPU
}

ON_CALL_QUESTION = "Quel est le numéro de la ligne de garde pour les urgences ?"
ON_CALL_FACT = "418 555-0199"
UNRELATED_QUESTION = "Peux-tu m'écrire un court poème sur l'automne ?"
# The voice clip (tests/audio.py) speaks of a baseball league's best rookie pitcher's award.
SOCIAL_CLUB = """# Club social Horizon

## La ligue de balle

Chaque été, l'agence inscrit une équipe dans la ligue nationale de balle des courtiers. La
récompense du meilleur lanceur recrue de la ligue est une carte-cadeau de 250 $, remise à la fête
de la rentrée par la dirigeante d'agence. Le meilleur joueur de la relève reçoit un trophée.
""".encode()


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    server = LeaServer(tmp_path_factory.mktemp("knowledge-turns"), models_dir, SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(lea: LeaServer) -> Iterator[httpx.Client]:
    with lea.client(headers=HEADERS) as client:
        yield client


def add(client: httpx.Client, name: str, content: bytes | None = None) -> dict:
    data = content if content is not None else (CORPUS / name).read_bytes()
    r = client.post(DOCUMENTS, files={"file": (name, data)})
    assert r.status_code == 201, r.text
    return r.json()["document"]


def best_passage(client: httpx.Client, question: str) -> dict:
    r = client.get("/api/knowledge/search", params={"q": question, "limit": 1})
    assert r.status_code == 200, r.text
    return r.json()["passages"][0]


def turn_id() -> dict[str, str]:
    """A request id of the test's own, to find the turn's log lines."""
    return {"X-Request-ID": uuid.uuid4().hex}


def chat(client: httpx.Client, message: str, **fields: object) -> tuple[dict, str]:
    """The turn's response body, and its request id."""
    headers = turn_id()
    r = client.post(CHAT_PATH, json={"message": message, **fields}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json(), headers["X-Request-ID"]


def prompt_of(lea: LeaServer, request_id: str) -> list[dict]:
    """What the engine received for the turn of this request."""
    prompts = [
        e["prompt"]
        for e in lea.log_events()
        if e.get("event") == "llm.prompt" and "prompt" in e and e.get("request_id") == request_id
    ]
    assert len(prompts) == 1, f"{len(prompts)} prompts logged for request {request_id}"
    return prompts[0]


@pytest.mark.slow
def test_a_turn_gets_the_passage_that_answers_it_and_names_its_source(lea, client):
    manual = add(client, "manuel-agence.md")
    add(client, "faq-acheteurs.docx")
    add(client, "guide-formulaires-courtage.pdf")
    passage = best_passage(client, ON_CALL_QUESTION)
    assert passage["file_name"] == "manuel-agence.md" and ON_CALL_FACT in passage["text"]

    body, request_id = chat(client, ON_CALL_QUESTION)
    prompt = prompt_of(lea, request_id)
    sent = prompt[-1]
    assert sent["role"] == "user"
    assert passage["text"].strip() in sent["content"]
    assert sent["content"].endswith(ON_CALL_QUESTION)
    assert prompt[0]["role"] == "system" and ON_CALL_FACT not in prompt[0]["content"]
    source = {"title": manual["title"], "file": "manuel-agence.md", "section": passage["section"]}
    assert body["sources"][0] == source
    assert len(body["sources"]) == len({tuple(s.items()) for s in body["sources"]})  # each once
    assert all(set(s) == {"title", "file", "section"} for s in body["sources"])
    # The conversation keeps the user's own words: the passages are the turn's, not history.
    stored = [m[3] for m in db_rows(lea.data_dir)["messages"] if m[1] == body["conversation_id"] and m[2] == "user"]
    assert stored == [ON_CALL_QUESTION]


@pytest.mark.slow
def test_an_unrelated_question_gets_no_passage_and_no_sources(lea, client):
    add(client, "manuel-agence.md")
    body, request_id = chat(client, UNRELATED_QUESTION)
    assert body["sources"] == []
    assert prompt_of(lea, request_id)[-1] == {"role": "user", "content": UNRELATED_QUESTION}


@pytest.mark.slow
def test_the_streamed_turn_names_its_sources_in_the_done_event(lea, client):
    add(client, "manuel-agence.md")
    headers = turn_id()
    with client.stream("POST", CHAT_PATH + "/stream", json={"message": ON_CALL_QUESTION}, headers=headers) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    done = httpx.Response(200, content=lines[-1].removeprefix("data: ")).json()
    assert done["done"] is True
    assert "manuel-agence.md" in [s["file"] for s in done["sources"]]
    assert ON_CALL_FACT in prompt_of(lea, headers["X-Request-ID"])[-1]["content"]


@pytest.mark.slow
def test_a_voice_turn_is_grounded_in_what_was_said(lea, client):
    club = add(client, "club-social.md", SOCIAL_CLUB)
    headers = turn_id()
    r = client.post(VOICE_PATH, files={"audio": ("clip.wav", CLIP.read_bytes(), "audio/wav")}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    passage = best_passage(client, body["transcription"])
    assert passage["file_name"] == "club-social.md"
    assert {"title": club["title"], "file": "club-social.md", "section": passage["section"]} in body["sources"]
    assert "carte-cadeau de 250 $" in prompt_of(lea, headers["X-Request-ID"])[-1]["content"]


@pytest.mark.slow
def test_after_a_document_is_deleted_the_next_turn_no_longer_gets_its_passage(lea, client):
    manual = add(client, "manuel-agence.md")
    first, first_id = chat(client, ON_CALL_QUESTION)
    assert ON_CALL_FACT in prompt_of(lea, first_id)[-1]["content"]

    assert client.delete(f"{DOCUMENTS}/{manual['id']}").status_code == 200
    second, second_id = chat(client, ON_CALL_QUESTION, session_id=first["session_id"])
    assert second["conversation_id"] == first["conversation_id"]
    assert "manuel-agence.md" not in [s["file"] for s in second["sources"]]
    assert ON_CALL_FACT not in prompt_of(lea, second_id)[-1]["content"]


@pytest.mark.slow
def test_a_broken_knowledge_base_does_not_fail_the_turn(make_server):
    lea = make_server(SETTINGS)
    with lea.client(headers=HEADERS) as client:
        add(client, "manuel-agence.md")
        # The passage index is gone (a damaged database): searching it fails.
        db_query(lea.data_dir, "DROP TABLE knowledge_passages_fts")
        body, request_id = chat(client, ON_CALL_QUESTION)
    assert body["sources"] == [] and body["response"].strip()
    assert prompt_of(lea, request_id)[-1] == {"role": "user", "content": ON_CALL_QUESTION}
    assert any("knowledge search failed" in e.get("message", "") for e in lea.log_events())


@pytest.mark.slow
def test_turns_are_not_grounded_when_the_knowledge_base_is_disabled(make_server):
    lea = make_server({**SETTINGS, "LEA_KNOWLEDGE_ENABLED": "false"})
    with lea.client(headers=HEADERS) as client:
        add(client, "manuel-agence.md")
        body, request_id = chat(client, ON_CALL_QUESTION)
    assert body["sources"] == []
    assert prompt_of(lea, request_id)[-1] == {"role": "user", "content": ON_CALL_QUESTION}


# --- choosing the passages that fit (a narrow test of TurnGrounding.ground) ---------------------


def words_counted(messages) -> int:
    return sum(len(m.content.split()) for m in messages)


def passage(ident: int, words: int) -> Passage:
    return Passage(ident, 1, "guide.md", "Guide", "Section", " ".join(["mot"] * words), 1.0)


@pytest.mark.parametrize(
    ("sizes", "max_passages", "max_tokens", "budget", "kept"),
    [
        ([50, 50, 50, 50], 3, 1000, 10_000, [1, 2, 3]),  # at most max_passages
        ([50, 400, 50], 3, 200, 10_000, [1, 3]),  # one too long for the budget is skipped for a shorter one
        ([50, 50, 50], 3, 1000, 220, [1]),  # at most half the room the system prompt and message leave
        ([300], 3, 1000, 220, []),  # nothing fits: the bare message
    ],
)
def test_the_best_passages_that_fit_the_budget_are_kept(sizes, max_passages, max_tokens, budget, kept):
    grounding = TurnGrounding(knowledge=None, max_passages=max_passages, max_prompt_tokens=max_tokens)  # type: ignore[arg-type]
    system = ChatMessage("system", "Tu es Léa.")
    passages = [passage(i, size) for i, size in enumerate(sizes, 1)]
    grounded = grounding.ground(system, "Ma question ?", passages, count_tokens=words_counted, budget=budget)
    assert [p.id for p in grounded.passages] == kept
    if kept:
        assert grounded.message.content == render("Ma question ?", grounded.passages)
        assert grounded.sources == [Source("Guide", "guide.md", "Section")]
    else:
        assert grounded.message == ChatMessage("user", "Ma question ?") and grounded.sources == []
