"""Conversations longer than the context window: the oldest turns go, the system prompt stays."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime

import pytest

from lea_local.llm.base import ChatMessage
from lea_local.llm.context import HISTORY_CHARS_PER_TOKEN, PromptTooLong, fit_growing_history, fit_to_context
from lea_local.locales import system_prompt_path
from lea_local.runtime.inference_queue import InferenceQueue
from lea_local.store.conversations import HISTORY_PAGE, ConversationStore, TurnRecord
from lea_local.store.database import utcnow
from lea_local.pipeline.turns import ChatTurns
from tests.conftest import db_rows


def words(messages) -> int:
    return sum(len(m.content.split()) + 2 for m in messages)


def test_fit_keeps_system_and_latest_whole_turns():
    system = ChatMessage("system", "sys " * 10)
    history = []
    for i in range(10):
        history += [ChatMessage("user", f"question {i} " * 5), ChatMessage("assistant", f"answer {i} " * 5)]
    user = ChatMessage("user", "last one")
    prompt = fit_to_context(system, history, user, count_tokens=words, budget=100)
    assert prompt[0] == system and prompt[-1] == user
    assert prompt[1].role == "user"  # never an answer without its question
    assert words(prompt) <= 100
    assert words([system, *history[len(history) - len(prompt) + 2 - 2 :], user]) > 100 or len(prompt) - 2 == len(
        history
    )
    kept = prompt[1:-1]
    assert kept == history[len(history) - len(kept) :]  # the most recent ones, in order


def test_fit_keeps_everything_when_it_fits():
    system, user = ChatMessage("system", "s"), ChatMessage("user", "u")
    history = [ChatMessage("user", "a"), ChatMessage("assistant", "b")]
    assert fit_to_context(system, history, user, count_tokens=words, budget=1000) == [system, *history, user]


def test_fit_refuses_a_message_that_cannot_fit_alone():
    with pytest.raises(PromptTooLong):
        fit_to_context(ChatMessage("system", "s"), [], ChatMessage("user", "x " * 500), count_tokens=words, budget=100)


@pytest.mark.slow
def test_long_conversation_still_answers_with_system_prompt_kept(make_server):
    context, reply = 1024, 64
    lea = make_server(
        {"LEA_LLM_CONTEXT_SIZE": str(context), "LEA_LLM_MAX_REPLY_TOKENS": str(reply), "LEA_LOG_CONTENT": "true"}
    )
    system_prompt = system_prompt_path("fr-CA").read_text(encoding="utf-8").strip()
    session = None
    with lea.client() as client:
        for i in range(10):
            message = f"Tour {i} : " + "Le bien se situe au centre-ville, proche des écoles et des commerces. " * 4
            r = lea.chat(client, message, session_id=session)
            assert r.status_code == 200, r.text
            assert r.json()["response"].strip()
            session = r.json()["session_id"]
    prompts = [e for e in lea.log_events() if e.get("event") == "llm.prompt" and "prompt" in e]
    last = prompts[-1]
    assert last["history_messages"] == 18
    assert 0 < last["history_kept"] < 18  # the oldest turns were dropped, recent ones kept
    for event in prompts:
        assert event["prompt"][0] == {"role": "system", "content": system_prompt}
        assert event["prompt"][-1]["role"] == "user"
    assert last["prompt"][-1]["content"].startswith("Tour 9 :")
    stored = [m for m in db_rows(lea.data_dir)["messages"] if m[2] == "assistant"]
    assert len(stored) == 10
    assert all(m[5] <= context - reply for m in stored)  # real prompt token counts within budget


# --- a long conversation costs no more than a short one: only its newest part is read ---------


def conversation(turns: int, word: str = "mot") -> list[ChatMessage]:
    history = []
    for i in range(turns):
        history += [ChatMessage("user", f"{word} {i} " * 6), ChatMessage("assistant", f"{word} réponse {i} " * 4)]
    return history


@pytest.mark.parametrize("first_read", [1, 5, 40, 1000])
@pytest.mark.parametrize("budget", [30, 200, 5000])
def test_growing_history_gives_the_prompt_of_the_whole_history(first_read, budget):
    system, user = ChatMessage("system", "sys " * 5), ChatMessage("user", "dernière question")
    history = conversation(300)
    read = {"from": max(len(history) - first_read, 0)}

    def load_older():
        start = max(read["from"] - 7, 0)  # batches of 7 messages: turns get cut in two
        batch, read["from"] = history[start : read["from"]], start
        return batch, start == 0

    prompt = fit_growing_history(
        system,
        history[read["from"] :],
        user,
        count_tokens=words,
        budget=budget,
        complete=read["from"] == 0,
        load_older=load_older,
    )
    assert prompt == fit_to_context(system, history, user, count_tokens=words, budget=budget)
    kept = len(prompt) - 2
    assert read["from"] >= len(history) - max(kept, first_read) - 2 * 7  # read about what was kept, no more


class WordEngine:
    """A narrow stand-in for the model: one token per word (and two per message)."""

    provider = "test"
    model_name = "words"
    context_size = 1024

    def count_prompt_tokens(self, messages) -> int:
        return words(messages)


@pytest.mark.parametrize("word", ["mot", "x" * 60])  # long words: the first read is too short
def test_build_prompt_reads_and_counts_only_the_newest_history(tmp_path, caplog, word):
    store = ConversationStore.from_url(f"sqlite:///{tmp_path / 'lea.sqlite3'}")
    history = conversation(2_000, word)
    conversation_id = store.record_turn(
        TurnRecord("s", None, history[0].content, utcnow(), history[1].content, utcnow(), "m", 1, 1)
    )
    with sqlite3.connect(tmp_path / "lea.sqlite3") as db:  # the other 1,999 turns at once
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, ?, ?, ?)",
            [(conversation_id, m.role, m.content, utcnow().isoformat(" ")) for m in history[2:]],
        )
    turns = ChatTurns(
        engine=WordEngine(),  # type: ignore[arg-type]
        store=store,
        llm_queue=InferenceQueue("language model", max_waiting=1),
        system_prompt="Tu es Léa.",
        max_reply_tokens=24,
        temperature=0,
    )
    context = store.context_for("s", None, turns.history_chars)
    with caplog.at_level(logging.INFO, logger="lea_local.pipeline.turns"):
        prompt = turns.build_prompt(context, "Et ensuite ?")
    budget = WordEngine.context_size - 24
    whole = fit_to_context(turns.system_prompt, history, prompt[-1], count_tokens=words, budget=budget)
    assert prompt == whole
    fit = next(r for r in caplog.records if getattr(r, "event", None) == "llm.fit")
    assert 0 < fit.messages_kept < fit.messages_read < 4 * fit.messages_kept + 2 * HISTORY_PAGE
    assert fit.token_counts <= 16  # a few reads and a binary search over them, not 4,000 messages
    store.close()


@pytest.mark.slow
def test_a_long_conversation_reads_and_tokenises_only_what_can_fit(make_server):
    context, reply = 1024, 32
    lea = make_server(
        {
            "LEA_LLM_CONTEXT_SIZE": str(context),
            "LEA_LLM_MAX_REPLY_TOKENS": str(reply),
            "LEA_LOG_CONTENT": "true",
            "LEA_REQUEST_TIMEOUT_SECONDS": "600",  # what is checked is the work done, not its speed
        }
    )
    message = "Le T3 du centre-ville a deux chambres, un balcon et une cave ; le prix est négociable. "
    now = datetime.now(UTC).isoformat(" ")
    with sqlite3.connect(lea.data_dir / "lea.sqlite3") as db:
        conversation_id = db.execute(
            "INSERT INTO conversations (session_id, created_at, updated_at) VALUES ('long', ?, ?)", (now, now)
        ).lastrowid
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, ?, ?, ?)",
            [(conversation_id, "user" if i % 2 == 0 else "assistant", f"{i:05d} {message}", now) for i in range(4_000)],
        )
    with lea.client(timeout=600) as client:
        r = lea.chat(client, "Et la surface ?", session_id="long")
        assert r.status_code == 200, r.text
        assert r.json()["conversation_id"] == conversation_id
    fit = next(e for e in lea.log_events() if e.get("event") == "llm.fit")
    prompt = next(e for e in lea.log_events() if e.get("event") == "llm.prompt")["prompt"]
    assert prompt[-2]["content"].startswith("03999 ")  # the newest history is there
    assert 0 < fit["messages_kept"] < 4_000
    # What was read is bounded by the context window (8 characters a token: 7,936 characters of
    # ~95-character messages), not by the 4,000 messages stored.
    assert fit["messages_read"] <= (context - reply) * HISTORY_CHARS_PER_TOKEN // len(message) + 1
    assert fit["token_counts"] <= 12
