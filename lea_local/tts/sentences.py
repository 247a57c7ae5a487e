"""Split text into sentences as it streams in, so that speech can start with the first one."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … (or a line break) followed by space and a likely sentence start.
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"»)]?\s+(?=[\"«(\-–—]?\s?[A-ZÀ-ÖØ-Þ0-9])|\n+")
# Words whose final period is not the end of a sentence.
_ABBREVIATIONS = {
    "m",
    "mm",
    "mme",
    "mmes",
    "mlle",
    "dr",
    "me",
    "st",
    "ste",
    "av",
    "bd",
    "cf",
    "env",
    "tél",
    "etc",
    "n",
    "p",
    "vol",
    "art",
    "réf",
}
_MIN_CHARS = 12  # "Oui." alone is merged with what follows: fewer, smoother synthesis calls


class SentenceSplitter:
    def __init__(self) -> None:
        self._pending = ""

    def _is_abbreviation(self, text: str, end: int) -> bool:
        return _ends_with_abbreviation(text[:end].rstrip())

    def feed(self, text: str) -> list[str]:
        """Add streamed text; return the sentences now complete."""
        self._pending += text
        sentences = []
        start = 0
        for match in _BOUNDARY.finditer(self._pending):
            if "\n" not in match.group(0) and self._is_abbreviation(self._pending, match.start()):
                continue
            candidate = self._pending[start : match.start()].strip()
            candidate += self._pending[match.start() : match.end()].strip()  # closing quote or bracket
            if len(candidate) < _MIN_CHARS and "\n" not in match.group(0):
                continue
            if candidate.strip():
                sentences.append(candidate.strip())
            start = match.end()
        self._pending = self._pending[start:]
        return sentences

    def flush(self) -> list[str]:
        """The rest, once the text is complete."""
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []


def split_sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    return splitter.feed(text) + splitter.flush()


# Words a phrase may start with: a breath before them sounds natural.
_CONJUNCTIONS = "et|mais|ou|donc|car|qui|que|dont|où|pour|avec|puis"
_BREATH = re.compile(rf"(?<=[,;:])\s+|\s+(?=(?:{_CONJUNCTIONS}|qu')\b)", re.I)


def split_first_phrase(sentence: str, *, longer_than: int = 50, min_head: int = 15) -> list[str]:
    """The first sentence of a reply cut at its first natural pause (a comma, or before a
    conjunction), so that the first audio is ready sooner; other sentences stay whole."""
    if len(sentence) <= longer_than:
        return [sentence]
    for match in _BREATH.finditer(sentence):
        if match.start() >= min_head and len(sentence) - match.end() >= min_head:
            return [sentence[: match.start()].strip(), sentence[match.end() :].strip()]
    return [sentence]


# Where a streamed answer's first phrase may end, so that its audio starts before the sentence
# is finished: a pause mark, or the space before a linking word; failing both, a word boundary
# once the phrase is long enough to take longer to write and speak than the pause it saves.
_PAUSE = re.compile(r"(?<=[.!?…,;:])\s+")
_BEFORE_LINK = re.compile(
    rf"\s+(?=(?:{_CONJUNCTIONS}|de|du|des|à|au|aux|en|dans|sur|par|sans|chez|vers|comme|quand|lorsque|si)\s)",
    re.I,
)
_BETWEEN_WORDS = re.compile(r"(?<=[^\W\d])\s+(?=[^\W\d])")  # not inside "1 200 000 $"
FIRST_PHRASE_MIN_CHARS = 15
FIRST_PHRASE_MAX_CHARS = 40


def first_phrase_end(text: str) -> int | None:
    """Where the first phrase of a streamed answer ends (the index its second phrase starts
    at), or None while the text so far cannot tell. Only words already followed by a space
    count: the next delta may still lengthen the last one."""
    cuts = [
        match.end()
        for match in _PAUSE.finditer(text)
        if match.start() >= FIRST_PHRASE_MIN_CHARS and not _ends_with_abbreviation(text[: match.start()])
    ]
    cuts += [match.end() for match in _BEFORE_LINK.finditer(text) if match.start() >= FIRST_PHRASE_MIN_CHARS]
    if cuts:
        return min(cuts)
    if len(text) >= FIRST_PHRASE_MAX_CHARS:
        between = [m.end() for m in _BETWEEN_WORDS.finditer(text) if m.start() >= FIRST_PHRASE_MIN_CHARS]
        if between:
            return between[-1]
    return None


def _ends_with_abbreviation(text: str) -> bool:
    word = re.search(r"(\w+)\.$", text)
    return bool(word and word.group(1).lower() in _ABBREVIATIONS)
