"""What the knowledge base does when its disk refuses a write (issue 25, item 8): a full disk
leaves no temporary file behind (and those left by a crash are swept at start and by reindex);
the admin API says why a write failed, 507 for a full disk and 503 for a read-only or
unwritable directory, in the contract's error shape, and nothing changes. A full or read-only
disk cannot be made without root, so the failing write is a stand-in (`OSError` with the errno
the kernel gives); the rest (knowledge base, database, app) is real, in this process. And a DOCX
without docProps/core.xml is titled from its own text, not python-docx's "Word Document"."""

from __future__ import annotations

import errno
import io
import os
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docx
import pytest
from litestar.testing import TestClient
from sqlalchemy.engine import Engine

from lea_local.api.app import create_app
from lea_local.knowledge import KnowledgeBase
from lea_local.knowledge import library as library_module
from lea_local.knowledge.directory import MARKER
from lea_local.knowledge.extract import extract
from lea_local.knowledge.french import AgencyThesaurus
from lea_local.knowledge.library import STALE_UPLOAD_SECONDS
from lea_local.pipeline.turns import ChatTurns
from lea_local.runtime.inference_queue import InferenceQueue
from lea_local.services import Services
from lea_local.settings import Settings
from lea_local.store.conversations import ConversationStore
from tests.server import API_KEY
from tests.test_chat_engine_failure import BrokenEngine

GUIDE = b"# Guide de l'agence\n\n## Les cles\n\nLes cles sont au coffre du bureau de Levis.\n"
HEADERS = {"X-API-Key": API_KEY}
DOCUMENTS = "/api/knowledge/documents"
THESAURUS = "/api/knowledge/thesaurus"


def fail_with(code: int):
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".lea-"))


@pytest.fixture
def knowledge(engine: Engine, tmp_path: Path) -> KnowledgeBase:
    return KnowledgeBase(engine, tmp_path / "knowledge", retrieval="lexical")


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_a_full_disk_leaves_no_temporary_file_and_changes_nothing(knowledge, monkeypatch):
    before = knowledge.add("guide.md", GUIDE)
    monkeypatch.setattr(library_module.os, "fsync", fail_with(errno.ENOSPC))  # the data hits the disk
    with pytest.raises(OSError) as failed:
        knowledge.add("guide.md", GUIDE.replace(b"Levis", b"Quebec"))
    assert failed.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        knowledge.add("autre.md", GUIDE)
    monkeypatch.undo()
    assert leftovers(knowledge.directory) == []
    assert knowledge.documents() == [before]
    assert (knowledge.directory / "guide.md").read_bytes() == GUIDE


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_stale_upload_files_are_swept_at_start_and_by_reindex(engine, tmp_path):
    directory = tmp_path / "knowledge"
    directory.mkdir()
    old = time.time() - STALE_UPLOAD_SECONDS - 60

    def leave(name: str, stale: bool) -> None:
        (directory / name).write_bytes(b"half a document")
        if stale:
            os.utime(directory / name, (old, old))

    leave(".lea-0a1b.upload", stale=True)
    leave(".lea-2c3d.upload", stale=False)  # another replica's upload under way: left alone
    (directory / "guide.md").write_bytes(GUIDE)
    knowledge = KnowledgeBase(engine, directory, retrieval="lexical")
    assert leftovers(directory) == [".lea-2c3d.upload"]

    os.utime(directory / ".lea-2c3d.upload", (old, old))
    leave(".lea-4e5f.upload", stale=True)
    report = knowledge.reindex()
    assert leftovers(directory) == [] and report.added == ["guide.md"]


# --- over HTTP: the app in this process, its knowledge base real -----------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(_env_file=None, api_keys=API_KEY, data_dir=tmp_path, knowledge_retrieval="lexical")
    store = ConversationStore.from_url(settings.effective_database_url)

    def build(_: Settings) -> Services:
        engine = BrokenEngine()
        queue = InferenceQueue("language model", max_waiting=4)
        turns = ChatTurns(
            engine=engine, store=store, llm_queue=queue, system_prompt="s", max_reply_tokens=64, temperature=0
        )
        knowledge = KnowledgeBase(
            store.engine,
            settings.effective_knowledge_dir,
            retrieval="lexical",
            agency_thesaurus=settings.effective_knowledge_thesaurus,
        )
        return Services(
            settings=settings, store=store, chat_engine=engine, llm_queue=queue, turns=turns, knowledge=knowledge
        )

    with TestClient(create_app(settings, build=build), raise_server_exceptions=False) as client:
        while client.get("/ready").status_code != 200:
            pass
        client.headers.update(HEADERS)
        yield client


def contract_error(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"success", "error", "detail"} and body["success"] is False
    assert body["error"] == body["detail"]
    return body["error"]


def upload(client: TestClient, name: str, content: bytes):
    return client.post(DOCUMENTS, files={"file": (name, content, "text/markdown")})


def test_a_full_disk_is_507_and_a_read_only_one_503_with_the_reason(client, tmp_path, monkeypatch):
    directory = tmp_path / "knowledge"
    r = upload(client, "guide.md", GUIDE)
    assert r.status_code == 201, r.text
    document = r.json()["document"]

    with monkeypatch.context() as m:
        m.setattr(library_module.os, "fsync", fail_with(errno.ENOSPC))
        message = contract_error(upload(client, "autre.md", GUIDE + b"\nEncore.\n"), 507)
    assert "autre.md" in message and "disk is full" in message and "Nothing was changed" in message
    assert leftovers(directory) == []

    for code, reason in ((errno.EROFS, "read-only"), (errno.EACCES, "permission denied")):
        with monkeypatch.context() as m:
            m.setattr(KnowledgeBase, "_write_temporary", fail_with(code))
            r = upload(client, "autre.md", GUIDE + b"\nEncore.\n")
            assert reason in contract_error(r, 503) and int(r.headers["Retry-After"]) > 0
            m.setattr(KnowledgeBase, "_set_aside", fail_with(code))
            r = client.delete(f"{DOCUMENTS}/{document['id']}")
            assert reason in contract_error(r, 503) and int(r.headers["Retry-After"]) > 0
    with monkeypatch.context() as m:
        m.setattr(KnowledgeBase, "_set_aside", fail_with(errno.ENOSPC))
        assert "disk is full" in contract_error(client.delete(f"{DOCUMENTS}/{document['id']}"), 507)
    assert [d["file_name"] for d in client.get(DOCUMENTS).json()["documents"]] == ["guide.md"]
    assert sorted(p.name for p in directory.iterdir() if p.name != MARKER) == ["guide.md"]

    for code, status in ((errno.ENOSPC, 507), (errno.EROFS, 503), (errno.EACCES, 503)):
        with monkeypatch.context() as m:
            m.setattr(AgencyThesaurus, "replace", fail_with(code))
            message = contract_error(client.put(THESAURUS, json={"text": "caucus => reunion d'equipe\n"}), status)
            assert "thesaurus" in message
    assert client.get(THESAURUS).json()["text"] == ""

    # And once the disk takes writes again, they work.
    assert client.delete(f"{DOCUMENTS}/{document['id']}").status_code == 200
    assert client.put(THESAURUS, json={"text": "caucus => reunion d'equipe\n"}).status_code == 200


def docx_without_core_properties(heading: str) -> bytes:
    """A DOCX as some tools write it: no docProps/core.xml (nor its relationship)."""
    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph("Le mandat exclusif dure six mois.")
    saved = io.BytesIO()
    document.save(saved)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(saved.getvalue())) as source, zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            if name == "docProps/core.xml":
                continue
            data = source.read(name)
            if name == "_rels/.rels":
                data = re.sub(rb"<Relationship [^>]*core-properties[^>]*/>", b"", data)
            elif name == "[Content_Types].xml":
                data = re.sub(rb'<Override PartName="/docProps/core.xml"[^>]*/>', b"", data)
            target.writestr(name, data)
    data = out.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as check:
        assert "docProps/core.xml" not in check.namelist() and b"core-properties" not in check.read("_rels/.rels")
    return data


def test_a_docx_without_core_properties_is_titled_from_its_own_text():
    assert extract("mandat.docx", docx_without_core_properties("Guide du mandat")).title == "Guide du mandat"
    document = docx.Document()
    document.add_paragraph("Sans titre ni intertitre.")
    saved = io.BytesIO()
    document.save(saved)
    assert extract("notes-bureau.docx", saved.getvalue()).title == "notes-bureau"
