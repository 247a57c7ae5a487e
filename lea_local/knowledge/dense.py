"""Dense retrieval: passages ranked by a sentence encoder (encoder.py), what finds the passage of
a question put in other words.

Each passage is encoded whole and as windows of two consecutive sentences; its score for a
question is its best window's cosine plus half its whole cosine. A question about one fact is
closest to the sentence that states it, and the whole passage breaks ties with its topic.
Measured on the test corpus (tests/fixtures/knowledge, recall@3): whole passages alone reach 0.64,
the best single sentence 0.68, two-sentence windows 0.72, and windows with half the whole 0.75.

The vectors are computed once, when a document is stored, before its transaction opens (`prepare`):
encoding takes far longer than writing (about 50 ms a window on 2 cores), and a write transaction
must not wait on it. They are stored in `knowledge_vectors`, beside the passages and with the
encoder's name, so every replica and every restart reads them instead of encoding again. Each
process keeps them in memory, brought up to date from a version stamp before each search, like
the word vectors (vectors.py). Passages without vectors of the current encoder (stored before it
was chosen) are found by `missing` and encoded by `lea-local knowledge reindex`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection

from lea_local.knowledge import tables
from lea_local.knowledge.encoder import TextEncoder
from lea_local.knowledge.french import AnalysedQuery
from lea_local.knowledge.index import Hit, IndexedPassage
from lea_local.knowledge.passage_cache import StampedPassageCache
from lea_local.knowledge.vectors import similarities

log = logging.getLogger(__name__)

WHOLE_WEIGHT = 0.5
"""How much a passage's whole cosine adds to its best window's (chosen on the test corpus)."""
MIN_SENTENCE_WORDS = 3
"""Shorter pieces (a list bullet's label, "Voir ci-dessous.") are not sentences worth a window."""
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_READ_PASSAGES = 1_000
"""Passages whose vectors are read per query when the cache is brought up to date."""


def encoded_texts(passage: IndexedPassage) -> list[str]:
    """What is encoded of a passage: itself whole, then each window of two consecutive sentences,
    each headed by the document's title and section."""
    heading = f"{passage.title} — {passage.section}"
    sentences = [s for s in _SENTENCE_END.split(passage.text) if len(s.split()) >= MIN_SENTENCE_WORDS]
    # Up to two sentences, the one window would be the whole passage again.
    windows = [" ".join(sentences[i : i + 2]) for i in range(len(sentences) - 1)] if len(sentences) > 2 else []
    return [f"{heading}\n{passage.text}", *(f"{heading}\n{window}" for window in windows)]


@dataclass(frozen=True)
class _Snapshot:
    """The passages' vectors as of one version stamp; replaced whole, never changed."""

    stamp: tuple
    ids: np.ndarray
    """Passage ids, ascending; row i of `whole` is passage ids[i]."""
    whole: np.ndarray
    windows: np.ndarray
    """Every passage's windows, passage after passage."""
    first_window: np.ndarray
    """Per passage, the row of its first window in `windows` (-1 when it has none)."""


class DenseIndex(StampedPassageCache[_Snapshot]):
    """A `KnowledgeIndex` sibling that ranks passages by a sentence encoder's cosines, from
    vectors stored in knowledge_vectors. Its hits say whether the passage is `close` in meaning."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self._prepared: dict[str, np.ndarray] = {}
        self._vectors: dict[int, tuple[object, np.ndarray]] = {}
        """Passage id → (its version, its vectors: whole first, then windows)."""
        self._warned_missing: int | None = None

    # --- writing ---------------------------------------------------------------------------

    def prepare(self, passages: Sequence[IndexedPassage]) -> None:
        """Encode passages about to be added (their ids do not matter yet), outside any
        transaction; `add` then takes their vectors instead of encoding inside one. Only the
        last call's are kept: writes are serialised."""
        texts = list(dict.fromkeys(t for p in passages for t in encoded_texts(p)))
        vectors = self.encoder.passages(texts)
        self._prepared = dict(zip(texts, vectors, strict=True))

    def add(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        rows = []
        for passage in passages:
            texts = encoded_texts(passage)
            missing = [t for t in texts if t not in self._prepared]
            if missing:
                self._prepared.update(zip(missing, self.encoder.passages(missing), strict=True))
            rows += [
                {
                    "passage_id": passage.id,
                    "encoder": self.encoder.name,
                    "position": position,
                    "vector": self._prepared[t].astype(np.float16).tobytes(),
                }
                for position, t in enumerate(texts)
            ]
        if rows:
            connection.execute(insert(tables.vectors), rows)

    def remove(self, connection: Connection, passage_ids: Sequence[int]) -> None:
        if passage_ids:
            connection.execute(delete(tables.vectors).where(tables.vectors.c.passage_id.in_(list(passage_ids))))

    def forget_prepared(self) -> None:
        self._prepared = {}

    def missing(self, connection: Connection) -> list[IndexedPassage]:
        """Passages without this encoder's vectors."""
        p, d, v = tables.passages, tables.documents, tables.vectors
        encoded = select(v.c.passage_id).where(v.c.encoder == self.encoder.name)
        rows = connection.execute(
            select(p.c.id, d.c.title, p.c.section, p.c.text)
            .join(d, d.c.id == p.c.document_id)
            .where(p.c.id.not_in(encoded))
            .order_by(p.c.id)
        )
        return [IndexedPassage(row.id, row.title, row.section, row.text) for row in rows]

    # --- searching -------------------------------------------------------------------------

    def search(self, connection: Connection, query: AnalysedQuery, limit: int) -> list[Hit]:
        if limit < 1 or not query.text.strip():
            return []
        found = self._cosines(connection, query.text)
        if found is None:
            return []
        ids, best, whole = found
        scores = best + WHOLE_WEIGHT * whole
        count = min(limit, len(scores))
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.lexsort((ids[top], -scores[top]))]
        close = self.encoder.close_similarity
        return [Hit(int(ids[i]), float(scores[i]), close=bool(best[i] >= close)) for i in top]

    def closeness(self, connection: Connection, text: str) -> dict[int, float]:
        """Each passage's best-window cosine with `text` asked as a question: what `close`
        compares with the encoder's close_similarity (to calibrate it)."""
        found = self._cosines(connection, text)
        return {} if found is None else dict(zip(found[0].tolist(), found[1].tolist(), strict=True))

    def _cosines(self, connection: Connection, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(passage ids, best-window cosines, whole-passage cosines), or None without vectors."""
        snapshot = self.current(connection)
        if len(snapshot.ids) == 0:
            return None
        question = self.encoder.queries([text])[0]
        if question.shape[0] != snapshot.whole.shape[1]:
            # A server that changed its model under the same name: the stored vectors are not
            # comparable with this one's.
            log.error(
                "knowledge: %s now gives vectors of %d dimensions, the stored ones have %d; "
                "name the new model (LEA_EMBEDDING_MODEL) and run `lea-local knowledge reindex`",
                self.encoder.name,
                question.shape[0],
                snapshot.whole.shape[1],
            )
            return None
        whole = similarities(snapshot.whole, question)
        best = whole.copy()  # a passage without a sentence long enough is its own window
        has = snapshot.first_window >= 0
        if len(snapshot.windows):
            best[has] = np.maximum.reduceat(similarities(snapshot.windows, question), snapshot.first_window[has])
        return snapshot.ids, best, whole

    def _rebuild(self, connection: Connection, stamp: tuple) -> _Snapshot:
        started = time.perf_counter()
        present = dict(connection.execute(self._VERSIONS).all())
        for gone in set(self._vectors) - set(present):
            del self._vectors[gone]
        stale = [i for i, version in present.items() if i not in self._vectors or self._vectors[i][0] != version]
        v = tables.vectors
        for start in range(0, len(stale), _READ_PASSAGES):
            batch = stale[start : start + _READ_PASSAGES]
            found: dict[int, list[bytes]] = {}
            rows = connection.execute(
                select(v.c.passage_id, v.c.vector)
                .where(v.c.encoder == self.encoder.name, v.c.passage_id.in_(bindparam("ids", expanding=True)))
                .order_by(v.c.passage_id, v.c.position),
                {"ids": batch},
            )
            for passage_id, vector in rows:
                found.setdefault(passage_id, []).append(vector)
            for passage_id, vectors in found.items():
                matrix = np.frombuffer(b"".join(vectors), dtype=np.float16).reshape(len(vectors), -1)
                self._vectors[passage_id] = (present[passage_id], matrix.astype(np.float32))
        ids = np.array(sorted(i for i in present if i in self._vectors), dtype=np.int64)
        self._warn_missing(len(present) - len(ids))
        if len(ids) == 0:
            empty = np.zeros((0, 0), dtype=np.float32)
            return _Snapshot(stamp, ids, empty, empty, np.zeros(0, dtype=np.int64))
        matrices = [self._vectors[int(i)][1] for i in ids]
        counts = np.array([len(m) - 1 for m in matrices])
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        snapshot = _Snapshot(
            stamp,
            ids,
            np.stack([m[0] for m in matrices]),
            np.concatenate([m[1:] for m in matrices]),
            np.where(counts > 0, offsets, -1),
        )
        log.debug("knowledge: dense vectors of %d passages read in %.3f s", len(ids), time.perf_counter() - started)
        return snapshot

    def _warn_missing(self, count: int) -> None:
        if count and count != self._warned_missing:
            log.warning(
                "knowledge: %d passages have no %s vectors and are found by words only; "
                "run `lea-local knowledge reindex` to encode them",
                count,
                self.encoder.name,
            )
        self._warned_missing = count
