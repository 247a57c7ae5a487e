"""The llama.cpp engine stops when its turn is cancelled, even in the middle of a long prompt's
evaluation (llm/abort.py), and works as before afterwards. Real model (the tiny preset's
SmolLM2-135M); assertions are on the tokens llama.cpp evaluated, not on wall-clock time."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from lea_local.llm import abort
from lea_local.llm.base import ChatMessage
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine
from lea_local.runtime.cancellation import GenerationCancelled
from tests.fixtures.messages import LONG_MESSAGE
from tests.waiting import wait_for

LONG_PROMPT = [ChatMessage("user", LONG_MESSAGE)]
SHORT = [ChatMessage("user", "Bonjour, qui es-tu ?")]


@pytest.fixture(scope="module")
def engine(tiny_llm_path: Path) -> LlamaCppChatEngine:
    # With a prompt cache, as the server runs it: an aborted prompt must not be kept in it.
    return LlamaCppChatEngine(tiny_llm_path, context_size=4096, threads=2, prompt_cache_bytes=256 * 1024 * 1024)


def evaluated(engine: LlamaCppChatEngine) -> int:
    """Tokens of the current prompt llama.cpp has evaluated (updated after each batch)."""
    return engine._llama.n_tokens


def generate_in_thread(engine: LlamaCppChatEngine, messages, cancel: threading.Event, **kwargs):
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["reply"] = engine.generate(messages, temperature=0.0, cancel=cancel, **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def cancel_after_the_first_batch(engine: LlamaCppChatEngine) -> GenerationCancelled:
    """Generate from LONG_PROMPT, cancelled once its first batch is evaluated (most of the
    evaluation still to go); what the generation raised."""
    cancel = threading.Event()
    thread, outcome = generate_in_thread(engine, LONG_PROMPT, cancel, max_tokens=32)
    wait_for(lambda: evaluated(engine) >= 512, "the first batch evaluated", while_possible=thread.is_alive)
    cancel.set()
    thread.join()
    assert isinstance(outcome.get("error"), GenerationCancelled), outcome
    return outcome["error"]


def test_a_cancel_during_the_prompts_evaluation_stops_it_there(engine: LlamaCppChatEngine) -> None:
    prompt_tokens = engine.count_prompt_tokens(LONG_PROMPT)
    assert prompt_tokens > 4 * 512
    engine.reset_cache()
    cancelled = cancel_after_the_first_batch(engine)

    assert "during evaluation" in str(cancelled)
    assert cancelled.completion_tokens == 0
    # Stopped inside the evaluation: without the abort it would have gone through every batch
    # and its first token before looking at `cancel`.
    assert evaluated(engine) < prompt_tokens - 512


def test_the_engine_answers_as_before_after_an_aborted_evaluation(engine: LlamaCppChatEngine) -> None:
    engine.reset_cache()
    before = engine.generate(SHORT, max_tokens=24, temperature=0.0).text
    cached = engine.prompt_cache_stats()["entries"]
    cancel_after_the_first_batch(engine)
    assert engine.prompt_cache_stats()["entries"] == cached  # nothing of the aborted prompt kept

    # The flag is lowered: a turn with a cancel event that is never set runs to its end, and
    # the context holds nothing of the aborted prompt.
    thread, outcome = generate_in_thread(engine, SHORT, threading.Event(), max_tokens=24)
    thread.join()
    assert outcome["reply"].text == before
    assert outcome["reply"].completion_tokens > 0


def test_a_cancel_between_tokens_still_ends_the_reply(engine: LlamaCppChatEngine) -> None:
    check_cancel_between_tokens(engine)


def test_without_a_c_library_to_abort_with_a_cancel_ends_the_reply_at_a_token(
    tiny_llm_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_library(name):
        raise OSError(f"{name}: no such library")

    monkeypatch.setattr(abort.ctypes, "CDLL", no_library)
    with caplog.at_level(logging.WARNING, logger="lea_local.llm.abort"):
        engine = LlamaCppChatEngine(tiny_llm_path, context_size=2048, threads=2)
    monkeypatch.undo()
    assert "cannot abort a decode here" in caplog.text
    check_cancel_between_tokens(engine)


def check_cancel_between_tokens(engine: LlamaCppChatEngine) -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_text(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 3:
            cancel.set()

    with pytest.raises(GenerationCancelled) as raised:
        engine.generate(
            [ChatMessage("user", "Écris une longue histoire sur une maison à vendre.")],
            max_tokens=200,
            temperature=0.0,
            cancel=cancel,
            on_text=on_text,
        )
    # Within a token or two of the cancel, whichever check sees it first.
    assert 3 <= raised.value.completion_tokens <= 6
    assert len(pieces) <= 5
