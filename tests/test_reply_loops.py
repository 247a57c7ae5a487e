"""The tiny model's loops, on the real model: generation stops at the first repeat, and no stored
reply repeats a sentence or starts with a role label.

SmolLM2-135M at temperature 0 with llama.cpp's repeat penalty off (1.0) loops on most French
requests; the prompts below were found by trying, and `test_these_prompts_loop_without_the_detector`
checks they still do, so the other tests cannot pass merely because the model stopped by itself."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from lea_local.llm.base import ChatMessage
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine
from lea_local.llm.repetition import find_repetition, split_sentences
from lea_local.locales import system_prompt_path
from tests.conftest import db_rows

LOOPING_PROMPTS = [
    "Allume toutes les lumières dans le Rez-de-chaussée",
    "Éteins le chauffage de la chambre",
    "Ferme les volets du salon",
    "Quelle est la procédure pour une vente ?",
    "Estime le prix d'un appartement de 60 m² à Lyon",
    "Programme le chauffage du premier étage pour 7 heures",
]
MAX_TOKENS = 256
NO_PENALTY = 1.0  # the worst case: every loop is left to the detector
ROLE_LABEL = re.compile(
    r"\s*(?:<\|im_start\|>\s*)?(?:(?:l['’])?assistante?|l[ée]a|ai|ia|r[ée]ponse)\s*(?::|\n)", re.IGNORECASE
)


def _system_prompt() -> ChatMessage:
    return ChatMessage("system", system_prompt_path("fr-FR").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def engine(tiny_llm_path: Path) -> LlamaCppChatEngine:
    # One thread: on a busy 2-core machine, two spin-wait on each other (minutes per reply).
    return LlamaCppChatEngine(tiny_llm_path, context_size=2048, threads=1, repeat_penalty=NO_PENALTY)


def _messages(prompt: str) -> list[ChatMessage]:
    return [_system_prompt(), ChatMessage("user", prompt)]


def _most_repeated_sentence(text: str) -> int:
    counts = Counter(s.key for s in split_sentences(text, complete=True))
    return max(counts.values(), default=0)


@pytest.mark.slow
def test_these_prompts_loop_without_the_detector(engine: LlamaCppChatEngine) -> None:
    """The test data: raw generation (no detector) repeats itself within a few sentences."""
    for prompt in LOOPING_PROMPTS:
        prompt_tokens = engine._prompt_tokens(_messages(prompt))
        raw = engine._llama.create_completion(
            prompt=prompt_tokens, max_tokens=96, temperature=0.0, repeat_penalty=NO_PENALTY, stop=engine._stop
        )
        text = raw["choices"][0]["text"]
        assert find_repetition(text) is not None, f"{prompt!r} no longer loops: {text!r}"


@pytest.mark.slow
def test_generation_stops_at_the_first_repeat(engine: LlamaCppChatEngine) -> None:
    for prompt in LOOPING_PROMPTS:
        streamed: list[str] = []
        reply = engine.generate(_messages(prompt), max_tokens=MAX_TOKENS, temperature=0.0, on_text=streamed.append)
        assert reply.finish_reason == "stop"
        assert reply.completion_tokens < MAX_TOKENS, f"{prompt!r} ran to the limit: {reply.text!r}"
        assert find_repetition(reply.text) is None, reply.text
        assert _most_repeated_sentence(reply.text) <= 2
        # What was streamed before the loop was noticed may hold its beginning, never less
        # than the reply.
        assert "".join(streamed).startswith(reply.text)


def test_a_reply_that_does_not_loop_is_left_whole(engine: LlamaCppChatEngine) -> None:
    reply = engine.generate([_system_prompt(), ChatMessage("user", "Bonjour")], max_tokens=12, temperature=0.0)
    raw = engine._llama.create_completion(
        prompt=engine._prompt_tokens([_system_prompt(), ChatMessage("user", "Bonjour")]),
        max_tokens=12,
        temperature=0.0,
        repeat_penalty=NO_PENALTY,
        stop=engine._stop,
    )
    assert find_repetition(raw["choices"][0]["text"]) is None  # the premise
    assert reply.text == raw["choices"][0]["text"]


@pytest.mark.slow
def test_stored_replies_neither_loop_nor_start_with_a_role_label(make_server) -> None:
    lea = make_server(
        {
            "LEA_LLM_TEMPERATURE": "0",
            "LEA_LLM_MAX_REPLY_TOKENS": str(MAX_TOKENS),
            "LEA_LLM_REPEAT_PENALTY": str(NO_PENALTY),
            "LEA_LOCALE": "fr-FR",
            "LEA_LLM_THREADS": "1",
        }
    )
    answered = {}
    with lea.client() as client:
        for prompt in LOOPING_PROMPTS:
            response = lea.chat(client, prompt)
            assert response.status_code == 200, response.text
            answered[prompt] = response.json()["response"]

    replies = [row for row in db_rows(lea.data_dir)["messages"] if row[2] == "assistant"]
    assert [row[3] for row in replies] == list(answered.values())
    for _id, _conversation, _role, content, _model, _prompt_tokens, completion_tokens in replies:
        assert content.strip(), "an empty reply was stored"
        assert _most_repeated_sentence(content) <= 2, content
        assert find_repetition(content) is None, content
        assert not ROLE_LABEL.match(content), content
        assert completion_tokens < MAX_TOKENS, content
