"""The French test corpus (tests/fixtures/knowledge) meets its own spec, and the knowledge base
finds the passage that answers its questions through KnowledgeBase, on SQLite and on PostgreSQL:
direct questions always, paraphrased ones far less often (scripts/eval_knowledge_retrieval.py
prints the full figures and the misses; see MIN_RECALL_AT_3_* for what is and is not reached)."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from lea_local.knowledge.extract import extract
from tests.conftest import Database
from tests.fixtures.knowledge.corpus import (
    CORPUS,
    SOURCES,
    Question,
    answering_passage,
    contains_excerpt,
    content_stems,
    fold,
    load_questions,
    paragraphs,
    shared_content_words,
)
from tests.server import REPO

# The target is recall@3 >= 0.9 over all questions. Measured (95 questions, 41 of them
# paraphrased with no content word in common with their passage), with the default retrieval
# (multilingual-e5-small, the lexical ranking breaking near-ties): direct 1.00, paraphrased 0.41,
# all 0.75; the target is NOT met, and docs/measuring.md says so. These bounds guard what is reached
# against regressions: direct questions, and the paraphrased ones, which the encoder reaches.
MIN_RECALL_AT_3_DIRECT = 0.95
MIN_RECALL_AT_3_PARAPHRASED = 0.35


def _load_eval_script():
    spec = importlib.util.spec_from_file_location(
        "eval_knowledge_retrieval", REPO / "scripts/eval_knowledge_retrieval.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


evaluation = _load_eval_script()
QUESTIONS = load_questions()
DOCUMENTS = sorted(p for p in CORPUS.iterdir() if p.is_file())


def extracted_text(file_name: str) -> str:
    document = extract(file_name, (CORPUS / file_name).read_bytes())
    return "\n".join(block for section in document.sections for block in section.blocks)


def test_corpus_has_at_least_8_documents_in_pdf_docx_markdown_and_more() -> None:
    formats = Counter(p.suffix.lower() for p in DOCUMENTS)
    assert len(DOCUMENTS) >= 8, DOCUMENTS
    assert {".pdf", ".docx", ".md"} <= set(formats), formats
    assert len(formats) >= 3, formats


def test_corpus_is_at_least_25_pages_of_extracted_text() -> None:
    """A page is about 450 words: 25 pages are ≥ 11,000 words, counted in what the extractor reads."""
    words = {p.name: len(extracted_text(p.name).split()) for p in DOCUMENTS}
    assert sum(words.values()) >= 11_000, words
    assert min(words.values()) >= 700, words  # each document is several pages' worth, not a stub


def test_pdf_and_docx_carry_their_title_and_accented_text() -> None:
    for path in DOCUMENTS:
        if path.suffix in (".pdf", ".docx"):
            document = extract(path.name, path.read_bytes())
            heading = (SOURCES / f"{path.stem}.md").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            assert document.title == heading, path.name
            text = extracted_text(path.name)
            assert "é" in text and "à" in text, f"{path.name}: accents lost in extraction"


def test_generated_pdf_and_docx_hold_every_paragraph_of_their_source() -> None:
    """corpus/*.pdf and *.docx are in step with sources/*.md (make_documents.py writes them)."""
    for source in sorted(SOURCES.glob("*.md")):
        generated = [p for p in DOCUMENTS if p.stem == source.stem]
        assert len(generated) == 1, f"{source.name} has no generated document in corpus/"
        # The PDF's page footer falls in the middle of the paragraph a page break cuts.
        text = re.sub(
            r" ?horizon immobilier — document interne — page \d+ ?", " ", fold(extracted_text(generated[0].name))
        )
        missing = [p.text[:60] for p in paragraphs(generated[0].name) if fold(p.text) not in text]
        assert not missing, f"{generated[0].name} is older than {source.name}: rerun make_documents.py; {missing}"


def test_questions_file_is_complete() -> None:
    assert len(QUESTIONS) >= 50
    assert sum(q.paraphrased for q in QUESTIONS) >= 20
    assert len({q.id for q in QUESTIONS}) == len(QUESTIONS), "question ids repeat"
    names = {p.name for p in DOCUMENTS}
    for q in QUESTIONS:
        assert q.question.strip() and q.fact.strip(), q.id
        for file, excerpt in q.answers:
            assert file in names, f"{q.id}: no document {file}"
            assert 5 <= len(excerpt.split()) <= 12, f"{q.id}: excerpt of {len(excerpt.split())} words"


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.id)
def test_every_excerpt_is_in_its_documents_extracted_text(question: Question) -> None:
    for file, excerpt in question.answers:
        assert contains_excerpt(extracted_text(file), excerpt), f"{question.id}: « {excerpt} » not in {file}"
    answering_passage(question)  # and in exactly one paragraph of the source


def test_content_word_check_catches_shared_words() -> None:
    """The check below is not vacuous: stems meet across accents, case and inflection, and a
    direct question shares words with its passage."""
    assert content_stems("Les Courtières") & content_stems("un courtier")
    assert content_stems("la propriété") & content_stems("PROPRIETE")
    assert not content_stems("le la les de du qui que quel est")
    direct = [q for q in QUESTIONS if not q.paraphrased]
    assert sum(1 for q in direct if shared_content_words(q)) >= len(direct) * 0.9


@pytest.mark.parametrize("question", [q for q in QUESTIONS if q.paraphrased], ids=lambda q: q.id)
def test_paraphrased_question_shares_no_content_word_with_its_passage(question: Question) -> None:
    assert not shared_content_words(question), question.question


@pytest.mark.slow
def test_recall_at_3_through_the_knowledge_base(database: Database, tmp_path: Path) -> None:
    results = evaluation.evaluate_corpus(database.url, tmp_path)
    assert len(results) == len(QUESTIONS)
    printed = io.StringIO()
    evaluation.report(results, out=printed)
    print(printed.getvalue())
    direct = evaluation.scores([r for r in results if not r.question.paraphrased]).recall_at_3
    paraphrased = evaluation.scores([r for r in results if r.question.paraphrased]).recall_at_3
    assert direct >= MIN_RECALL_AT_3_DIRECT, f"{database.kind}: direct recall@3 {direct:.3f}\n{printed.getvalue()}"
    assert paraphrased >= MIN_RECALL_AT_3_PARAPHRASED, (
        f"{database.kind}: paraphrased recall@3 {paraphrased:.3f}\n{printed.getvalue()}"
    )
