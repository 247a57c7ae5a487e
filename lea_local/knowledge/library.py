"""`KnowledgeBase`: the agency's documents, as files in a directory and passages in the database.

Everything else (the CLI, the admin API, the turns) goes through this facade. The directory
(LEA_KNOWLEDGE_DIR) holds each document under its own file name; the conversation database holds
the documents' rows, their passages and the passage index (index.py). The schema comes from the
store's migrations: open the ConversationStore (or run `upgrade_schema`) first.

A change is all or nothing: a document is read and cut into passages before anything is
written (read in a child process with limits, isolation.py, and refused past the per-document
caps of ExtractionLimits: DocumentTooLarge names the setting); then its file and its rows are replaced together (the file is swapped in just before
the transaction commits, and swapped back if the commit fails). A rejected file changes nothing.

Searches run concurrently (each on its own pooled connection). Writes are serialised: by a lock
in this process, and on PostgreSQL by an advisory lock too, since replicas may share the database.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine, Row

from lea_local.knowledge import tables
from lea_local.knowledge.chunking import Chunk, chunk_document
from lea_local.knowledge.dense import DenseIndex
from lea_local.knowledge.directory import claim_directory
from lea_local.knowledge.encoder import TextEncoder, shared_e5_encoder
from lea_local.knowledge.extract import DocumentRejected, DocumentTooLarge, ExtractedDocument, ExtractionLimits
from lea_local.knowledge.french import AgencyThesaurus, Thesaurus, analyse_query, default_thesaurus
from lea_local.knowledge.fusion import DENSE_FUSION, WORDS_FUSION, HybridIndex
from lea_local.knowledge.index import IndexedPassage, KnowledgeIndex, index_for
from lea_local.knowledge.isolation import extract_isolated
from lea_local.knowledge.passage_cache import StampedPassageCache
from lea_local.knowledge.vectors import VectorIndex
from lea_local.store.database import outage_is_unavailable, utcnow

if TYPE_CHECKING:
    from lea_local.settings import Settings

log = logging.getLogger(__name__)

MAX_FILE_NAME_BYTES = 255
_WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('lea-local knowledge writes', 0))"
_TEMPORARY_PREFIX = ".lea-"
_UPLOAD_SUFFIX = ".upload"
STALE_UPLOAD_SECONDS = 600
"""An upload's temporary file older than this is left over from one that failed (it lives for
the seconds its document's rows take to write): removed at start and by reindex."""
_ENCODE_BATCH = 200
_MAX_TERM_COUNTS = 100_000

Retrieval = Literal["dense", "words", "lexical"]
"""How passages are found beside their words (fusion.py): a sentence encoder, word vectors, or nothing."""


class DocumentNotFound(LookupError):
    """No document with this id: the caller answers 404."""


@dataclass(frozen=True)
class Document:
    id: int
    file_name: str
    title: str
    format: str
    sha256: str
    size_bytes: int
    passages: int
    added_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Passage:
    id: int
    document_id: int
    file_name: str
    title: str
    section: str
    text: str
    score: float
    close: bool = False
    """The sentence encoder found it close in meaning to the question (grounding keeps it)."""


@dataclass(frozen=True)
class ReindexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    """File name → why it was not taken (its earlier passages, if any, are dropped)."""
    encoded: int = 0
    """Passages of unchanged documents given the current encoder's vectors (stored before it was chosen)."""


def safe_file_name(name: str) -> str:
    """The name a document is stored under: its last path component, without control
    characters; a name that would be hidden, empty or climb out of the directory is rejected."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    if base in ("", ".", "..") or base.startswith("."):
        raise DocumentRejected(f"invalid file name {name!r}: give the document a plain name such as guide.pdf")
    if len(base.encode()) > MAX_FILE_NAME_BYTES:
        raise DocumentRejected(f"the file name is longer than {MAX_FILE_NAME_BYTES} bytes")
    return base


def _aware(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes; they were stored in UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _document(row: Row) -> Document:
    return Document(
        id=row.id,
        file_name=row.file_name,
        title=row.title,
        format=row.format,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        passages=row.passages,
        added_at=_aware(row.added_at),
        updated_at=_aware(row.updated_at),
    )


@dataclass(frozen=True)
class _Counts:
    stamp: tuple
    counts: dict[tuple[str, int], int]
    """(word, cap) → passages its search finds; filled as words are asked, for this stamp only."""


class _TermCounts(StampedPassageCache[_Counts]):
    def _rebuild(self, connection: Connection, stamp: tuple) -> _Counts:
        return _Counts(stamp, {})


def sentence_encoder(settings: Settings) -> TextEncoder:
    """The configured encoder: the server at LEA_EMBEDDING_URL, else the bundled one."""
    if settings.embedding_url is None:
        return shared_e5_encoder()
    from lea_local.knowledge.remote_encoder import RemoteEncoder

    return RemoteEncoder(
        settings.embedding_url,
        settings.embedding_model,
        api_key=settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None,
        query_prefix=settings.embedding_query_prefix,
        passage_prefix=settings.embedding_passage_prefix,
        close_similarity=settings.embedding_close_similarity,
    )


def knowledge_base_for(settings: Settings, engine: Engine) -> KnowledgeBase:
    """The knowledge base as configured (LEA_KNOWLEDGE_*, LEA_EMBEDDING_*), in `engine`'s database."""
    encoder = sentence_encoder(settings) if settings.knowledge_retrieval == "dense" else None
    knowledge = KnowledgeBase(
        engine,
        settings.effective_knowledge_dir,
        retrieval=settings.knowledge_retrieval,
        encoder=encoder,
        agency_thesaurus=settings.effective_knowledge_thesaurus,
        limits=ExtractionLimits.from_settings(settings),
    )
    if settings.knowledge_thesaurus is not None and not settings.knowledge_thesaurus.exists():
        log.warning(
            "knowledge: LEA_KNOWLEDGE_THESAURUS %s does not exist: the shipped thesaurus alone until it does",
            settings.knowledge_thesaurus,
        )
    knowledge.thesaurus  # noqa: B018 - the agency's file read (and logged) at start, not at the first turn
    return knowledge


class KnowledgeBase:
    """Blocking API: call it from a worker thread, not the event loop."""

    def __init__(
        self,
        engine: Engine,
        directory: Path,
        thesaurus: Thesaurus | None = None,
        *,
        retrieval: Retrieval = "dense",
        encoder: TextEncoder | None = None,
        agency_thesaurus: Path | None = None,
        limits: ExtractionLimits | None = None,
    ) -> None:
        """`encoder`: the sentence encoder of `dense` retrieval (unset: the bundled
        multilingual-e5-small; see `sentence_encoder` for the configured one). `thesaurus`: the
        questions' expansions (unset: the shipped thesaurus, with the agency's own lines from the
        file `agency_thesaurus` when there is one, read again whenever it changes). `limits`: what
        one document may cost (unset: the settings' defaults)."""
        self.engine = engine
        self.limits = limits or ExtractionLimits()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory_id = claim_directory(engine, self.directory)
        self._lexical: KnowledgeIndex = index_for(engine)
        if retrieval == "dense":
            self._index = HybridIndex(self._lexical, DenseIndex(encoder or shared_e5_encoder()), DENSE_FUSION)
        elif retrieval == "words":
            self._index = HybridIndex(self._lexical, VectorIndex(), WORDS_FUSION)
        else:
            self._index = HybridIndex(self._lexical, None, WORDS_FUSION)
        self._thesaurus = thesaurus
        self._agency_thesaurus = AgencyThesaurus(agency_thesaurus) if agency_thesaurus is not None else None
        self._term_counts = _TermCounts()
        self._counted_with: Thesaurus | None = None
        self._writes = threading.Lock()
        self._sweep_uploads()

    # --- reading ---------------------------------------------------------------------------

    @outage_is_unavailable
    def documents(self) -> list[Document]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(tables.documents).order_by(tables.documents.c.file_name))
            return [_document(row) for row in rows]

    @outage_is_unavailable
    def document(self, document_id: int) -> Document:
        with self.engine.connect() as connection:
            row = connection.execute(select(tables.documents).where(tables.documents.c.id == document_id)).first()
        if row is None:
            raise DocumentNotFound(f"document {document_id} not found")
        return _document(row)

    @property
    def thesaurus(self) -> Thesaurus:
        """What expands questions now (the agency's file is read again when it changes)."""
        if self._thesaurus is not None:
            return self._thesaurus
        return self._agency_thesaurus.current() if self._agency_thesaurus is not None else default_thesaurus()

    def expansions(self, query: str) -> list[str]:
        """The thesaurus entries `query` is also searched with (accents folded)."""
        return [phrase.text for phrase in analyse_query(query, self.thesaurus).expansions]

    @property
    def agency_thesaurus(self) -> AgencyThesaurus | None:
        """The agency's own rules (None when this knowledge base was given a thesaurus)."""
        return self._agency_thesaurus if self._thesaurus is None else None

    @outage_is_unavailable
    def search(self, query: str, limit: int = 5, *, lexical_only: bool = False) -> list[Passage]:
        """The passages that best answer `query`, best first ([] when it has no searchable word):
        the lexical and semantic rankings fused (fusion.py), or with `lexical_only` only the
        passages that hold the query's terms or their thesaurus synonyms (what words alone find;
        `term_counts` counts them for grounding)."""
        analysed = analyse_query(query, self.thesaurus)
        if analysed.empty or limit < 1:
            return []
        with self.engine.connect() as connection:
            hits = (self._lexical if lexical_only else self._index).search(connection, analysed, limit)
            if not hits:
                return []
            p, d = tables.passages, tables.documents
            rows = connection.execute(
                select(p.c.id, p.c.document_id, d.c.file_name, d.c.title, p.c.section, p.c.text)
                .join(d, d.c.id == p.c.document_id)
                .where(p.c.id.in_([hit.passage_id for hit in hits]))
            )
            found = {row.id: row for row in rows}
        return [
            Passage(row.id, row.document_id, row.file_name, row.title, row.section, row.text, hit.score, hit.close)
            for hit in hits
            if (row := found.get(hit.passage_id)) is not None
        ]

    @property
    def encoder_name(self) -> str | None:
        """The sentence encoder's name (its vector space), None without one."""
        semantic = self._index.semantic
        return semantic.encoder.name if isinstance(semantic, DenseIndex) else None

    @outage_is_unavailable
    def term_counts(self, words: Sequence[str], cap: int) -> dict[str, int]:
        """How many passages each word's lexical search finds (its thesaurus synonyms included),
        counted up to `cap`: what grounding weighs a question's terms by. Remembered until the
        documents change, so a turn asks the index only for words not seen since."""
        thesaurus = self.thesaurus
        with self.engine.connect() as connection:
            known = self._term_counts.current(connection).counts
            # Words without end (random text) cannot fill memory; a synonym the agency added
            # counts from now on.
            if len(known) > _MAX_TERM_COUNTS or thesaurus is not self._counted_with:
                known.clear()
                self._counted_with = thesaurus
            for word in words:
                if (word, cap) not in known:
                    analysed = analyse_query(word, thesaurus)
                    found = [] if analysed.empty else self._lexical.search(connection, analysed, cap)
                    known[(word, cap)] = len(found)
        return {word: known[(word, cap)] for word in words}

    @outage_is_unavailable
    def closeness(self, query: str) -> dict[int, float]:
        """Passage id → how close in meaning the sentence encoder finds it to `query` (its
        best-window cosine, compared with the encoder's close_similarity); {} without one."""
        semantic = self._index.semantic
        if not isinstance(semantic, DenseIndex) or not query.strip():
            return {}
        with self.engine.connect() as connection:
            return semantic.closeness(connection, query)

    # --- writing ---------------------------------------------------------------------------

    @outage_is_unavailable
    def add(self, file_name: str, data: bytes, cancelled: threading.Event | None = None) -> Document:
        """Store a document (a new one, or a new version of the one with this name); the same
        content again changes nothing. DocumentRejected, and nothing changed, for a bad file
        (DocumentTooLarge past a limit). Setting `cancelled` (the request ended) stops reading
        the document: isolation.ExtractionCancelled, nothing changed."""
        name = safe_file_name(file_name)
        digest = hashlib.sha256(data).hexdigest()
        path = self.directory / name
        existing = self._by_name(name)
        if existing is not None and existing.sha256 == digest and path.is_file():
            return existing
        # Read outside the write lock: a slow document does not hold other writes back.
        extracted, chunks = self._read(name, data, cancelled)
        with self._writes:
            existing = self._by_name(name)
            if existing is not None and existing.sha256 == digest and path.is_file():
                return existing
            self._prepare(extracted, chunks)
            temporary = self._write_temporary(data)
            backup: Path | None = None
            swapped = False
            try:
                with self._transaction() as connection:
                    document = self._store(connection, name, extracted, chunks, digest, len(data))
                    backup = self._swap_in(temporary, path)
                    swapped = True
                    # Leaving this block commits; if that fails, the old file comes back below.
            except BaseException:
                self._discard(temporary)
                if swapped:
                    self._restore(backup, path)
                raise
            finally:
                self._index.forget_prepared()
            self._discard(backup)
        log.info("knowledge: stored %s (%d passages)", name, document.passages)
        return document

    @outage_is_unavailable
    def remove(self, document_id: int) -> Document:
        """Delete a document: its file, its rows and every one of its passages."""
        with self._writes:
            aside: Path | None = None
            moved = False
            try:
                with self._transaction() as connection:
                    row = connection.execute(
                        select(tables.documents).where(tables.documents.c.id == document_id)
                    ).first()
                    if row is None:
                        raise DocumentNotFound(f"document {document_id} not found")
                    document = _document(row)
                    self._delete_rows(connection, document.id)
                    path = self.directory / document.file_name
                    aside = self._set_aside(path)
                    moved = True
            except BaseException:
                if moved and aside is not None:
                    os.replace(aside, path)  # the commit failed: the document is still there
                raise
            self._discard(aside)
        log.info("knowledge: removed %s", document.file_name)
        return document

    @outage_is_unavailable
    def reindex(self) -> ReindexReport:
        """Make the index match the directory: new and changed files (by sha256) indexed,
        vanished ones forgotten, unreadable ones reported and their old passages dropped."""
        report = ReindexReport()
        with self._writes:
            self._sweep_uploads()
            known = {document.file_name: document for document in self.documents()}
            on_disk = sorted(
                entry.name
                for entry in os.scandir(self.directory)
                if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".")
            )
            for name in on_disk:
                data = (self.directory / name).read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                existing = known.get(name)
                if existing is not None and existing.sha256 == digest:
                    report.unchanged.append(name)
                    continue
                try:
                    if safe_file_name(name) != name:
                        raise DocumentRejected("the file name has control characters or is not in NFC form")
                    extracted, chunks = self._read(name, data)
                except DocumentRejected as exc:
                    report.rejected[name] = str(exc)
                    if existing is not None:
                        with self._transaction() as connection:
                            self._delete_rows(connection, existing.id)
                    continue
                self._prepare(extracted, chunks)
                try:
                    with self._transaction() as connection:
                        self._store(connection, name, extracted, chunks, digest, len(data))
                finally:
                    self._index.forget_prepared()
                (report.updated if existing is not None else report.added).append(name)
            for name in sorted(set(known) - set(on_disk)):
                with self._transaction() as connection:
                    self._delete_rows(connection, known[name].id)
                report.removed.append(name)
            report = replace(report, encoded=self._encode_missing())
        log.info(
            "knowledge: reindexed (%d added, %d updated, %d removed, %d unchanged, %d rejected)",
            len(report.added),
            len(report.updated),
            len(report.removed),
            len(report.unchanged),
            len(report.rejected),
        )
        return report

    # --- inside ----------------------------------------------------------------------------

    def _read(
        self, name: str, data: bytes, cancelled: threading.Event | None = None
    ) -> tuple[ExtractedDocument, list[Chunk]]:
        """The document's text (read in a child process with limits) and its passages."""
        extracted = extract_isolated(name, data, self.limits, cancelled)
        chunks = chunk_document(extracted)
        if len(chunks) > self.limits.max_passages:
            raise DocumentTooLarge(
                f"the document makes {len(chunks):,} passages, more than {self.limits.max_passages:,}",
                "LEA_KNOWLEDGE_MAX_PASSAGES",
            )
        return extracted, chunks

    def _prepare(self, extracted: ExtractedDocument, chunks: list[Chunk]) -> None:
        """Encode a document's passages before its transaction (the slow part of indexing them)."""
        self._index.prepare([IndexedPassage(0, extracted.title, c.section, c.text) for c in chunks])

    def _encode_missing(self) -> int:
        """Give the semantic retriever's vectors to the passages that lack them, a batch at a time
        (each batch encoded outside its transaction; one that changed meanwhile is skipped)."""
        with self.engine.connect() as connection:
            missing = self._index.missing(connection)
        encoded = 0
        for start in range(0, len(missing), _ENCODE_BATCH):
            batch = missing[start : start + _ENCODE_BATCH]
            self._index.prepare(batch)
            try:
                with self._transaction() as connection:
                    still = {passage.id for passage in self._index.missing(connection)}
                    batch = [passage for passage in batch if passage.id in still]
                    self._index.add_semantic(connection, batch)
                    # Their documents' new updated_at is what tells every process's cache (the
                    # version stamp) to read the new vectors.
                    p, d = tables.passages, tables.documents
                    owners = select(p.c.document_id).where(p.c.id.in_([passage.id for passage in batch]))
                    connection.execute(update(d).where(d.c.id.in_(owners)).values(updated_at=utcnow()))
            finally:
                self._index.forget_prepared()
            encoded += len(batch)
        return encoded

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(_WRITE_LOCK)  # released when the transaction ends
            yield connection

    def _by_name(self, name: str) -> Document | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(tables.documents).where(tables.documents.c.file_name == name)).first()
        return _document(row) if row is not None else None

    def _store(
        self,
        connection: Connection,
        name: str,
        extracted: ExtractedDocument,
        chunks: list[Chunk],
        digest: str,
        size: int,
    ) -> Document:
        """Write a document's rows and passages, replacing those of the same name."""
        now = utcnow()
        values = {
            "title": extracted.title,
            "format": extracted.format,
            "sha256": digest,
            "size_bytes": size,
            "passages": len(chunks),
            "updated_at": now,
        }
        d = tables.documents
        # Read again inside the transaction (under the write lock): another replica may have
        # stored this name since.
        existing = connection.execute(select(d.c.id).where(d.c.file_name == name)).scalar()
        if existing is not None:
            self._delete_passages(connection, existing)
            connection.execute(update(d).where(d.c.id == existing).values(**values))
            document_id = existing
        else:
            document_id = connection.execute(
                insert(d).values(file_name=name, added_at=now, **values).returning(d.c.id)
            ).scalar_one()
        if chunks:
            ids = connection.execute(
                insert(tables.passages).returning(tables.passages.c.id, sort_by_parameter_order=True),
                [
                    {"document_id": document_id, "ordinal": c.ordinal, "section": c.section, "text": c.text}
                    for c in chunks
                ],
            ).scalars()
            self._index.add(
                connection,
                [IndexedPassage(i, extracted.title, c.section, c.text) for i, c in zip(ids, chunks, strict=True)],
            )
        row = connection.execute(select(d).where(d.c.id == document_id)).one()
        return _document(row)

    def _delete_passages(self, connection: Connection, document_id: int) -> None:
        p = tables.passages
        ids = list(connection.execute(select(p.c.id).where(p.c.document_id == document_id)).scalars())
        self._index.remove(connection, ids)
        connection.execute(delete(p).where(p.c.document_id == document_id))

    def _delete_rows(self, connection: Connection, document_id: int) -> None:
        self._delete_passages(connection, document_id)
        connection.execute(delete(tables.documents).where(tables.documents.c.id == document_id))

    def _write_temporary(self, data: bytes) -> Path:
        temporary = self.directory / f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}{_UPLOAD_SUFFIX}"
        try:
            with open(temporary, "xb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:  # a full disk: no half-written file left behind
            temporary.unlink(missing_ok=True)
            raise
        return temporary

    def _sweep_uploads(self) -> list[str]:
        """Remove the temporary files of uploads that never finished (a crash, a full disk before
        this was cleaned up): those older than STALE_UPLOAD_SECONDS, so that another replica's
        upload under way in a shared directory is left alone. Returns their names."""
        swept = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return swept
        now = time.time()
        for entry in entries:
            if not (entry.name.startswith(_TEMPORARY_PREFIX) and entry.name.endswith(_UPLOAD_SUFFIX)):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > STALE_UPLOAD_SECONDS:
                    os.unlink(entry.path)
                    swept.append(entry.name)
            except OSError as error:  # a read-only directory: left for a later start
                log.warning("knowledge: cannot remove the stale upload %s: %s", entry.name, error)
        if swept:
            log.info("knowledge: removed %d unfinished upload file(s): %s", len(swept), ", ".join(swept))
        return swept

    def _swap_in(self, temporary: Path, path: Path) -> Path | None:
        """Put the new file in place; returns where the old one was kept (None: there was none)."""
        backup = self._set_aside(path)
        try:
            os.replace(temporary, path)
        except OSError:
            self._restore(backup, path)
            raise
        return backup

    def _set_aside(self, path: Path) -> Path | None:
        if not path.exists():
            return None
        aside = self.directory / f"{_TEMPORARY_PREFIX}{uuid.uuid4().hex}.previous"
        os.replace(path, aside)
        return aside

    @staticmethod
    def _restore(backup: Path | None, path: Path) -> None:
        if backup is not None:
            os.replace(backup, path)
        else:
            path.unlink(missing_ok=True)

    @staticmethod
    def _discard(path: Path | None) -> None:
        if path is not None:
            path.unlink(missing_ok=True)
