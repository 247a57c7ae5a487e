"""Hostile documents (issue 25): files small enough to upload that used to cost minutes of CPU
or gigabytes of memory. Cutting run-on text is linear; extraction runs in a child process
with limits (memory, CPU, wall clock) and caps per document (pages, characters, passages, a
DOCX's inflated XML), so each hostile file below is refused naming the limit it hit, or indexed,
within seconds and without the server's memory growing. The files are generated here, small."""

from __future__ import annotations

from lea_local.knowledge import chunking
from lea_local.knowledge.chunking import MAX_WORDS, chunk_document
from lea_local.knowledge.extract import ExtractedDocument, Section


def run_on(words: int) -> str:
    """Text without any sentence punctuation: one endless sentence."""
    return " ".join(f"mot{i % 997}" for i in range(words))


def run_on_document(words: int) -> ExtractedDocument:
    return ExtractedDocument("Sans fin", "text", [Section((), [run_on(words)])])


# --- item 4: cutting run-on text -------------------------------------------------------------


def test_run_on_text_is_cut_as_a_straightforward_reference_cut():
    text = run_on(5 * MAX_WORDS + 17)
    words = text.split()
    reference = [" ".join(words[i : i + MAX_WORDS]) for i in range(0, len(words), MAX_WORDS)]
    # The 17-word tail stays alone: joined to a full passage it would pass MAX_WORDS.
    assert [chunk.text for chunk in chunk_document(run_on_document(len(words)))] == reference


class CountingWords(list):
    """A word list that counts the words its slices copy (and whose slices count too)."""

    copied = 0

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if isinstance(index, slice):
            CountingWords.copied += len(item)
            return CountingWords(item)
        return item


def words_copied(monkeypatch, words: int) -> int:
    monkeypatch.setattr(chunking, "_words", lambda text: CountingWords(text.split()))
    CountingWords.copied = 0
    chunks = chunk_document(run_on_document(words))
    assert sum(len(chunk.text.split()) for chunk in chunks) == words
    return CountingWords.copied


def test_cutting_run_on_text_copies_each_word_about_once(monkeypatch):
    n = 20_000
    once, four_times = words_copied(monkeypatch, n), words_copied(monkeypatch, 4 * n)
    assert once <= 2 * n, once  # before: about n * n / (2 * MAX_WORDS), 910,000 words
    assert four_times <= 4.5 * once, (once, four_times)  # before: 16 times as many
