"""Fit a conversation into the model's context window, by real token counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lea_local.llm.base import ChatMessage


class PromptTooLong(Exception):
    """Even the system prompt and the new message alone do not fit the context window."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"the message is too long for the model's context window ({tokens} tokens, at most {budget})")
        self.tokens = tokens
        self.budget = budget


def fit_to_context(
    system: ChatMessage,
    history: Sequence[ChatMessage],
    user: ChatMessage,
    *,
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    budget: int,
) -> list[ChatMessage]:
    """The prompt to send: the system prompt, then as much of the most recent history as fits
    in `budget` tokens (oldest turns dropped first, whole turns only), then the new message.

    History is cut only where a user message starts, so the model never sees an answer without
    its question. Prompt size grows with the history kept, so a binary search over the possible
    starting points finds the longest history that fits with O(log n) exact token counts.
    """
    minimal = [system, user]
    minimal_tokens = count_tokens(minimal)
    if minimal_tokens > budget:
        raise PromptTooLong(minimal_tokens, budget)
    starts = [i for i, m in enumerate(history) if m.role == "user"] + [len(history)]

    def prompt_from(start: int) -> list[ChatMessage]:
        return [system, *history[start:], user]

    lo, hi = 0, len(starts) - 1  # starts[hi] (no history) is known to fit
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(prompt_from(starts[mid])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return prompt_from(starts[lo])
