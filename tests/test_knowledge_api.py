"""The knowledge base's admin API (/api/knowledge) on the real server: documents of the test
corpus (Markdown, PDF, DOCX) uploaded, listed, searched and deleted over HTTP; bad files and bad
requests refused in the contract's shape, changing nothing."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader, PdfWriter

from lea_local.knowledge.directory import MARKER
from tests.server import API_KEY, LeaServer

CORPUS = Path(__file__).parent / "fixtures" / "knowledge" / "corpus"
HEADERS = {"X-API-Key": API_KEY}
DOCUMENTS = "/api/knowledge/documents"
THESAURUS = "/api/knowledge/thesaurus"
SEARCH = "/api/knowledge/search"
MAX_UPLOAD_BYTES = 200_000
DOCUMENT_FIELDS = {"id", "file_name", "title", "format", "sha256", "size_bytes", "passages", "added_at", "updated_at"}
PASSAGE_FIELDS = {"document_id", "file_name", "title", "section", "score", "text"}


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    server = LeaServer(
        tmp_path_factory.mktemp("knowledge-api"),
        models_dir,
        {"LEA_KNOWLEDGE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "LEA_LLM_MAX_REPLY_TOKENS": "8"},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(lea: LeaServer) -> Iterator[httpx.Client]:
    with lea.client(headers=HEADERS) as client:
        yield client


def upload(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return client.post(DOCUMENTS, files={"file": (name, content, "application/octet-stream")})


def listed(client: httpx.Client) -> list[dict]:
    r = client.get(DOCUMENTS)
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    return r.json()["documents"]


def search(client: httpx.Client, query: str, **params: object) -> list[dict]:
    r = client.get(SEARCH, params={"q": query, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["query"] == query.strip()
    return body["passages"]


def stored_files(lea: LeaServer) -> list[str]:
    directory = lea.data_dir / "knowledge"
    return sorted(p.name for p in directory.iterdir() if p.name != MARKER) if directory.exists() else []


def remove_all(client: httpx.Client) -> None:
    for document in listed(client):
        assert client.delete(f"{DOCUMENTS}/{document['id']}").status_code == 200


def assert_contract_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"success", "error", "detail"} and body["success"] is False
    assert body["error"] == body["detail"] and body["error"].strip()
    return body


@pytest.mark.slow
def test_documents_of_three_formats_are_uploaded_listed_and_searched(lea, client):
    remove_all(client)
    added = {}
    for name in ("manuel-agence.md", "guide-formulaires-courtage.pdf", "faq-acheteurs.docx"):
        content = (CORPUS / name).read_bytes()
        r = upload(client, name, content)
        assert r.status_code == 201, r.text
        document = r.json()["document"]
        assert r.json()["success"] is True and set(document) == DOCUMENT_FIELDS
        assert document["file_name"] == name and document["size_bytes"] == len(content)
        assert document["passages"] > 0 and document["title"].strip()
        added[name] = document
    assert [added[n]["format"] for n in sorted(added)] == ["docx", "pdf", "markdown"]
    assert sorted(d["id"] for d in listed(client)) == sorted(d["id"] for d in added.values())
    assert stored_files(lea) == sorted(added)

    passages = search(client, "Quel est le numéro de la ligne de garde pour les urgences ?", limit=3)
    assert 1 <= len(passages) <= 3
    assert all(set(p) == PASSAGE_FIELDS for p in passages)
    assert [p["score"] for p in passages] == sorted((p["score"] for p in passages), reverse=True)
    best = passages[0]
    assert best["file_name"] == "manuel-agence.md" and best["document_id"] == added["manuel-agence.md"]["id"]
    assert best["title"] == added["manuel-agence.md"]["title"]
    assert "418 555-0199" in best["text"]


@pytest.mark.slow
def test_a_deleted_document_is_no_longer_found_at_once(lea, client):
    name = "manuel-agence.md"
    r = upload(client, name, (CORPUS / name).read_bytes())
    assert r.status_code == 201, r.text
    document = r.json()["document"]
    assert any(p["file_name"] == name for p in search(client, "ligne de garde urgences"))

    r = client.delete(f"{DOCUMENTS}/{document['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "document": document}
    assert all(p["file_name"] != name for p in search(client, "ligne de garde urgences", limit=50))
    assert document["id"] not in [d["id"] for d in listed(client)]
    assert name not in stored_files(lea)
    assert_contract_error(client.delete(f"{DOCUMENTS}/{document['id']}"), 404)


@pytest.mark.slow
def test_a_changed_document_replaces_the_old_one_at_once(lea, client):
    name = "manuel-agence.md"
    original = (CORPUS / name).read_bytes()
    first = upload(client, name, original).json()["document"]
    changed = original.replace(b"418 555-0199", b"418 555-0777")
    r = upload(client, name, changed)
    assert r.status_code == 201, r.text
    second = r.json()["document"]
    assert second["file_name"] == name and second["sha256"] != first["sha256"]
    assert [d["file_name"] for d in listed(client)].count(name) == 1
    texts = " ".join(p["text"] for p in search(client, "ligne de garde urgences", limit=50))
    assert "418 555-0777" in texts and "418 555-0199" not in texts


def encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=PdfReader(CORPUS / "guide-formulaires-courtage.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_renamed_docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("notes.txt", "Ceci est une archive, pas un document Word.")
    return out.getvalue()


BINARY_JUNK = bytes(range(256)) * 64


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("encrypted.pdf", encrypted_pdf()),
        ("archive.docx", zip_renamed_docx()),
        ("junk.pdf", BINARY_JUNK),
        ("junk.docx", BINARY_JUNK),
        ("junk.txt", BINARY_JUNK),
        ("program.exe", BINARY_JUNK),
        ("empty.md", b""),
    ],
)
def test_a_bad_file_gets_a_clear_400_and_changes_nothing(lea, client, name, content):
    upload(client, "manuel-agence.md", (CORPUS / "manuel-agence.md").read_bytes())
    before, files_before = listed(client), stored_files(lea)
    body = assert_contract_error(upload(client, name, content), 400)
    assert name in body["detail"]
    assert listed(client) == before
    assert stored_files(lea) == files_before


@pytest.mark.slow
def test_a_bad_file_does_not_replace_the_good_document_of_the_same_name(lea, client):
    good = upload(client, "manuel-agence.md", (CORPUS / "manuel-agence.md").read_bytes()).json()["document"]
    assert_contract_error(upload(client, "manuel-agence.md", BINARY_JUNK), 400)
    assert [d for d in listed(client) if d["file_name"] == "manuel-agence.md"] == [good]
    assert (lea.data_dir / "knowledge" / "manuel-agence.md").read_bytes() == (CORPUS / "manuel-agence.md").read_bytes()


def test_a_document_too_large_gets_413_and_changes_nothing(lea, client):
    before, files_before = listed(client), stored_files(lea)
    just_over = b"# Grand document\n\n" + b"Texte du document. " * (MAX_UPLOAD_BYTES // 19 + 1)
    assert MAX_UPLOAD_BYTES < len(just_over) < MAX_UPLOAD_BYTES + 64 * 1024  # within the body's allowance
    assert_contract_error(upload(client, "grand.md", just_over), 413)
    far_over = just_over * 3  # beyond the request body's limit
    assert_contract_error(upload(client, "grand.md", far_over), 413)
    assert listed(client) == before and stored_files(lea) == files_before


def test_bad_requests_get_400_or_404(client):
    assert_contract_error(client.post(DOCUMENTS, data={"other": "x"}, files={"x": ("a.md", b"# a")}), 400)
    assert_contract_error(client.get(SEARCH), 400)
    assert_contract_error(client.get(SEARCH, params={"q": "   "}), 400)
    assert_contract_error(client.get(SEARCH, params={"q": "garde", "limit": 0}), 400)
    assert_contract_error(client.get(SEARCH, params={"q": "garde", "limit": 1000}), 400)
    assert_contract_error(client.get(SEARCH, params={"q": "x" * 4001}), 400)
    assert_contract_error(client.delete(f"{DOCUMENTS}/999999"), 404)
    assert_contract_error(client.delete(f"{DOCUMENTS}/0"), 400)
    assert_contract_error(client.delete(f"{DOCUMENTS}/{2**64}"), 400)
    assert_contract_error(client.delete(f"{DOCUMENTS}/abc"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", DOCUMENTS),
        ("POST", DOCUMENTS),
        ("DELETE", f"{DOCUMENTS}/1"),
        ("GET", f"{SEARCH}?q=garde"),
        ("GET", THESAURUS),
        ("PUT", THESAURUS),
    ],
)
def test_every_route_needs_the_api_key(lea, method, path):
    before = None
    with lea.client(headers=HEADERS) as client:
        before = listed(client), client.get(THESAURUS).json()
    with lea.client() as anonymous:
        files = {"file": ("manuel-agence.md", b"# Titre\n\nTexte.")} if method == "POST" else None
        body = {"text": "caucus => réunion"} if method == "PUT" else None
        assert_contract_error(anonymous.request(method, path, files=files, json=body), 401)
        wrong = anonymous.request(method, path, files=files, json=body, headers={"Authorization": "Bearer wrong-key"})
        assert_contract_error(wrong, 401)
    with lea.client(headers={"Authorization": f"Bearer {API_KEY}"}) as bearer:
        assert (listed(bearer), bearer.get(THESAURUS).json()) == before
