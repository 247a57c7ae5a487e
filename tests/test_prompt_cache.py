"""The LLM prompt cache (lea_local/llm/prompt_cache.py) on the tiny preset's real model: it stays
within its capacity counting everything it holds, a restored conversation answers exactly as a
cold one, the least recently used state goes first, and the server publishes its counters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lea_local.llm.base import ChatMessage
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine
from lea_local.llm.prompt_cache import PromptCache
from lea_local.services import read_system_prompt
from lea_local.settings import Settings
from tests.server import API_KEY

MIB = 1024 * 1024
SYSTEM = ChatMessage("system", "Tu es Léa, l'assistante d'une agence immobilière. Réponds en français, brièvement.")
QUESTIONS = [
    "Quels diagnostics pour vendre une maison ?",
    "Comment estimer un appartement à Lyon ?",
    "Que doit contenir un mandat exclusif ?",
    "Quel est le délai entre compromis et acte ?",
    "Comment préparer une visite ?",
    "Quels frais de notaire pour un achat ?",
    "Comment rédiger une annonce de location ?",
    "Faut-il un état des lieux pour une vente ?",
]


def make_engine(path: Path, cache_bytes: int) -> LlamaCppChatEngine:
    return LlamaCppChatEngine(path, context_size=2048, threads=2, prompt_cache_bytes=cache_bytes)


def ask(engine: LlamaCppChatEngine, *messages: ChatMessage, tokens: int = 24) -> str:
    return engine.generate([SYSTEM, *messages], max_tokens=tokens, temperature=0.0).text


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024  # type: ignore[union-attr]


def stats(engine: LlamaCppChatEngine) -> dict[str, int]:
    values = engine.prompt_cache_stats()
    assert values is not None
    return values


def held_states(engine: LlamaCppChatEngine) -> list:
    cache = engine._llama.cache
    assert isinstance(cache, PromptCache)
    return [entry.state for entry in cache._entries.values()]


def test_cache_never_holds_more_than_its_capacity(tiny_llm_path: Path) -> None:
    capacity = 12 * MIB
    engine = make_engine(tiny_llm_path, capacity)
    before = rss_mib()
    for question in QUESTIONS:
        ask(engine, ChatMessage("user", question))
        s = stats(engine)
        assert 0 < s["bytes"] <= capacity
        states = held_states(engine)
        assert len(states) == s["entries"]
        # What it counts covers every byte it holds: the KV state (its mapping) and the arrays.
        held = sum(len(st.kv) + st.input_ids.nbytes + st.scores.nbytes for st in states)
        assert held <= s["bytes"]
        assert all(st.scores.nbytes == 0 for st in states)  # no copy of the logits array
    assert stats(engine)["evictions"] > 0  # eight conversations did not fit: some were dropped
    # The process itself: llama-cpp-python's LlamaRAMCache grew by ~100 MB per conversation here
    # (a logits copy per state). The allowance is the context's own KV buffer and allocator slack.
    assert rss_mib() - before <= capacity / MIB + 120


def test_restored_conversation_answers_as_a_cold_one(tiny_llm_path: Path) -> None:
    """The conversation's second turn after another conversation took the live context (its state
    restored from the cache) gives, token for token, the reply of an engine without any cache that
    ran only this conversation. (The same prompt evaluated in one batch instead, or its last
    token evaluated again alone, may differ in the last bits of a float and so in a near-tie
    token: the comparison is with the same evaluation order.)"""
    first = ChatMessage("user", QUESTIONS[0])
    follow_up = ChatMessage("user", "Et combien de temps sont-ils valables ?")

    cold = make_engine(tiny_llm_path, 0)
    assert cold.prompt_cache_stats() is None
    cold_reply = ChatMessage("assistant", ask(cold, first))
    cold_second = ask(cold, first, cold_reply, follow_up)

    engine = make_engine(tiny_llm_path, 256 * MIB)
    reply = ChatMessage("assistant", ask(engine, first))
    assert reply == cold_reply
    ask(engine, ChatMessage("user", QUESTIONS[1]))  # another conversation takes the live context
    before = stats(engine)
    restored = ask(engine, first, reply, follow_up)
    after = stats(engine)
    assert after["hits"] == before["hits"] + 1
    assert after["reused_tokens"] - before["reused_tokens"] >= engine.count_prompt_tokens([SYSTEM, first])
    assert restored == cold_second
    assert restored  # the model did answer


def test_least_recently_used_state_is_evicted_first(tiny_llm_path: Path) -> None:
    # Long enough that restoring one spares more than MIN_RESTORE_GAIN_TOKENS.
    detail = "Détaillez chaque étape, avec ses délais et ses coûts."
    a, b, c = (ChatMessage("user", f"{q} {detail}") for q in QUESTIONS[:3])
    probe = make_engine(tiny_llm_path, 256 * MIB)
    ask(probe, a, tokens=8)
    one_state = stats(probe)["bytes"]
    # Room for two such conversations, not three.
    engine = make_engine(tiny_llm_path, int(one_state * 2.6))
    ask(engine, a, tokens=8)
    ask(engine, b, tokens=8)
    assert stats(engine)["entries"] == 2
    ask(engine, a, tokens=8)  # a restored: b is now the least recently used
    assert stats(engine)["hits"] == 1
    ask(engine, c, tokens=8)  # needs room: b goes
    s = stats(engine)
    assert s["entries"] == 2 and s["evictions"] == 1

    ask(engine, a, tokens=8)
    assert stats(engine)["hits"] == 2  # a was kept
    misses = stats(engine)["misses"]
    ask(engine, b, tokens=8)
    assert stats(engine)["hits"] == 2 and stats(engine)["misses"] == misses + 1  # b was not


def test_reset_cache_forgets_every_state(tiny_llm_path: Path) -> None:
    engine = make_engine(tiny_llm_path, 64 * MIB)
    ask(engine, ChatMessage("user", QUESTIONS[0]), tokens=8)
    assert stats(engine)["entries"] == 1
    engine.reset_cache()
    s = stats(engine)
    assert s["entries"] == 0 and s["bytes"] == 0


# Short replies, and a time budget that a busy machine does not exceed: these count, not time.
SLOW_MACHINE_OK = {"LEA_LLM_MAX_REPLY_TOKENS": "16", "LEA_REQUEST_TIMEOUT_SECONDS": "600"}


def metric_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        match = re.match(r"^lea_llm_prompt_cache_(\w+) ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


@pytest.mark.slow
def test_server_prompt_cache_stays_within_its_setting(make_server) -> None:
    lea = make_server({"LEA_LLM_PROMPT_CACHE_MB": "16", **SLOW_MACHINE_OK})
    with lea.client(timeout=660) as client:
        first = lea.chat(client, QUESTIONS[0]).json()
        for question in QUESTIONS[1:6]:  # five more conversations, each its own session
            assert lea.chat(client, question).status_code == 200
        # The first conversation's state was evicted long ago; the last one's is live.
        response = lea.chat(client, "Et ensuite ?", session_id=first["session_id"])
        assert response.status_code == 200
        metrics = metric_values(client.get("/metrics", headers={"X-API-Key": API_KEY}).text)
    assert metrics["capacity_bytes"] == 16 * MIB
    assert 0 < metrics["bytes"] <= 16 * MIB
    assert metrics["evictions_total"] > 0
    assert metrics["misses_total"] >= 7
    assert metrics["looked_up_tokens_total"] > metrics["reused_tokens_total"] > 0


@pytest.mark.slow
def test_server_restores_a_conversation_from_the_cache(make_server) -> None:
    lea = make_server(SLOW_MACHINE_OK)
    with lea.client(timeout=660) as client:
        first = lea.chat(client, QUESTIONS[0]).json()
        assert lea.chat(client, QUESTIONS[1]).status_code == 200  # another session in between
        before = metric_values(client.get("/metrics", headers={"X-API-Key": API_KEY}).text)
        assert lea.chat(client, "Et ensuite ?", session_id=first["session_id"]).status_code == 200
        after = metric_values(client.get("/metrics", headers={"X-API-Key": API_KEY}).text)
    assert after["hits_total"] == before["hits_total"] + 1


@pytest.mark.slow
def test_the_first_turn_after_start_evaluates_only_its_own_words(make_server, tiny_llm_path: Path) -> None:
    """The warm-up leaves the system prompt evaluated: the first turn reuses it (on 2 cores, the
    first realtime answer came 2.5 s later without)."""
    lea = make_server(SLOW_MACHINE_OK)
    system = ChatMessage("system", read_system_prompt(Settings()))
    system_tokens = make_engine(tiny_llm_path, 0).count_prompt_tokens([system])
    with lea.client(timeout=660) as client:
        before = metric_values(client.get("/metrics", headers={"X-API-Key": API_KEY}).text)
        assert lea.chat(client, QUESTIONS[0]).status_code == 200
        after = metric_values(client.get("/metrics", headers={"X-API-Key": API_KEY}).text)
    assert after["reused_tokens_total"] - before["reused_tokens_total"] >= 0.9 * system_tokens
