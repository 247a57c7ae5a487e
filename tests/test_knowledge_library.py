"""The knowledge base's core (lea_local/knowledge): each format's text and structure, bad files
rejected without a trace, passages cut along headings, add/change/remove/reindex seen by the next
search with no passage left behind, French search (accents, stems, stop words, thesaurus), and
the `lea-local knowledge` command run as a subprocess. Database-backed tests run on SQLite and on
a throwaway PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import docx
import pytest
from pypdf import PdfWriter
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lea_local.knowledge import DocumentNotFound, DocumentRejected, KnowledgeBase
from lea_local.knowledge.chunking import MAX_WORDS, MIN_WORDS, chunk_document
from lea_local.knowledge.directory import MARKER
from lea_local.knowledge.extract import extract
from lea_local.knowledge.french import Thesaurus, analyse_query, fold, terms
from lea_local.knowledge.library import safe_file_name
from tests.conftest import Database
from tests.server import REPO

CORPUS = REPO / "tests" / "fixtures" / "knowledge" / "corpus"

HANDBOOK = """# Manuel du bureau

## Heures d'ouverture

Le bureau de Laval est ouvert du lundi au vendredi, de 9 h à 17 h, et le samedi sur rendez-vous.

## Commission du courtier

La commission du courtier est de 5 % du prix de vente, plus les taxes. Elle est payée au notaire
le jour de la signature de l'acte de vente.

## Inspection préalable

Nous recommandons à chaque acheteur une inspection préalable par un inspecteur en bâtiment membre
d'un ordre professionnel, avant de lever les conditions de la promesse d'achat.
"""


@pytest.fixture
def knowledge(engine: Engine, tmp_path: Path) -> KnowledgeBase:
    return KnowledgeBase(engine, tmp_path / "knowledge")


def docx_bytes(title: str, sections: dict[str, list[str]], table: list[list[str]] | None = None) -> bytes:
    document = docx.Document()
    document.core_properties.title = title
    for heading, paragraphs in sections.items():
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    writer = PdfWriter(clone_from=CORPUS / "politique-renseignements-personnels.pdf")
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def index_rows(knowledge: KnowledgeBase) -> tuple[int, int]:
    """(passages, passages searchable) straight from the database."""
    with knowledge.engine.connect() as db:
        passages = db.execute(text("SELECT count(*) FROM knowledge_passages")).scalar_one()
        if knowledge.engine.dialect.name == "postgresql":
            searchable = db.execute(
                text("SELECT count(*) FROM knowledge_passages WHERE search_vector <> ''::tsvector")
            ).scalar_one()
        else:
            searchable = db.execute(text("SELECT count(*) FROM knowledge_passages_fts")).scalar_one()
    return passages, searchable


def files(knowledge: KnowledgeBase) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(knowledge.directory.iterdir()) if p.name != MARKER}


# --- extraction ------------------------------------------------------------------------------


def test_markdown_gives_title_heading_path_lists_and_tables() -> None:
    source = (
        "# Guide du vendeur\n\nIntroduction **importante**.\n\n## Frais\n\n### Taxes\n\n"
        "- la taxe de bienvenue\n- les taxes municipales\n\n| Frais | Montant |\n|---|---|\n| Notaire | 1 200 $ |\n"
    )
    document = extract("guide.md", source.encode())
    assert (document.title, document.format) == ("Guide du vendeur", "markdown")
    assert [(s.headings, s.blocks) for s in document.sections] == [
        (("Guide du vendeur",), ["Introduction importante."]),
        (
            ("Guide du vendeur", "Frais", "Taxes"),
            ["- la taxe de bienvenue", "- les taxes municipales", "Frais | Montant", "Notaire | 1 200 $"],
        ),
    ]


def test_text_headings_are_underlined_lines_and_the_title_falls_back_to_the_stem() -> None:
    plain = "Tout commence ici.\n\nHoraires\n========\n\nDu lundi\nau vendredi.\n\nSamedi : fermé.\n"
    document = extract("note-de-service.txt", plain.encode("cp1252"))
    assert document.title == "Horaires"
    assert [(s.headings, s.blocks) for s in document.sections] == [
        ((), ["Tout commence ici."]),
        (("Horaires",), ["Du lundi au vendredi.", "Samedi : fermé."]),
    ]
    assert extract("memo.txt", "Rien que du texte, accentué.".encode()).title == "memo"


def test_html_skips_scripts_and_navigation_and_keeps_headings() -> None:
    page = (
        "<html><head><title>Onglet</title><style>p{}</style></head><body><nav>Menu Accueil</nav>"
        "<h1>FAQ des vendeurs</h1><script>var x = 1;</script><h2>Qui paie le notaire ?</h2>"
        "<p>L'acheteur, en général.</p><div>Texte <b>libre</b><br>sur deux lignes</div>"
        "<table><tr><th>Frais</th><th>Qui</th></tr><tr><td>Notaire</td><td>Acheteur</td></tr></table></body></html>"
    )
    document = extract("faq.html", page.encode())
    assert document.title == "FAQ des vendeurs"
    assert [(s.headings, s.blocks) for s in document.sections] == [
        (
            ("FAQ des vendeurs", "Qui paie le notaire ?"),
            ["L'acheteur, en général.", "Texte libre sur deux lignes", "Frais | Qui", "Notaire | Acheteur"],
        )
    ]
    assert extract("sans-titre.html", b"<p>Bonjour</p>").title == "sans-titre"


def test_pdf_title_from_metadata_and_sections_from_its_outline() -> None:
    document = extract("guide.pdf", (CORPUS / "guide-formulaires-courtage.pdf").read_bytes())
    assert (document.title, document.format) == ("Guide des formulaires de courtage au Québec", "pdf")
    assert len(document.sections) > 3
    assert all(section.headings and section.blocks for section in document.sections)
    assert "promesse d'achat" in " ".join(b for s in document.sections for b in s.blocks).lower()


def test_docx_title_headings_and_tables() -> None:
    data = docx_bytes(
        "Guide du financement",
        {"La mise de fonds": ["Au moins 5 % du prix d'achat."], "Le taux": ["Fixe ou variable."]},
        table=[["Prix", "Mise de fonds minimale"], ["500 000 $", "25 000 $"]],
    )
    document = extract("financement.docx", data)
    assert (document.title, document.format) == ("Guide du financement", "docx")
    assert [(s.headings, s.blocks) for s in document.sections] == [
        (("La mise de fonds",), ["Au moins 5 % du prix d'achat."]),
        (("Le taux",), ["Fixe ou variable.", "Prix | Mise de fonds minimale", "500 000 $ | 25 000 $"]),
    ]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("protege.pdf", encrypted_pdf(), "encrypted"),
        ("faux.docx", b"PK\x03\x04 not really a zip at all", "bad zip"),
        ("archive.docx", zip_bytes({"notes.txt": b"bonjour"}), "without a Word document"),
        ("binaire.txt", bytes(range(256)) * 8, "binary"),
        ("binaire.pdf", b"\x7fELF\x02\x01\x01" + bytes(200), "no %PDF header"),
        ("tronque.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", "PDF"),
        ("vide.md", b"", "empty"),
        ("images.html", b"<html><body><img src='a.png'></body></html>", "no text"),
        ("programme.exe", b"MZ\x90\x00", "unsupported format .exe"),
        ("ancien.doc", b"\xd0\xcf\x11\xe0", "save it as .docx"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(DocumentRejected, match=reason):
        extract(name, data)


def test_file_names_are_kept_plain() -> None:
    assert safe_file_name("../../etc/guide.md") == "guide.md"
    assert safe_file_name("C:\\Users\\marie\\FAQ acheteurs.docx") == "FAQ acheteurs.docx"
    for bad in ("..", "", ".cache.md", "dossier/", "x" * 300 + ".md"):
        with pytest.raises(DocumentRejected):
            safe_file_name(bad)


# --- chunking and analysis ---------------------------------------------------------------------


def test_passages_follow_headings_and_keep_title_and_section() -> None:
    sentence = "Le vendeur remplit le formulaire de déclarations avec son courtier avant la mise en marché. "
    source = f"# Procédure\n\n## Étape 1\n\n{sentence * 40}\n\n## Étape 2\n\nCourt.\n\n### Détail\n\n{sentence * 2}\n"
    document = extract("procedure.md", source.encode())
    chunks = chunk_document(document)
    assert document.title == "Procédure"
    sections = [chunk.section for chunk in chunks]
    assert sections[0] == "Étape 1" and sections.count("Étape 1") >= 3  # a long section split
    assert sections[-2:] == ["Étape 2", "Étape 2 > Détail"]  # a short section stays its own passage
    for chunk in chunks:
        assert len(chunk.text.split()) <= MAX_WORDS
    assert all(len(c.text.split()) >= MIN_WORDS for c in chunks if c.section == "Étape 1")
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))


def test_the_analyser_folds_stems_and_drops_stop_words() -> None:
    assert fold("Œuvre à côté, Élève") == "oeuvre a cote, eleve"
    assert terms("Les courtières l'ont inspectée") == terms("courtier inspecte") == ["courti", "inspect"]
    assert terms("Qu'est-ce que c'est, et pourquoi ?") == []
    query = analyse_query("Quelle est la rétribution de l'agent ?")
    assert query.terms == ("retribu", "agent")
    expanded = {phrase.terms for phrase in query.expansions}
    assert {("commiss",), ("courti",)} <= expanded and ("agent",) not in expanded


def test_multi_word_thesaurus_triggers_expand_only_where_the_whole_phrase_is() -> None:
    rules = Thesaurus(["vice caché, défaut caché", "taxe de bienvenue => droits de mutation"])
    assert {p.terms for p in rules.expand(tuple(terms("un vice caché au sous-sol")))} == {("defaut", "cach")}
    assert rules.expand(tuple(terms("un vice de forme, rien de caché"))) == ()
    assert [p.terms for p in rules.expand(tuple(terms("la taxe de bienvenue")))] == [("droit", "mutat")]
    assert rules.expand(tuple(terms("les droits de mutation"))) == ()  # one-way


# --- the library, on SQLite and PostgreSQL ----------------------------------------------------------


def test_term_counts_follow_the_documents(knowledge: KnowledgeBase) -> None:
    """What grounding weighs a question's terms by: remembered, and forgotten when documents change."""
    knowledge.add("manuel.md", HANDBOOK.encode())
    assert knowledge.term_counts(["courtier", "stationnement"], 50) == {"courtier": 1, "stationnement": 0}
    knowledge.add("note.txt", "Stationnement\n\nLe stationnement des visiteurs est derrière le bureau.".encode())
    assert knowledge.term_counts(["courtier", "stationnement"], 50) == {"courtier": 1, "stationnement": 1}
    assert knowledge.term_counts(["rétribution"], 50) == {"rétribution": 1}  # found by its synonym
    knowledge.remove(next(d.id for d in knowledge.documents() if d.file_name == "note.txt"))
    assert knowledge.term_counts(["stationnement"], 50) == {"stationnement": 0}


def test_add_change_and_remove_are_seen_at_once_and_leave_nothing(knowledge: KnowledgeBase) -> None:
    document = knowledge.add("manuel.md", HANDBOOK.encode())
    assert (document.title, document.format, document.passages) == ("Manuel du bureau", "markdown", 3)
    assert knowledge.documents() == [document] and knowledge.document(document.id) == document
    assert files(knowledge) == {"manuel.md": HANDBOOK.encode()}
    assert index_rows(knowledge) == (3, 3)
    best = knowledge.search("heures d'ouverture du bureau")[0]
    assert (best.document_id, best.file_name, best.title, best.section) == (
        document.id,
        "manuel.md",
        "Manuel du bureau",
        "Heures d'ouverture",
    )
    assert "9 h à 17 h" in best.text

    assert knowledge.add("manuel.md", HANDBOOK.encode()) == document  # same content: unchanged

    changed = HANDBOOK.replace("de 9 h à 17 h", "de 8 h à 20 h").replace("## Inspection préalable", "## Visites")
    updated = knowledge.add("manuel.md", changed.encode())
    assert updated.id == document.id and updated.sha256 != document.sha256
    assert updated.added_at == document.added_at and updated.updated_at > document.updated_at
    assert "8 h à 20 h" in knowledge.search("heures d'ouverture")[0].text
    assert all(p.section != "Inspection préalable" for p in knowledge.search("inspection préalable", limit=10))
    assert index_rows(knowledge) == (3, 3)
    assert files(knowledge) == {"manuel.md": changed.encode()}

    other = knowledge.add("faq.docx", docx_bytes("FAQ", {"Notaire": ["L'acheteur choisit le notaire."]}))
    assert [d.file_name for d in knowledge.documents()] == ["faq.docx", "manuel.md"]

    assert knowledge.remove(document.id).file_name == "manuel.md"
    assert all(p.document_id != document.id for p in knowledge.search("heures d'ouverture du bureau"))
    assert index_rows(knowledge) == (1, 1)
    assert set(files(knowledge)) == {"faq.docx"}
    with pytest.raises(DocumentNotFound):
        knowledge.remove(document.id)
    with pytest.raises(DocumentNotFound):
        knowledge.document(document.id)
    knowledge.remove(other.id)
    assert knowledge.documents() == [] and index_rows(knowledge) == (0, 0) and files(knowledge) == {}


def test_a_rejected_file_changes_nothing(knowledge: KnowledgeBase) -> None:
    document = knowledge.add("manuel.md", HANDBOOK.encode())
    before = (knowledge.documents(), files(knowledge), index_rows(knowledge), knowledge.search("commission"))
    bad = [
        ("manuel.md", b"\x00\x01\x02 binary"),  # would replace the good one
        ("protege.pdf", encrypted_pdf()),
        ("faux.docx", b"PK\x03\x04 renamed zip"),
        ("vide.txt", b""),
        ("outil.exe", b"MZ"),
        (".cache.md", b"# cache"),
    ]
    for name, data in bad:
        with pytest.raises(DocumentRejected):
            knowledge.add(name, data)
        assert (knowledge.documents(), files(knowledge), index_rows(knowledge)) == before[:3]
    assert knowledge.search("commission") == before[3]
    assert knowledge.document(document.id) == document


def test_reindex_makes_the_index_match_the_directory(knowledge: KnowledgeBase) -> None:
    folder = knowledge.directory
    (folder / "manuel.md").write_text(HANDBOOK, encoding="utf-8")
    (folder / "faq.docx").write_bytes(docx_bytes("FAQ", {"Notaire": ["L'acheteur choisit le notaire."]}))
    (folder / "vieux.md").write_text("# Ancien\n\nUne note sur le stationnement des visiteurs.", encoding="utf-8")
    first = knowledge.reindex()
    assert (first.added, first.updated, first.removed, first.rejected) == (
        ["faq.docx", "manuel.md", "vieux.md"],
        [],
        [],
        {},
    )
    assert knowledge.search("stationnement")[0].file_name == "vieux.md"

    (folder / "manuel.md").write_text(HANDBOOK.replace("5 %", "4,5 %"), encoding="utf-8")
    (folder / "vieux.md").unlink()
    (folder / "faq.docx").write_bytes(b"PK\x03\x04 broken now")
    (folder / "note.txt").write_text("Le stationnement est gratuit pour les clients.", encoding="utf-8")
    second = knowledge.reindex()
    assert (second.added, second.updated, second.removed, second.unchanged) == (
        ["note.txt"],
        ["manuel.md"],
        ["vieux.md"],
        [],
    )
    assert list(second.rejected) == ["faq.docx"] and "bad zip" in second.rejected["faq.docx"]
    assert [d.file_name for d in knowledge.documents()] == ["manuel.md", "note.txt"]
    assert [p.file_name for p in knowledge.search("stationnement", lexical_only=True)] == ["note.txt"]
    assert all(p.file_name != "faq.docx" for p in knowledge.search("qui choisit le notaire"))
    assert "4,5 %" in knowledge.search("commission du courtier")[0].text
    assert index_rows(knowledge) == (4, 4)
    assert knowledge.reindex().unchanged == ["manuel.md", "note.txt"]


def test_search_ranks_french_questions(knowledge: KnowledgeBase) -> None:
    knowledge.add("manuel.md", HANDBOOK.encode())
    knowledge.add(
        "faq.html",
        "<h1>FAQ des vendeurs</h1><h2>Les vendeurs et le notaire</h2><p>Le vendeur paie la quittance "
        "de son hypothèque; l'acheteur choisit le notaire.</p>".encode(),
    )

    def best(query: str) -> str:
        found = knowledge.search(query)
        assert found, query
        assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
        return found[0].section

    assert best("inspection prealable") == "Inspection préalable"  # typed without accents
    assert best("INSPECTER le bâtiment") == "Inspection préalable"  # stem, case
    assert best("Quel est l'horaire ?") == "Heures d'ouverture"  # thesaurus: horaire → heures d'ouverture
    assert best("la rétribution de l'agent") == "Commission du courtier"  # thesaurus
    assert best("vendeur") == "Les vendeurs et le notaire"  # the section names it
    assert knowledge.search("Qu'est-ce que c'est ?") == [] and knowledge.search("   ") == []
    assert len(knowledge.search("le notaire, l'acheteur et le courtier", limit=2)) == 2
    # The user's own word ranks its passage above one that only has a synonym of it.
    knowledge.add("rem.md", "# Rémunération\n\nLa rétribution est versée au notaire.".encode())
    assert knowledge.search("rétribution")[0].file_name == "rem.md"


@pytest.mark.slow
def test_searches_run_while_documents_change(knowledge: KnowledgeBase) -> None:
    knowledge.add("manuel.md", HANDBOOK.encode())
    failures: list[BaseException] = []
    stop = threading.Event()

    def search_until_stopped() -> None:
        try:
            while not stop.is_set():
                for passage in knowledge.search("commission du courtier"):
                    assert passage.file_name in ("manuel.md", "copie.md")
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    searchers = [threading.Thread(target=search_until_stopped) for _ in range(3)]
    for thread in searchers:
        thread.start()
    try:
        for round_ in range(5):
            copy = knowledge.add("copie.md", HANDBOOK.replace("5 %", f"{round_} %").encode())
            knowledge.remove(copy.id)
    finally:
        stop.set()
        for thread in searchers:
            thread.join()
    assert failures == []
    assert [d.file_name for d in knowledge.documents()] == ["manuel.md"] and index_rows(knowledge) == (3, 3)


# --- the command -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_knowledge_command(tmp_path: Path, database: Database) -> None:
    environment = {**os.environ, "LEA_DATA_DIR": str(tmp_path / "data"), **database.env}
    environment.pop("LEA_KNOWLEDGE_DIR", None)

    def lea(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "lea_local", "knowledge", *args],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (done.returncode == 0) == ok, done.stdout + done.stderr
        return done

    (tmp_path / "manuel.md").write_text(HANDBOOK, encoding="utf-8")
    (tmp_path / "faux.docx").write_bytes(b"PK\x03\x04 renamed")
    added = lea("add", str(tmp_path / "manuel.md"), str(tmp_path / "faux.docx"), ok=False)
    assert "added #1 manuel.md" in added.stdout and "faux.docx: rejected: not a DOCX file (bad zip)" in added.stderr
    assert (tmp_path / "data" / "knowledge" / "manuel.md").read_text(encoding="utf-8") == HANDBOOK
    assert "unchanged #1 manuel.md" in lea("add", str(tmp_path / "manuel.md")).stdout

    listed = json.loads(lea("list", "--json").stdout)
    assert [(d["id"], d["file_name"], d["title"], d["passages"]) for d in listed] == [
        (1, "manuel.md", "Manuel du bureau", 3)
    ]
    found = json.loads(lea("search", "commission de l'agent", "--limit", "1", "--json").stdout)
    assert [(p["file_name"], p["section"]) for p in found] == [("manuel.md", "Commission du courtier")]
    assert "Heures d'ouverture (manuel.md)" in lea("search", "horaires du bureau").stdout

    (tmp_path / "data" / "knowledge" / "note.txt").write_text("Le stationnement est gratuit.", encoding="utf-8")
    assert "added: 1 (note.txt)" in lea("reindex").stdout
    assert "removed #1 manuel.md" in lea("remove", "1").stdout
    assert "document 1 not found" in lea("remove", "1", ok=False).stderr
    assert [d["file_name"] for d in json.loads(lea("list", "--json").stdout)] == ["note.txt"]
