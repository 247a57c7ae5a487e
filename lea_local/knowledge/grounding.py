"""What a turn takes from the knowledge base: the passages that answer its message, picked
within a token budget and written into the prompt with their sources.

The passages go into the turn's user message, after the conversation, not into the system
prompt: the system prompt and the history stay the same from turn to turn, so the engine's
prompt cache (llama.cpp's prefix match) still reuses their evaluation, and every chat template
accepts it (some refuse a second system message). The stored conversation keeps the user's own
words: the next turn searches again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lea_local.knowledge.chunking import SECTION_SEPARATOR
from lea_local.knowledge.french import Thesaurus, analyse_query, terms
from lea_local.llm.base import ChatMessage

if TYPE_CHECKING:
    from lea_local.knowledge.library import Document, Passage

log = logging.getLogger(__name__)

# How many of the conversation's previous user messages join the search: a follow-up ("et pour
# un condo ?") means little alone.
RECENT_USER_MESSAGES = 2
# Candidates read per search: more than a prompt keeps, for the budget to choose from.
CANDIDATES_PER_PASSAGE = 3
# The current message's search counts this many times the conversation's in the ranking.
MESSAGE_WEIGHT = 2.0
RRF_K = 60
"""Reciprocal rank fusion's constant (Cormack et al., 2009): ranks, not scores, are fused, since
bm25 (SQLite) and ts_rank_cd (PostgreSQL) scores are on no common scale."""
MIN_COVERAGE = 0.45
"""A passage goes into a prompt only if it holds this share of the question's terms, each weighed
by its rarity in the knowledge base (idf; a thesaurus synonym counts half), or one of the domain
thesaurus' expansions of the question whole (a paraphrase shares no word with its passage).
Measured on the test corpus (tests/fixtures/knowledge, 95 questions): of the right passages found
in the top 3, 53 of 54 direct questions' and 9 of 13 paraphrased ones' are kept; of 13 unrelated
questions ("Quelle est la capitale de la France ?", "Merci, bonne journée !", a baseball
commentary…), 12 get no passage (at 0.40: 2 get one; at 0.30: 5). Raw scores cannot tell them
apart: bm25 grows with the corpus, and ts_rank_cd is on another scale.
A passage the sentence encoder found close in meaning (`Passage.close`, encoder.py's calibrated
cosine) is kept whatever its words: that is how a paraphrase's passage gets in."""
MAX_WEIGHED_TERMS = 24
"""Terms of a turn weighed at most (each new one costs one small search: the knowledge base
remembers the counts until its documents change); the rest count as rare."""
DF_PROBE = 50
"""Passages counted per term to weigh it: a term in this many or more is common, whatever the corpus."""
# Passages never take more than this share of the room the system prompt and the message leave:
# the rest is the conversation's (a small model's window must still hold the last turns).
MAX_SHARE_OF_ROOM = 0.5

INSTRUCTION = (
    "Réponds à la question ci-dessous à partir de ces extraits des documents de l'agence. "
    "S'ils ne contiennent pas la réponse, dis clairement que les documents de l'agence ne la donnent pas, "
    "sans inventer."
)


class PassageSearch(Protocol):
    """What grounding needs of the knowledge base (`KnowledgeBase`)."""

    def search(self, query: str, limit: int = 5, *, lexical_only: bool = False) -> list[Passage]: ...

    def term_counts(self, words: Sequence[str], cap: int) -> dict[str, int]: ...

    def documents(self) -> list[Document]: ...

    @property
    def thesaurus(self) -> Thesaurus: ...


@dataclass(frozen=True)
class Source:
    """Where a passage put into a prompt comes from (the responses' `sources`)."""

    title: str
    file: str
    section: str


@dataclass(frozen=True)
class GroundedMessage:
    """The turn's user message with the passages it carries, and those passages' sources."""

    message: ChatMessage
    passages: tuple[Passage, ...]

    @property
    def sources(self) -> list[Source]:
        return sources_of(self.passages)


def sources_of(passages: Sequence[Passage]) -> list[Source]:
    """Each passage's document and section, once, in prompt order."""
    seen: dict[Source, None] = {}
    for passage in passages:
        seen.setdefault(Source(passage.title, passage.file_name, passage.section), None)
    return list(seen)


def render(message: str, passages: Sequence[Passage]) -> str:
    """The user message as the model reads it: the numbered passages with their sources, the
    instruction to answer from them, then the question."""
    if not passages:
        return message
    blocks = [f"[{n}] {_source_line(p)}\n{p.text.strip()}" for n, p in enumerate(passages, 1)]
    extracts = "\n\n".join(blocks)
    return f"Extraits des documents de l'agence :\n\n{extracts}\n\n{INSTRUCTION}\n\nQuestion : {message}"


class _TermWeights:
    """How much each term of a question says (idf), and how much of that a passage holds.
    A term's document frequency is how many passages its lexical search finds."""

    def __init__(self, knowledge: PassageSearch) -> None:
        self.knowledge = knowledge
        self._passages = sum(document.passages for document in knowledge.documents())
        self._idf: dict[str, float] = {}

    def weigh(self, wanted: Sequence[str]) -> None:
        """Count the terms not weighed yet, within MAX_WEIGHED_TERMS, in one call."""
        new = [term for term in wanted if term not in self._idf][: max(0, MAX_WEIGHED_TERMS - len(self._idf))]
        if new:
            for term, found in self.knowledge.term_counts(new, DF_PROBE).items():
                self._idf[term] = math.log((self._passages + 1) / (found + 0.5))

    def idf(self, term: str) -> float:
        """log((N + 1) / (df + 0.5)), df counted up to DF_PROBE (the thesaurus' synonyms count);
        a term beyond MAX_WEIGHED_TERMS counts as rare."""
        return self._idf.get(term, math.log((self._passages + 1) / 0.5))

    def relevant(self, query: str, passage: Passage) -> bool:
        held = set(terms(f"{passage.title}\n{passage.section}\n{passage.text}"))
        if self.coverage(query, held) >= MIN_COVERAGE:
            return True
        return any(set(phrase.terms) <= held for phrase in analyse_query(query, self.knowledge.thesaurus).expansions)

    def coverage(self, query: str, held: set[str]) -> float:
        """The share of the question's terms (idf-weighed) that a passage's terms hold."""
        wanted = list(dict.fromkeys(terms(query)))
        if not wanted:
            return 0.0
        self.weigh(wanted)
        thesaurus = self.knowledge.thesaurus
        total = found = 0.0
        for term in wanted:
            weight = self.idf(term)
            total += weight
            if term in held:
                found += weight
            elif any(set(phrase.terms) <= held for phrase in thesaurus.expand((term,))):
                found += weight / 2
        return found / total


def _source_line(passage: Passage) -> str:
    """ "Title — Section (file)"; a heading path that repeats the title is shown without it."""
    section = passage.section.removeprefix(passage.title).removeprefix(SECTION_SEPARATOR).strip()
    return f"{passage.title}{f' — {section}' if section else ''} ({passage.file_name})"


class TurnGrounding:
    """Picks a turn's passages: `retrieve` searches (a worker thread's job, before the turn
    waits for the LLM), `ground` keeps the best that fit the budget (while the prompt is built)."""

    def __init__(self, knowledge: PassageSearch, *, max_passages: int, max_prompt_tokens: int) -> None:
        self.knowledge = knowledge
        self.max_passages = max_passages
        self.max_prompt_tokens = max_prompt_tokens

    def retrieve(self, message: str, earlier_user_messages: Sequence[str] = ()) -> list[Passage]:
        """The passages worth giving the model, best first; [] when the knowledge base cannot
        be read (the turn is answered without them, and the failure logged)."""
        try:
            return self._relevant(message, earlier_user_messages[-RECENT_USER_MESSAGES:])
        except Exception:
            log.exception("knowledge search failed; the turn is answered without passages")
            return []

    def _relevant(self, message: str, earlier: Sequence[str]) -> list[Passage]:
        """Both searches' passages (the message's alone, and with the user's previous messages),
        ranked by weighted reciprocal rank fusion, less those that cover too little of the
        question they were found for, unless the sentence encoder found them close in meaning."""
        limit = self.max_passages * CANDIDATES_PER_PASSAGE
        searches = [(message, MESSAGE_WEIGHT)]
        if earlier:
            searches.append(("\n".join([*earlier, message]), 1.0))
        candidates = [(query, weight, self.knowledge.search(query, limit)) for query, weight in searches]
        if not any(found for _, _, found in candidates):
            return []
        weights = _TermWeights(self.knowledge)
        fused: dict[int, float] = {}
        relevant: dict[int, Passage] = {}
        for query, weight, found in candidates:
            for rank, passage in enumerate(found):
                fused[passage.id] = fused.get(passage.id, 0.0) + weight / (RRF_K + rank + 1)
                if passage.id not in relevant and (passage.close or weights.relevant(query, passage)):
                    relevant[passage.id] = passage
        return sorted(relevant.values(), key=lambda p: -fused[p.id])

    def ground(
        self,
        system: ChatMessage,
        message: str,
        passages: Sequence[Passage],
        *,
        count_tokens: Callable[[Sequence[ChatMessage]], int],
        budget: int,
    ) -> GroundedMessage:
        """The user message with the best passages whose rendering fits: at most `max_passages`,
        within `max_prompt_tokens` and half the room that `budget` leaves beside the system
        prompt and the bare message (real token counts, chat template included). A passage
        that does not fit is skipped for a shorter one after it."""
        plain = ChatMessage("user", message)
        if not passages:
            return GroundedMessage(plain, ())
        base = count_tokens([system, plain])
        allowed = min(self.max_prompt_tokens, int((budget - base) * MAX_SHARE_OF_ROOM))
        kept: list[Passage] = []
        for passage in passages:
            if len(kept) == self.max_passages or allowed <= 0:
                break
            candidate = ChatMessage("user", render(message, [*kept, passage]))
            if count_tokens([system, candidate]) - base <= allowed:
                kept.append(passage)
        if not kept:
            return GroundedMessage(plain, ())
        return GroundedMessage(ChatMessage("user", render(message, kept)), tuple(kept))
