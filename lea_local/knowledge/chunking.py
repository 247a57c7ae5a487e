"""Passages cut along the document's own structure: never across a heading, paragraphs joined
until a passage says enough (MIN_WORDS), long paragraphs split between sentences (MAX_WORDS).

A passage answers one question well when it is about one thing: a section is that thing, so a
short section stays a short passage rather than borrowing its neighbour's words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lea_local.knowledge.extract import ExtractedDocument

MIN_WORDS = 60
MAX_WORDS = 220
SECTION_SEPARATOR = " > "

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=[\"«(\[]?[A-ZÀ-ÖØ-Ý0-9-])")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    section: str
    """The heading path ("Frais > Commission"); empty before the document's first heading."""
    text: str


def chunk_document(document: ExtractedDocument) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in document.sections:
        headings = section.headings
        if headings and headings[0] == document.title:
            headings = headings[1:]  # the title heading is said once, as the title
        name = SECTION_SEPARATOR.join(headings)
        for text in _passages(section.blocks):
            chunks.append(Chunk(len(chunks), name, text))
    return chunks


def _passages(blocks: list[str]) -> list[str]:
    pieces = [piece for block in blocks for piece in _split_long(block)]
    passages: list[list[str]] = []
    size = 0
    for piece in pieces:
        count = len(piece.split())
        if passages and size < MIN_WORDS and size + count <= MAX_WORDS:
            passages[-1].append(piece)
            size += count
        else:
            passages.append([piece])
            size = count
    # A short last passage joins the one before it when both fit together.
    if len(passages) > 1:
        last = sum(len(p.split()) for p in passages[-1])
        before = sum(len(p.split()) for p in passages[-2])
        if last < MIN_WORDS and last + before <= MAX_WORDS:
            passages[-2].extend(passages.pop())
    return ["\n".join(parts) for parts in passages]


def _split_long(block: str) -> list[str]:
    """A block of at most MAX_WORDS words, or its sentences grouped into such pieces."""
    if len(_words(block)) <= MAX_WORDS:
        return [block]
    pieces: list[str] = []
    current: list[str] = []
    for sentence in _SENTENCE_END.split(block):
        sentence_words = _words(sentence)
        start = 0
        # One endless sentence: cut between words, each word copied once (slicing off the
        # remainder on each pass was quadratic on run-on text).
        while len(sentence_words) - start > MAX_WORDS:
            if current:
                pieces.append(" ".join(current))
                current = []
            pieces.append(" ".join(sentence_words[start : start + MAX_WORDS]))
            start += MAX_WORDS
        if start:
            sentence_words = sentence_words[start:]
        if current and len(current) + len(sentence_words) > MAX_WORDS:
            pieces.append(" ".join(current))
            current = []
        current.extend(sentence_words)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _words(text: str) -> list[str]:
    """The text's words (one place, so that a test can count the words the cut copies)."""
    return text.split()
