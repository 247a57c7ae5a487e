"""Fit a conversation into the model's context window, by real token counts, reading and
tokenising only the newest part of a long history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lea_local.llm.base import ChatMessage

# A guess of how many characters of history a turn reads at first, per token of context window:
# French averages 3 to 4 characters a token with these models' tokenisers, so 8 reads more than
# can fit in all but odd texts. Only a guess to read little, never a limit: when what was read
# fits whole, older messages are read too (`fit_growing_history`).
HISTORY_CHARS_PER_TOKEN = 8


class PromptTooLong(Exception):
    """Even the system prompt and the new message alone do not fit the context window."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"the message is too long for the model's context window ({tokens} tokens, at most {budget})")
        self.tokens = tokens
        self.budget = budget


@dataclass
class CountingTokens:
    """A token counter that keeps count of its work (calls, characters tokenised)."""

    count_tokens: Callable[[Sequence[ChatMessage]], int]
    calls: int = 0
    chars: int = 0

    def __call__(self, messages: Sequence[ChatMessage]) -> int:
        self.calls += 1
        self.chars += sum(len(m.content) for m in messages)
        return self.count_tokens(messages)


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


def fit_growing_history(
    system: ChatMessage,
    newest: Sequence[ChatMessage],
    user: ChatMessage,
    *,
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    budget: int,
    complete: bool,
    load_older: Callable[[], tuple[Sequence[ChatMessage], bool]],
) -> list[ChatMessage]:
    """`fit_to_context` for a history read from its newest end: `newest` holds the latest
    messages (the whole history when `complete`); `load_older()` returns the batch before what
    was read (oldest first) and whether it reaches the conversation's start.

    Older messages are read only while everything read so far, from its first whole turn, fits:
    a prompt only grows with the history it keeps, so once a start does not fit, no older one
    can. The prompt is then the same as with the whole history, for a cost that depends on the
    context window, not on the conversation's length.
    """
    history = list(newest)
    while not complete:
        start = next((i for i, m in enumerate(history) if m.role == "user"), len(history))
        if count_tokens([system, *history[start:], user]) > budget:
            break
        older, complete = load_older()
        history[:0] = older
    return fit_to_context(system, history, user, count_tokens=count_tokens, budget=budget)
