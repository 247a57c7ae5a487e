"""`HybridIndex`: the lexical index and a semantic retriever, their rankings fused.

Each ranks its best CANDIDATES; a passage scores the sum of weight / (rrf_k + rank) over the
rankings it is in (reciprocal rank fusion: bm25 and cosines are on no common scale). The
retrievers, and the fusion each is tuned for:

- `dense` (the default): a sentence encoder (dense.py). It alone finds every direct question's
  passage in its top 3 on the test corpus, and more paraphrases than anything else here; the
  lexical ranking only breaks its near-ties (weight 0.1).
- `words`: French word vectors (vectors.py), fused as an equal with bm25.
- `lexical`: no semantic retriever (LEA_KNOWLEDGE_RETRIEVAL=lexical).

The fusion's values were chosen on the odd-numbered questions of tests/fixtures/knowledge and
checked on the even ones (scripts/eval_knowledge_retrieval.py prints both). Without its package
(a broken install), the semantic retriever is left out: searches go on lexically, and the log
says why, once. While a remote encoder's server is down, each search goes on lexically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Connection

from lea_local.knowledge.encoder import EncoderOffline, EncoderUnavailable
from lea_local.knowledge.french import AnalysedQuery
from lea_local.knowledge.index import CANDIDATES, Hit, IndexedPassage, KnowledgeIndex
from lea_local.knowledge.vectors import RRF_K, VECTOR_WEIGHT, VectorsUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fusion:
    rrf_k: int
    lexical_weight: float
    semantic_weight: float


DENSE_FUSION = Fusion(rrf_k=10, lexical_weight=0.1, semantic_weight=1.0)
WORDS_FUSION = Fusion(rrf_k=RRF_K, lexical_weight=1.0, semantic_weight=VECTOR_WEIGHT)


class PreparedIndex(Protocol):
    """A semantic retriever that encodes passages before their transaction (dense.py)."""

    def prepare(self, passages: Sequence[IndexedPassage]) -> None: ...

    def forget_prepared(self) -> None: ...

    def missing(self, connection: Connection) -> list[IndexedPassage]: ...


class HybridIndex:
    """A `KnowledgeIndex` made of the lexical index and, optionally, a semantic one. A Hit's
    score is its fused score; it is `close` when the semantic retriever says so."""

    def __init__(self, lexical: KnowledgeIndex, semantic: KnowledgeIndex | None, fusion: Fusion) -> None:
        self.lexical = lexical
        self.semantic = semantic
        self.fusion = fusion
        self._semantic_missing: str | None = None

    def add(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        self.lexical.add(connection, passages)
        self.add_semantic(connection, passages)

    def add_semantic(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        """Index passages semantically only (the lexical index has them: see `missing`). Without
        the retriever's package they stay unencoded: `reindex` encodes them once it is back."""
        if self._semantic_usable():
            self._unless_unavailable(self.semantic.add, connection, passages)

    def remove(self, connection: Connection, passage_ids: Sequence[int]) -> None:
        self.lexical.remove(connection, passage_ids)
        if self.semantic is not None:
            self.semantic.remove(connection, passage_ids)

    def prepare(self, passages: Sequence[IndexedPassage]) -> None:
        """Do the semantic retriever's slow part of `add` now, outside the write transaction."""
        if self._semantic_usable() and hasattr(self.semantic, "prepare"):
            self._unless_unavailable(self.semantic.prepare, passages)

    def forget_prepared(self) -> None:
        if hasattr(self.semantic, "forget_prepared"):
            self.semantic.forget_prepared()

    def missing(self, connection: Connection) -> list[IndexedPassage]:
        """Passages the semantic retriever has no vectors for (stored before it was chosen)."""
        return self.semantic.missing(connection) if hasattr(self.semantic, "missing") else []

    def _semantic_usable(self) -> bool:
        return self.semantic is not None and self._semantic_missing is None

    def _unless_unavailable(self, call, *args):
        """`call(*args)`, or None once the retriever's package turns out missing (logged once)."""
        try:
            return call(*args)
        except (VectorsUnavailable, EncoderUnavailable) as exc:
            self._semantic_missing = str(exc)
            log.error("knowledge: %s; passages are found by their words only", exc)
            return None

    def search(self, connection: Connection, query: AnalysedQuery, limit: int) -> list[Hit]:
        candidates = max(limit, CANDIDATES)
        rankings = [(self.lexical.search(connection, query, candidates), self.fusion.lexical_weight)]
        if self._semantic_usable():
            try:
                hits = self._unless_unavailable(self.semantic.search, connection, query, candidates)
            except EncoderOffline:
                hits = None  # its server is down for now (logged there): this search goes by words
            if hits is not None:
                rankings.append((hits, self.fusion.semantic_weight))
        scores: dict[int, float] = {}
        close: set[int] = set()
        for hits, weight in rankings:
            for rank, hit in enumerate(hits, start=1):
                scores[hit.passage_id] = scores.get(hit.passage_id, 0.0) + weight / (self.fusion.rrf_k + rank)
                if hit.close:
                    close.add(hit.passage_id)
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return [Hit(passage_id, score, close=passage_id in close) for passage_id, score in ranked[:limit]]
