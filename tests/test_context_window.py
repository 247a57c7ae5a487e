"""Conversations longer than the context window: the oldest turns go, the system prompt stays."""

from __future__ import annotations

import pytest

from lea_local.llm.base import ChatMessage
from lea_local.llm.context import PromptTooLong, fit_to_context
from lea_local.services import DEFAULT_SYSTEM_PROMPT
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


def test_long_conversation_still_answers_with_system_prompt_kept(make_server):
    context, reply = 1024, 64
    lea = make_server(
        {"LEA_LLM_CONTEXT_SIZE": str(context), "LEA_LLM_MAX_REPLY_TOKENS": str(reply), "LEA_LOG_CONTENT": "true"}
    )
    system_prompt = DEFAULT_SYSTEM_PROMPT.read_text(encoding="utf-8").strip()
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
