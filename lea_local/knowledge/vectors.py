"""Word-vector retrieval: what finds the passage that answers a question put in other words.

Lexical search (index.py) needs a word in common; "la fin de semaine" never meets "le samedi".
`VectorIndex` compares meanings instead: a text is the idf-weighted mean of its content words'
vectors (French word vectors shipped by spaCy's `fr_core_news_md` pipeline: 20,000 distinct
300-d vectors for 500,000 words), unit-normalised, and passages are ranked by cosine similarity.
`HybridIndex` (fusion.py) fuses its ranking with the lexical one by reciprocal rank fusion. It is
the lighter of the two semantic retrievers (LEA_KNOWLEDGE_RETRIEVAL=words); the sentence encoder
(dense.py) finds more and is the default.

The passage vectors live in memory only, derived from the passages' own text in the database:
nothing to store or migrate, and nothing left behind when a passage goes. Before each search a
cheap version stamp of the passages is read; when another replica (or this one) changed them,
the cache is brought up to date, re-reading only the new passages' words. idf weights need the
whole corpus, so the matrix itself is recomputed then (a few hundred ms at 5,000 passages).

The vectors are read once per process, at the first search, from the pipeline package's files
(numpy's .npy table and spaCy's msgpack key → row map): importing spaCy itself would pull thinc
and, where it is installed, torch (seconds and hundreds of MB) for two files.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import srsly
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from lea_local.knowledge.french import STOP_WORDS, AnalysedQuery, fold, words
from lea_local.knowledge.index import Hit, IndexedPassage
from lea_local.knowledge.passage_cache import StampedPassageCache

log = logging.getLogger(__name__)

VECTORS_PACKAGE = "fr_core_news_md"
VECTORS_VERSION = "3.8.0"

RRF_K = 20
"""Reciprocal rank fusion's constant: a passage at rank r of a ranking adds weight / (RRF_K + r)."""
VECTOR_WEIGHT = 1.0
"""The vector ranking's weight in the fusion, against the lexical ranking's 1.
RRF_K and VECTOR_WEIGHT are the only tuned values, chosen on the odd-numbered questions of the
test corpus (tests/fixtures/knowledge/questions.tsv); the even-numbered ones are held out."""

_PRODUCT_ROWS = 512
"""Passages multiplied at once in a search: OpenBLAS runs a product this small on the calling
thread; a whole 5,000-passage matrix it splits across threads, and on a busy machine waiting for
them took up to 12 ms (p95) instead of 0.3 ms."""
_READ_PASSAGES = 1_000
"""Passages whose text is read per query when the cache is brought up to date."""
_MATRIX_CHUNK_WORDS = 16_384
"""Words gathered at once when the passage matrix is computed (bounds its scratch memory)."""


class VectorsUnavailable(RuntimeError):
    """The word-vector package is not installed (it is a dependency: reinstall lea-local)."""


def _murmurhash64a(data: bytes, seed: int) -> int:
    """MurmurHash64A (Austin Appleby's MurmurHash2, 64-bit): the hash spaCy keys its vectors by.
    The `murmurhash` package exposes only its 32-bit hash to Python."""
    mask = 0xFFFFFFFFFFFFFFFF
    m, r = 0xC6A4A7935BD1E995, 47
    length = len(data)
    h = (seed ^ (length * m)) & mask
    blocks = length // 8
    for i in range(blocks):
        k = int.from_bytes(data[8 * i : 8 * i + 8], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h ^= k
        h = (h * m) & mask
    tail = data[8 * blocks :]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & mask
    h ^= h >> r
    h = (h * m) & mask
    h ^= h >> r
    return h


def vector_key(word: str) -> int:
    """spaCy's key of a string (`spacy.strings.hash_string`)."""
    return _murmurhash64a(word.encode("utf-8"), 1)


class WordVectors:
    """A table of unit-length word vectors and the word → row map; `row` is thread-safe."""

    def __init__(self, table: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> None:
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        self.table = (table / np.maximum(norms, 1e-12)).astype(np.float32)
        order = np.argsort(keys)
        self._keys = keys[order]
        self._rows = rows[order]
        self.row = functools.lru_cache(maxsize=262_144)(self._row)

    @classmethod
    def from_directory(cls, vocab: Path) -> WordVectors:
        """Read a spaCy pipeline's vocab/ folder (mode "default" vectors: `vectors`, `key2row`)."""
        key2row: dict[int, int] = srsly.read_msgpack(vocab / "key2row")
        keys = np.fromiter(key2row.keys(), dtype=np.uint64, count=len(key2row))
        rows = np.fromiter(key2row.values(), dtype=np.int32, count=len(key2row))
        del key2row
        return cls(np.load(vocab / "vectors"), keys, rows)

    @property
    def size(self) -> int:
        return self.table.shape[0]

    def _row(self, word: str) -> int:
        """The row of a word's vector, -1 when it has none (`row` is this, cached)."""
        key = np.uint64(vector_key(word))
        at = int(np.searchsorted(self._keys, key))
        return int(self._rows[at]) if at < len(self._keys) and self._keys[at] == key else -1

    def rows(self, text: str) -> np.ndarray:
        """The rows of a text's content words, in order (stop words, numbers, letters alone and
        words without a vector left out). Words keep their accents: folding them changes their
        vector ("prêt" and "pret" are not the same row)."""
        found = []
        for word in words(text):
            if len(word) < 2 or word.isdigit() or fold(word) in STOP_WORDS:
                continue
            row = self.row(word)
            if row >= 0:
                found.append(row)
        return np.asarray(found, dtype=np.int32)


_loaded: WordVectors | None = None
_loading = threading.Lock()


def word_vectors() -> WordVectors:
    """The French word vectors, read at the first call (≈ 1 s, ≈ 40 MB) and kept for the process."""
    global _loaded
    with _loading:
        if _loaded is None:
            spec = importlib.util.find_spec(VECTORS_PACKAGE)
            if spec is None or spec.origin is None:
                raise VectorsUnavailable(f"the Python package {VECTORS_PACKAGE}=={VECTORS_VERSION} is not installed")
            vocab = Path(spec.origin).parent / f"{VECTORS_PACKAGE}-{VECTORS_VERSION}" / "vocab"
            started = time.perf_counter()
            _loaded = WordVectors.from_directory(vocab)
            log.info(
                "knowledge: loaded %d word vectors (%s %s) in %.1f s",
                _loaded.size,
                VECTORS_PACKAGE,
                VECTORS_VERSION,
                time.perf_counter() - started,
            )
        return _loaded


@dataclass(frozen=True)
class _Snapshot:
    """The passages' vectors as of one version stamp; replaced whole, never changed."""

    stamp: tuple
    ids: np.ndarray
    matrix: np.ndarray
    """One unit-length row per passage (zeros for a passage without a known word)."""
    idf: np.ndarray
    """Per vector row: log((N + 1) / (df + 0.5)), df counted in passages."""


def similarities(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector, in blocks of _PRODUCT_ROWS rows."""
    if len(matrix) <= _PRODUCT_ROWS:
        return matrix @ vector
    return np.concatenate([matrix[i : i + _PRODUCT_ROWS] @ vector for i in range(0, len(matrix), _PRODUCT_ROWS)])


def _passage_text(title: str, section: str, body: str) -> str:
    return f"{title}\n{section}\n{body}"


class VectorIndex(StampedPassageCache[_Snapshot]):
    """A `KnowledgeIndex` sibling that ranks passages by the cosine of idf-weighted mean word
    vectors. It reads the passages' text itself, so `add` and `remove` have nothing to do."""

    _PASSAGES = text(
        "SELECT p.id, d.title, p.section, p.text FROM knowledge_passages p "
        "JOIN knowledge_documents d ON d.id = p.document_id WHERE p.id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))

    def __init__(self, vectors: WordVectors | None = None) -> None:
        super().__init__()
        self._vectors = vectors
        self._words: dict[int, tuple[object, np.ndarray]] = {}
        """Passage id → (its version, its content words' rows): an update re-reads only new passages."""

    @property
    def vectors(self) -> WordVectors:
        if self._vectors is None:
            self._vectors = word_vectors()
        return self._vectors

    def add(self, connection: Connection, passages: Sequence[IndexedPassage]) -> None:
        """Nothing to store: the next search sees the new passages through the version stamp."""

    def remove(self, connection: Connection, passage_ids: Sequence[int]) -> None:
        """Nothing to delete: the next search drops the passages' vectors from the cache."""

    def search(self, connection: Connection, query: AnalysedQuery, limit: int) -> list[Hit]:
        snapshot = self.current(connection)
        if limit < 1 or len(snapshot.ids) == 0:
            return []
        vector = self._embed(self.vectors.rows(query.text), snapshot.idf)
        if vector is None:
            return []
        similarity = similarities(snapshot.matrix, vector)
        count = min(limit, len(similarity))
        best = np.argpartition(-similarity, count - 1)[:count]
        best = best[np.lexsort((snapshot.ids[best], -similarity[best]))]
        return [Hit(int(snapshot.ids[i]), float(similarity[i])) for i in best if similarity[i] > 0]

    def cached_passage_ids(self) -> set[int]:
        """The passages whose vectors the cache holds (for tests and diagnostics)."""
        snapshot = self._snapshot
        return set() if snapshot is None else {int(i) for i in snapshot.ids}

    def _rebuild(self, connection: Connection, stamp: tuple) -> _Snapshot:
        started = time.perf_counter()
        present = dict(connection.execute(self._VERSIONS).all())
        for gone in set(self._words) - set(present):
            del self._words[gone]
        stale = [i for i, version in present.items() if i not in self._words or self._words[i][0] != version]
        vectors = self.vectors
        for start in range(0, len(stale), _READ_PASSAGES):
            rows = connection.execute(self._PASSAGES, {"ids": stale[start : start + _READ_PASSAGES]})
            for passage_id, title, section, body in rows:
                self._words[passage_id] = (present[passage_id], vectors.rows(_passage_text(title, section, body)))
        ids = np.array(sorted(i for i in present if i in self._words), dtype=np.int64)
        passage_rows = [self._words[int(i)][1] for i in ids]
        idf = self._idf(passage_rows, len(ids))
        matrix = self._matrix(passage_rows, idf)
        log.debug("knowledge: vectors of %d passages computed in %.3f s", len(ids), time.perf_counter() - started)
        return _Snapshot(stamp, ids, matrix, idf)

    def _idf(self, passage_rows: list[np.ndarray], passages: int) -> np.ndarray:
        size = self.vectors.size
        unique = [np.unique(rows) for rows in passage_rows]
        df = np.bincount(np.concatenate(unique), minlength=size) if unique else np.zeros(size, dtype=np.int64)
        return np.log((passages + 1) / (df + 0.5)).astype(np.float32)

    def _matrix(self, passage_rows: list[np.ndarray], idf: np.ndarray) -> np.ndarray:
        """Each passage's idf-weighted sum of word vectors, unit-normalised; computed in chunks
        of passages (a gather of every word's vector at once would take GBs at 1,000 pages)."""
        table = self.vectors.table
        matrix = np.zeros((len(passage_rows), table.shape[1]), dtype=np.float32)
        start = 0
        while start < len(passage_rows):
            end, words_in_chunk = start, 0
            while end < len(passage_rows) and (end == start or words_in_chunk < _MATRIX_CHUNK_WORDS):
                words_in_chunk += len(passage_rows[end])
                end += 1
            chunk = passage_rows[start:end]
            lengths = np.array([len(rows) for rows in chunk])
            rows = np.concatenate(chunk) if words_in_chunk else np.zeros(0, dtype=np.int32)
            if len(rows):
                weighted = table[rows] * idf[rows, None]
                nonempty = lengths > 0
                offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
                matrix[start:end][nonempty] = np.add.reduceat(weighted, offsets, axis=0)
            start = end
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms > 0, norms, 1.0)

    def _embed(self, rows: np.ndarray, idf: np.ndarray) -> np.ndarray | None:
        if len(rows) == 0:
            return None
        vector = (self.vectors.table[rows] * idf[rows, None]).sum(axis=0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else None
