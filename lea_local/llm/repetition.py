"""Notice when a reply starts repeating itself, so generation can stop and the loop is neither
stored nor spoken.

Small models at low temperature fall into loops: the same sentence again and again until the
token limit, or the same run of words without any sentence punctuation. Two rules:

- a sentence (compared without case, punctuation, spacing or a list marker) that already
  occurred: at its 2nd occurrence when it has `LONG_SENTENCE_WORDS` words or more, at its 3rd
  when shorter ("Oui.", "Merci." may legitimately come twice);
- the same `NGRAM_WORDS`-word sequence `NGRAM_OCCURRENCES` times, punctuation or not.

Both only ever compare whole sentences and runs of whole words, so common short phrases
("de la", "il faut") never count on their own. The text is scanned incrementally: each piece
costs time in proportion to its own length, not the reply's.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

LONG_SENTENCE_WORDS = 4
NGRAM_WORDS = 8
NGRAM_OCCURRENCES = 3

# A period after these is an abbreviation, not a sentence end ("M. Dupont", "art. 1724").
_ABBREVIATIONS = frozenset(
    "m mm mme mmes mlle mlles dr me pr st ste av bd art al cf ex env etc no tel tél fig vol min max "
    "approx réf ref hab".split()
)
# Sentence end: terminal punctuation (with closing quotes/brackets) then whitespace, or a line break.
_TERMINATOR = re.compile(r"[.!?…]+[»\"')\]]*(?=\s)|\n")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•·–—]+|\d{1,2}[.)])\s+")
_WORD = re.compile(r"\w+")
_LAST_WORD = re.compile(r"(\w+)$")
_NEXT_VISIBLE = re.compile(r"\S")


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    key: str
    """Normalised text: lower case, words only, single spaces, no list marker."""


def normalise_sentence(text: str) -> str:
    return " ".join(_WORD.findall(_LIST_MARKER.sub("", text).lower()))


def _sentence_spans(text: str, start: int, *, complete: bool) -> Iterator[tuple[int, int]]:
    """(start, end) of each sentence from `start` on. While the text is still being written
    (`complete=False`), a sentence counts only once the next one has visibly begun: what follows
    its punctuation is known, so "M. Dupont" or "etc. et" are not cut, and the last, unfinished
    sentence is left out."""
    for match in _TERMINATOR.finditer(text, start):
        end = match.end()
        if match.group() != "\n":
            following = _NEXT_VISIBLE.search(text, end)
            if following is None and not complete:
                return  # what comes next is not written yet
            if following is not None and following.group().islower():
                continue
            if _is_abbreviation(text, match.start()) or _is_list_number(text, match.start()):
                continue
        yield start, end
        start = end
    if complete and start < len(text):
        yield start, len(text)


def _is_abbreviation(text: str, terminator_start: int) -> bool:
    word = _LAST_WORD.search(text, max(0, terminator_start - 40), terminator_start)
    if word is None:
        return False
    token = word.group(1)
    return (len(token) == 1 and token.isalpha()) or token.lower() in _ABBREVIATIONS


def _is_list_number(text: str, terminator_start: int) -> bool:
    """ "2." opening a line is a numbered list's marker."""
    line_start = text.rfind("\n", 0, terminator_start) + 1
    return text[line_start:terminator_start].strip().isdigit()


def _sentence(text: str, start: int, end: int) -> Sentence | None:
    key = normalise_sentence(text[start:end])
    if not key:
        return None
    # Leading whitespace belongs to no sentence: a cut at `start` then leaves no stray space.
    while text[start].isspace():
        start += 1
    return Sentence(start, end, key)


def split_sentences(text: str, *, complete: bool) -> list[Sentence]:
    """The sentences of `text` in order (those with at least one word)."""
    spans = (_sentence(text, start, end) for start, end in _sentence_spans(text, 0, complete=complete))
    return [s for s in spans if s is not None]


class RepetitionDetector:
    """Fed a reply as it is generated; `feed` turns True once the reply repeats itself, and
    `cut` then tells where the repeat begins (the text before it repeats nothing)."""

    def __init__(self) -> None:
        self.text = ""
        self.cut: int | None = None
        self._pending = 0  # where the sentence being written begins
        self._sentence_starts: list[int] = []
        self._sentences_seen: dict[str, list[int]] = {}
        self._next_word = 0  # where the next unread word may begin
        self._words: list[str] = []
        self._word_starts: list[int] = []
        self._ngrams_seen: dict[tuple[str, ...], list[int]] = {}

    @property
    def fired(self) -> bool:
        return self.cut is not None

    def feed(self, piece: str) -> bool:
        if self.cut is None:
            self.text += piece
            self._scan(complete=False)
        return self.cut is not None

    def finish(self) -> bool:
        """The reply is complete: its last sentence and word count too."""
        if self.cut is None:
            self._scan(complete=True)
        return self.cut is not None

    def kept_text(self) -> str:
        """The reply so far, without the repeat."""
        return self.text if self.cut is None else self.text[: self.cut].rstrip()

    def _scan(self, *, complete: bool) -> None:
        cuts = [c for c in (self._scan_sentences(complete), self._scan_words(complete)) if c is not None]
        if cuts:
            self.cut = min(cuts)

    def _scan_sentences(self, complete: bool) -> int | None:
        for start, end in _sentence_spans(self.text, self._pending, complete=complete):
            self._pending = end
            sentence = _sentence(self.text, start, end)
            if sentence is None:
                continue
            self._sentence_starts.append(sentence.start)
            starts = self._sentences_seen.setdefault(sentence.key, [])
            starts.append(sentence.start)
            allowed = 1 if sentence.key.count(" ") + 1 >= LONG_SENTENCE_WORDS else 2
            if len(starts) > allowed:
                return starts[1]  # the first repeat
        return None

    def _scan_words(self, complete: bool) -> int | None:
        for match in _WORD.finditer(self.text, self._next_word):
            if match.end() == len(self.text) and not complete:
                break  # may still be growing
            self._next_word = match.end()
            self._words.append(match.group().lower())
            self._word_starts.append(match.start())
            if len(self._words) < NGRAM_WORDS:
                continue
            first = len(self._words) - NGRAM_WORDS
            starts = self._ngrams_seen.setdefault(tuple(self._words[first:]), [])
            starts.append(first)
            if len(starts) >= NGRAM_OCCURRENCES:
                return self._sentence_cut(self._word_starts[starts[1]])
        return None

    def _sentence_cut(self, repeat_start: int) -> int:
        """Keep whole sentences: cut where the sentence holding the repeat began, unless that
        would leave nothing (a loop without any punctuation)."""
        boundaries = self._sentence_starts + [self._pending]
        i = bisect.bisect_right(boundaries, repeat_start)
        sentence_start = boundaries[i - 1] if i else 0
        return sentence_start if sentence_start > 0 else repeat_start


def find_repetition(text: str, *, complete: bool = True) -> int | None:
    """Index where `text` starts repeating itself (cut there to keep only what came before),
    or None when it does not repeat."""
    detector = RepetitionDetector()
    detector.feed(text)
    if complete:
        detector.finish()
    return detector.cut


def truncate_repetition(text: str) -> str:
    """`text` cut before its first repeat (whole sentences kept), or unchanged."""
    cut = find_repetition(text)
    return text if cut is None else text[:cut].rstrip()
