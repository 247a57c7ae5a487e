"""The knowledge base's admin API, behind the agent API's key: upload, list and delete the
agency's documents, search their passages as a turn would (`lea_local.knowledge`), and read or
replace the agency's own thesaurus rules.

Documents are read, indexed and deleted in worker threads: extracting a PDF and writing its
passages must not hold the event loop. A rejected file (encrypted PDF, a zip that is no DOCX,
an unknown format, no text) is a 400 that changes nothing; one past a per-document limit (pages,
characters, passages, a DOCX's XML, the memory or CPU time its reading may take) is a 413 naming
the setting, and changes nothing either. Reading runs in a child process (isolation.py), killed
when the client goes away or the request is cancelled.

Writes (uploads and deletes) take this server's one write slot (`WriteSlot`), waited for on the
event loop, never in a worker thread: those threads are shared with the turns, and uploads queued
in them once left none for a chat turn. One write runs and one more may wait; any other is
answered 503 with Retry-After at once, and changes nothing.

The agency's thesaurus is parsed in a worker thread too (a megabyte of rules takes seconds): one
at a time, under a limiter of its own. A PUT with a line of more than MAX_RULE_ENTRIES entries is
a 400 naming the line, and changes nothing.

A write the disk refuses says why, and changes nothing: 507 when it is full (ENOSPC), 503 with
Retry-After when the knowledge directory is read-only or not writable (EROFS, EACCES)."""

from __future__ import annotations

import asyncio
import errno
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
import msgspec
from litestar import Request, delete, get, post, put
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, JSONBody, Parameter

from lea_local.api.errors import ApiError
from lea_local.api.schemas import ErrorResponse
from lea_local.api.validation import is_blank
from lea_local.knowledge import (
    MAX_RULE_ENTRIES,
    AgencyThesaurus,
    Document,
    DocumentNotFound,
    DocumentRejected,
    KnowledgeBase,
    Passage,
    Thesaurus,
    lines_too_long,
)
from lea_local.services import Services

T = TypeVar("T")

MAX_SEARCH_RESULTS = 50
MAX_THESAURUS_CHARS = 1_000_000
WRITE_RETRY_AFTER_SECONDS = 10
"""Retry-After of the 503 a write gets while another runs and one more waits."""


class KnowledgeDocument(msgspec.Struct):
    id: int
    file_name: str
    title: str
    format: str
    sha256: str
    size_bytes: int
    passages: int
    """How many passages the document was cut into."""
    added_at: datetime
    updated_at: datetime


class DocumentResponse(msgspec.Struct):
    success: bool
    document: KnowledgeDocument


class DocumentsResponse(msgspec.Struct):
    success: bool
    documents: list[KnowledgeDocument]


class KnowledgePassage(msgspec.Struct):
    document_id: int
    file_name: str
    title: str
    section: str
    score: float
    """Higher is better; comparable within one search only."""
    text: str


class SearchResponse(msgspec.Struct):
    success: bool
    query: str
    passages: list[KnowledgePassage]
    """Best first."""
    expansions: list[str] = msgspec.field(default_factory=list)
    """The thesaurus entries (shipped or the agency's) the query was also searched with, accents
    folded: what shows that a rule applies."""


class ThesaurusRules(msgspec.Struct):
    text: str
    """The agency's rules, one a line: `a, b, c` (said for one another) or `a, b => c` (a question
    with a or b also looks for c); `#` starts a comment. Replaces the rules there were."""


class ThesaurusResponse(msgspec.Struct):
    success: bool
    text: str
    rules: int
    """How many rules the text makes (beside the shipped thesaurus' own)."""
    lines_without_rule: list[int]
    """Numbers of the lines that say something but make no rule (only stop words, or nothing on
    one side of `=>`)."""


@dataclass
class DocumentUpload:
    file: UploadFile | None = None
    """The document (Markdown, text, HTML, PDF, DOCX); it keeps its file name. A file of the same
    name replaces the document."""


_COMMON_ERRORS = {
    401: "Missing or wrong API key (X-API-Key or Authorization: Bearer)",
    503: "Still loading, or the database is unavailable; retry after Retry-After seconds",
}


def _errors(specific: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorResponse, description=description, generate_examples=False)
        for code, description in {**_COMMON_ERRORS, **(specific or {})}.items()
    }


class WriteSlot:
    """One knowledge write at a time on this server, one more waiting for it (on the event loop,
    holding no thread); any other is refused at once. The slot is given back when the write's
    worker thread has returned, even when its request was cancelled and the thread abandoned:
    the next write never waits in a thread for the knowledge base's own lock."""

    MAX_WAITING = 1

    def __init__(self) -> None:
        self._busy = False
        self._waiting = 0
        self._freed: anyio.Event | None = None

    @asynccontextmanager
    async def held(self) -> AsyncIterator[_Release]:
        """Hold the slot; the body runs its thread through the `_Release` it gets, which gives the
        slot back when that thread returns. ApiError 503 when one write already waits."""
        if self._busy and self._waiting >= self.MAX_WAITING:
            raise ApiError(
                status_code=503,
                detail="another document is being written to the knowledge base and one more is waiting; "
                "send this one again in a moment",
                headers={"Retry-After": str(WRITE_RETRY_AFTER_SECONDS)},
            )
        self._waiting += 1
        try:
            while self._busy:
                if self._freed is None:
                    self._freed = anyio.Event()
                await self._freed.wait()
        finally:
            self._waiting -= 1
        self._busy = True
        release = _Release(self, asyncio.get_running_loop())
        try:
            yield release
        finally:
            release.unless_in_thread()

    def _free(self) -> None:
        self._busy = False
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()


class _Release:
    """Gives a `WriteSlot` back once: when the write's thread returns (from that thread, through
    the event loop), or when the request ends if no thread was started."""

    def __init__(self, slot: WriteSlot, loop: asyncio.AbstractEventLoop) -> None:
        self._slot = slot
        self._loop = loop
        self._thread_started = False
        self._done = False

    def _give_back(self) -> None:
        if not self._done:
            self._done = True
            self._slot._free()

    def unless_in_thread(self) -> None:
        if not self._thread_started:
            self._give_back()

    async def run(self, function, *, abandon_on_cancel: bool = False):
        """`function` in a worker thread; the slot is given back when it returns."""

        def work():
            try:
                return function()
            finally:
                try:
                    self._loop.call_soon_threadsafe(self._give_back)
                except RuntimeError:  # the loop is closed: the server has stopped
                    pass

        self._thread_started = True
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=abandon_on_cancel)


_write_slots: weakref.WeakKeyDictionary[KnowledgeBase, WriteSlot] = weakref.WeakKeyDictionary()


def _write_slot(knowledge: KnowledgeBase) -> WriteSlot:
    slot = _write_slots.get(knowledge)
    if slot is None:
        slot = _write_slots[knowledge] = WriteSlot()
    return slot


STORAGE_RETRY_AFTER_SECONDS = 60
"""Retry-After of the 503 for a knowledge directory that cannot be written (an admin must act)."""


def _storage_error(exc: OSError, what: str) -> ApiError | None:
    """What a write that the disk refused is answered (None: another error, a 500): 507 when it
    is full, 503 when it is read-only or not ours to write; the write changed nothing."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(
            status_code=507,
            detail=f"{what}: the server's disk is full (no space left for the knowledge base); "
            "free some space, then send it again. Nothing was changed",
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return ApiError(
            status_code=503,
            detail=f"{what}: the knowledge base's directory cannot be written ({reason}); "
            "an administrator must make it writable. Nothing was changed",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)},
        )
    return None


def _knowledge(services: Services) -> KnowledgeBase:
    if services.knowledge is None:
        raise ApiError(status_code=503, detail="the knowledge base is not available on this server")
    return services.knowledge


def _document(document: Document) -> KnowledgeDocument:
    return KnowledgeDocument(
        id=document.id,
        file_name=document.file_name,
        title=document.title,
        format=document.format,
        sha256=document.sha256,
        size_bytes=document.size_bytes,
        passages=document.passages,
        added_at=document.added_at,
        updated_at=document.updated_at,
    )


def _passage(passage: Passage) -> KnowledgePassage:
    return KnowledgePassage(
        document_id=passage.document_id,
        file_name=passage.file_name,
        title=passage.title,
        section=passage.section,
        score=passage.score,
        text=passage.text,
    )


@post(
    "/documents",
    status_code=201,
    summary="Add a document to the knowledge base (or replace the one of the same file name)",
    responses=_errors(
        {
            400: "The file is missing, or rejected: unsupported format, encrypted PDF, not a real DOCX, no text",
            413: "The file is larger than LEA_KNOWLEDGE_MAX_UPLOAD_BYTES, or the document passes a "
            "per-document limit (LEA_KNOWLEDGE_MAX_PAGES, _CHARS, _PASSAGES, _DOCX_XML_BYTES, "
            "_EXTRACT_MEMORY_BYTES, _EXTRACT_SECONDS), named in the error",
            503: "Still loading, the database is unavailable, another document is being written and one "
            "more waits, or the knowledge directory cannot be written; retry after Retry-After seconds",
            507: "The server's disk is full: nothing was stored",
        }
    ),
)
async def add_document(
    data: Annotated[DocumentUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
    services: NamedDependency[Services],
    request: Request,
) -> DocumentResponse:
    knowledge = _knowledge(services)
    limit = services.settings.knowledge_max_upload_bytes
    if not isinstance(data.file, UploadFile):
        raise ApiError(status_code=400, detail="file is required (a multipart file field)")
    file_name = (data.file.filename or "").strip()
    if not file_name:
        raise ApiError(status_code=400, detail="the file has no name")
    content = await data.file.read(limit + 1)
    if len(content) > limit:
        raise ApiError(status_code=413, detail=f"the document is larger than {limit} bytes")
    cancelled = threading.Event()  # set: the child reading the document is killed
    document: Document | None = None
    rejected: DocumentRejected | None = None
    refused: OSError | None = None  # by the disk
    failed: Exception | None = None  # e.g. the encoder or the database offline: its own status
    try:
        async with _write_slot(knowledge).held() as slot, anyio.create_task_group() as group:
            group.start_soon(_cancel_when_disconnected, request, group.cancel_scope)
            try:
                document = await slot.run(partial(knowledge.add, file_name, content, cancelled), abandon_on_cancel=True)
            except DocumentRejected as exc:
                rejected = exc
            except OSError as exc:
                refused = exc
            except Exception as exc:  # raised out of the task group, it would be an ExceptionGroup: a 500
                failed = exc
            group.cancel_scope.cancel()
    finally:
        cancelled.set()
    if failed is not None:
        raise failed
    if refused is not None:
        raise _storage_error(refused, file_name) or refused
    if rejected is not None:
        # DocumentTooLarge names the limit's setting: a 413, like the upload limit's.
        status = 413 if getattr(rejected, "setting", None) else 400
        raise ApiError(status_code=status, detail=f"{file_name}: {rejected}") from rejected
    if document is None:  # the client went away: nobody reads this answer
        raise ApiError(status_code=400, detail="the request ended before the document was read")
    return DocumentResponse(success=True, document=_document(document))


async def _cancel_when_disconnected(request: Request, scope: anyio.CancelScope) -> None:
    """Cancel `scope` when the client goes away (its body already read, the next ASGI message is
    the disconnect): the document's reading stops instead of running on for nobody."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
        await anyio.sleep(0.5)  # another message (none is expected): keep watching, gently


@get("/documents", summary="The documents in the knowledge base", responses=_errors())
async def list_documents(services: NamedDependency[Services]) -> DocumentsResponse:
    documents = await anyio.to_thread.run_sync(_knowledge(services).documents)
    return DocumentsResponse(success=True, documents=[_document(d) for d in documents])


@delete(
    "/documents/{document_id:int}",
    status_code=200,
    summary="Remove a document: its file and every passage (searches no longer find it)",
    responses=_errors(
        {
            400: "The id is not a positive 64-bit integer",
            404: "No document with this id",
            507: "The server's disk is full: nothing was removed",
        }
    ),
)
async def remove_document(
    document_id: Annotated[int, Parameter(ge=1, le=2**63 - 1)], services: NamedDependency[Services]
) -> DocumentResponse:
    knowledge = _knowledge(services)
    try:
        async with _write_slot(knowledge).held() as slot:
            document = await slot.run(partial(knowledge.remove, document_id))
    except DocumentNotFound as exc:
        raise ApiError(status_code=404, detail=f"no document {document_id} in the knowledge base") from exc
    except OSError as exc:
        raise _storage_error(exc, f"document {document_id}") or exc from exc
    return DocumentResponse(success=True, document=_document(document))


@get(
    "/search",
    summary="Search the knowledge base's passages, best first",
    responses=_errors({400: "q is missing, blank or too long, or limit is out of range"}),
)
async def search_knowledge(
    services: NamedDependency[Services],
    q: Annotated[str | None, Parameter(description="What to search for (French)")] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_SEARCH_RESULTS)] = 5,
) -> SearchResponse:
    max_chars = services.settings.max_message_chars
    if q is None or len(q) > max_chars or is_blank(q):
        detail = "q is required and must not be blank" if q is None or len(q) <= max_chars else "q is too long"
        raise ApiError(status_code=400, detail=f"{detail} (at most {max_chars} characters)")
    query = q.strip()
    knowledge = _knowledge(services)

    def search() -> tuple[list[Passage], list[str]]:
        return knowledge.search(query, limit), knowledge.expansions(query)

    passages, expansions = await anyio.to_thread.run_sync(search)
    return SearchResponse(success=True, query=query, passages=[_passage(p) for p in passages], expansions=expansions)


def _agency_thesaurus(services: Services) -> AgencyThesaurus:
    thesaurus = _knowledge(services).agency_thesaurus
    if thesaurus is None:
        raise ApiError(status_code=503, detail="this server has no agency thesaurus")
    return thesaurus


_thesaurus_limiters: weakref.WeakKeyDictionary[AgencyThesaurus, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


async def _off_the_loop(thesaurus: AgencyThesaurus, function: Callable[[], T]) -> T:
    """`function` in a worker thread, one at a time per thesaurus: parsing a long thesaurus takes
    seconds, which must neither hold the event loop nor take many of the threads turns share
    (a limiter of its own: waiting for it holds no thread)."""
    limiter = _thesaurus_limiters.get(thesaurus)
    if limiter is None:
        limiter = _thesaurus_limiters[thesaurus] = anyio.CapacityLimiter(1)
    return await anyio.to_thread.run_sync(function, limiter=limiter)


def _thesaurus_response(text: str, rules: Thesaurus) -> ThesaurusResponse:
    return ThesaurusResponse(success=True, text=text, rules=len(rules), lines_without_rule=rules.lines_without_rule)


@get("/thesaurus", summary="The agency's own thesaurus rules (LEA_KNOWLEDGE_THESAURUS)", responses=_errors())
async def read_thesaurus(services: NamedDependency[Services]) -> ThesaurusResponse:
    thesaurus = _agency_thesaurus(services)

    def read() -> tuple[str, Thesaurus]:
        text = thesaurus.text()
        return text, Thesaurus(text.splitlines())

    text, rules = await _off_the_loop(thesaurus, read)
    return _thesaurus_response(text, rules)


@put(
    "/thesaurus",
    summary="Replace the agency's own thesaurus rules: they count from the next search, no reindex",
    responses=_errors(
        {
            400: f'The body is not {{"text": string}}, or a line has more than {MAX_RULE_ENTRIES} entries',
            413: f"The text is longer than {MAX_THESAURUS_CHARS} characters",
            507: "The server's disk is full: the rules were not changed",
        }
    ),
)
async def replace_thesaurus(data: JSONBody[ThesaurusRules], services: NamedDependency[Services]) -> ThesaurusResponse:
    thesaurus = _agency_thesaurus(services)
    if len(data.text) > MAX_THESAURUS_CHARS:
        raise ApiError(status_code=413, detail=f"the thesaurus is longer than {MAX_THESAURUS_CHARS} characters")

    def check_write_and_count() -> Thesaurus | dict[int, int]:
        lines = data.text.splitlines()
        too_long = lines_too_long(lines)  # quick: checked before the file is written
        if too_long:
            return too_long
        thesaurus.replace(data.text)
        return Thesaurus(lines)  # the answer's counts (the slow part, seconds for a megabyte)

    try:
        rules = await _off_the_loop(thesaurus, check_write_and_count)
    except OSError as exc:
        raise _storage_error(exc, "the thesaurus") or exc from exc
    if isinstance(rules, dict):
        number, entries = next(iter(rules.items()))
        others = len(rules) - 1
        raise ApiError(
            status_code=400,
            detail=f"line {number} of the thesaurus has {entries:,} entries, more than {MAX_RULE_ENTRIES} "
            "(split it into smaller rules)"
            + (f"; {others} more line{'s' if others > 1 else ''} too" if others else "")
            + ": nothing was changed",
        )
    return _thesaurus_response(data.text, rules)


knowledge_routes = [add_document, list_documents, remove_document, search_knowledge, read_thesaurus, replace_thesaurus]
