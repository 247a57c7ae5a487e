"""The passage index: what finds the passages that answer a question.

`KnowledgeIndex` is the small interface the library (library.py) uses, inside its own
transactions: index new passages, forget removed ones, search. Two lexical siblings implement it,
one per database the conversation store runs on:

- `SqliteIndex`: an FTS5 table of the passages' analysed terms (french.py: stemmed, folded, stop
  words out), ranked by bm25 with title and section hits weighted above the text's;
- `PostgresIndex`: a `to_tsvector('french', …)` column (title and section weighted A and B, the
  text D) with a GIN index, ranked by ts_rank (measured on the test corpus and the benchmark:
  better and twice as fast as ts_rank_cd).

Both search the user's own terms and the thesaurus' expansions apart and add the two scores, the
expansions' at EXPANSION_WEIGHT: a passage that uses the user's words ranks above one that only
uses synonyms. The semantic retrievers are siblings too (dense.py: a sentence encoder, its vectors
in a table of their own keyed by passage id; vectors.py: word vectors), fused with the lexical one
by reciprocal rank fusion in fusion.py's combining index; callers do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Engine

from lea_local.knowledge.french import AnalysedQuery, fold, terms

EXPANSION_WEIGHT = 0.5
"""How much a thesaurus expansion's match counts against one of the user's own terms."""

TITLE_WEIGHT = 2.0
SECTION_WEIGHT = 2.0
TEXT_WEIGHT = 1.0

CANDIDATES = 50
"""Passages ranked by each of the two searches (own terms, expansions) before they are combined."""


@dataclass(frozen=True)
class IndexedPassage:
    id: int
    title: str
    section: str
    text: str


@dataclass(frozen=True)
class Hit:
    passage_id: int
    score: float
    """Higher is better; comparable only within one search."""
    close: bool = False
    """A sentence encoder found the passage close in meaning to the question (dense.py)."""


class KnowledgeIndex(Protocol):
    def add(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        """Make new passages (already in knowledge_passages) searchable."""

    def remove(self, connection: Connection, passage_ids: Sequence[int]) -> None:
        """Forget passages (about to be deleted from knowledge_passages)."""

    def search(self, connection: Connection, query: AnalysedQuery, limit: int) -> list[Hit]:
        """The best passages for a question, best first."""


def index_for(engine: Engine) -> KnowledgeIndex:
    return PostgresIndex() if engine.dialect.name == "postgresql" else SqliteIndex()


def _combine(own: dict[int, float], expanded: dict[int, float], limit: int) -> list[Hit]:
    scores = dict(own)
    for passage_id, score in expanded.items():
        scores[passage_id] = scores.get(passage_id, 0.0) + EXPANSION_WEIGHT * score
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(passage_id, score) for passage_id, score in ranked[:limit]]


class SqliteIndex:
    _SEARCH = text(
        "SELECT rowid, -bm25(knowledge_passages_fts, :title_weight, :section_weight, :text_weight) AS score "
        "FROM knowledge_passages_fts WHERE knowledge_passages_fts MATCH :query ORDER BY score DESC LIMIT :candidates"
    )

    def add(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        if not passages:
            return
        titles: dict[str, str] = {}
        rows = []
        for passage in passages:
            if passage.title not in titles:
                titles[passage.title] = " ".join(terms(passage.title))
            rows.append(
                {
                    "id": passage.id,
                    "title": titles[passage.title],
                    "section": " ".join(terms(passage.section)),
                    "body": " ".join(terms(passage.text)),
                }
            )
        connection.execute(
            text(
                "INSERT INTO knowledge_passages_fts (rowid, title, section, body) VALUES (:id, :title, :section, :body)"
            ),
            rows,
        )

    def remove(self, connection: Connection, passage_ids: Sequence[int]) -> None:
        if passage_ids:
            connection.execute(
                text("DELETE FROM knowledge_passages_fts WHERE rowid IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": list(passage_ids)},
            )

    def search(self, connection: Connection, query: AnalysedQuery, limit: int) -> list[Hit]:
        # Terms are [^\W_]+ runs (french.words), so quoting them is all FTS5's syntax needs.
        own = " OR ".join(f'"{term}"' for term in query.terms)
        expanded = " OR ".join('"' + " ".join(phrase.terms) + '"' for phrase in query.expansions)
        return _combine(self._scores(connection, own), self._scores(connection, expanded), limit)

    def _scores(self, connection: Connection, match: str) -> dict[int, float]:
        if not match:
            return {}
        rows = connection.execute(
            self._SEARCH,
            {
                "query": match,
                "title_weight": TITLE_WEIGHT,
                "section_weight": SECTION_WEIGHT,
                "text_weight": TEXT_WEIGHT,
                "candidates": CANDIDATES,
            },
        )
        return {passage_id: score for passage_id, score in rows}


class PostgresIndex:
    # ts_rank's weights are listed {D, C, B, A} and may not exceed 1.
    _WEIGHTS = f"'{{{TEXT_WEIGHT / 2}, 0, {SECTION_WEIGHT / 2}, {TITLE_WEIGHT / 2}}}'::float4[]"

    def add(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        if not passages:
            return
        # The text is folded first (PostgreSQL's 'french' configuration keeps accents), so a
        # question typed without accents meets its passage.
        connection.execute(
            text(
                "UPDATE knowledge_passages SET search_vector = "
                "setweight(to_tsvector('french', :title), 'A') || setweight(to_tsvector('french', :section), 'B') "
                "|| setweight(to_tsvector('french', :body), 'D') WHERE id = :id"
            ),
            [{"id": p.id, "title": fold(p.title), "section": fold(p.section), "body": fold(p.text)} for p in passages],
        )

    def remove(self, connection: Connection, passage_ids: Sequence[int]) -> None:
        """Nothing to do: the search vector is a column of the passage's own row."""

    def search(self, connection: Connection, query: AnalysedQuery, limit: int) -> list[Hit]:
        # Folded words are [^\W_]+ runs: none of to_tsquery's operators can appear in them.
        own = " | ".join(dict.fromkeys(fold(word) for word in query.words))
        scores = self._scores(connection, "to_tsquery('french', :own)", {"own": own})
        expanded: dict[int, float] = {}
        if query.expansions:
            parts = [f"phraseto_tsquery('french', :phrase{i})" for i in range(len(query.expansions))]
            params = {f"phrase{i}": phrase.text for i, phrase in enumerate(query.expansions)}
            expanded = self._scores(connection, " || ".join(parts), params)
        return _combine(scores, expanded, limit)

    def _scores(self, connection: Connection, tsquery: str, params: dict[str, str]) -> dict[int, float]:
        rows = connection.execute(
            text(
                f"SELECT p.id, ts_rank({self._WEIGHTS}, p.search_vector, q.query, 1) AS score "
                f"FROM knowledge_passages p, (SELECT {tsquery} AS query) q "
                "WHERE p.search_vector @@ q.query ORDER BY score DESC, p.id LIMIT :candidates"
            ),
            {**params, "candidates": CANDIDATES},
        )
        return {passage_id: float(score) for passage_id, score in rows}
