"""The agency's own thesaurus (LEA_KNOWLEDGE_THESAURUS): a rule written in the file counts from
the next search and the next turn, with no restart or reindex; an edited or removed file is
followed; an unreadable one keeps the rules read before and is logged once. On the knowledge
base itself (SQLite and PostgreSQL), then on the real server over HTTP, where the admin API reads
and replaces the rules (GET/PUT /api/knowledge/thesaurus) and a search shows the expansions."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from lea_local.knowledge import KnowledgeBase
from lea_local.knowledge.french import MAX_EXPANSIONS, MAX_RULE_ENTRIES, AgencyThesaurus, Thesaurus, analyse_query
from lea_local.knowledge.library import knowledge_base_for
from lea_local.settings import Settings
from tests.server import API_KEY, CHAT_PATH, LeaServer
from tests.test_knowledge_api import assert_contract_error
from tests.waiting import wait_for

MEETINGS = """# Manuel du bureau

## La réunion d'équipe

La réunion d'équipe hebdomadaire a lieu le mardi à 8 h 30, dans la grande salle du deuxième
étage. La présence de chaque courtier est attendue ; une absence se signale à la dirigeante.

## Le stationnement

Les places de stationnement à l'arrière de l'immeuble sont réservées aux clients.
""".encode()

# "Le caucus" is what this agency's brokers call the team meeting: no shipped rule knows it.
JARGON_QUESTION = "À quelle heure commence le caucus ?"
RULE = "caucus => réunion d'équipe  # ce que les courtiers appellent la réunion du mardi\n"
MEETING_FACT = "le mardi à 8 h 30"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return tmp_path / "agence" / "thesaurus.txt"


@pytest.fixture
def knowledge(engine: Engine, tmp_path: Path, rules: Path) -> KnowledgeBase:
    # Words only: what a rule changes is which passages hold the question's terms.
    base = KnowledgeBase(engine, tmp_path / "knowledge", retrieval="lexical", agency_thesaurus=rules)
    base.add("manuel-bureau.md", MEETINGS)
    return base


def write(path: Path, text: str | bytes) -> None:
    """Write the file as an editor would, and make sure its stamp moves even within one clock
    tick (file times are coarse)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def found(knowledge: KnowledgeBase, question: str) -> list[str]:
    return [p.text for p in knowledge.search(question, limit=3, lexical_only=True)]


def test_a_rule_written_in_the_agency_file_counts_from_the_next_search(knowledge, rules):
    assert found(knowledge, JARGON_QUESTION) == []
    assert knowledge.term_counts(["caucus"], 50) == {"caucus": 0}

    write(rules, RULE)
    hits = found(knowledge, JARGON_QUESTION)
    assert hits and MEETING_FACT in hits[0]
    # Grounding weighs a question's terms by how many passages they find: the new synonym counts.
    assert knowledge.term_counts(["caucus"], 50) == {"caucus": 1}
    # The shipped rules still apply beside the agency's.
    assert found(knowledge, "Où garer la voiture des clients ?") == found(knowledge, "stationnement")


def test_an_edited_then_removed_file_is_followed(knowledge, rules):
    write(rules, RULE)
    assert found(knowledge, JARGON_QUESTION)

    write(rules, "# plus de caucus : on dit la réunion du mardi\n")
    assert found(knowledge, JARGON_QUESTION) == []

    write(rules, RULE)
    assert found(knowledge, JARGON_QUESTION)
    rules.unlink()
    assert found(knowledge, JARGON_QUESTION) == []
    # Back to the shipped thesaurus alone, which still works.
    assert found(knowledge, "rendez-vous hebdomadaire") == found(knowledge, "réunion hebdomadaire") != []


def test_an_unreadable_file_keeps_the_rules_read_before_and_is_logged_once(knowledge, rules, caplog):
    write(rules, RULE)
    assert found(knowledge, JARGON_QUESTION)

    write(rules, b"caucus => r\xe9union\n")  # Latin-1, not UTF-8
    with caplog.at_level(logging.ERROR, logger="lea_local.knowledge.french"):
        for _ in range(3):
            hits = found(knowledge, JARGON_QUESTION)
            assert hits and MEETING_FACT in hits[0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(rules) in errors[0].getMessage() and "rules read before stay" in errors[0].getMessage()


def test_an_explicit_thesaurus_is_not_overridden_by_the_agency_file(engine, tmp_path, rules):
    """The evaluation scripts pass a thesaurus of their own; the agency's file does not change it."""
    write(rules, RULE)
    mine = Thesaurus(["zzyzx, xyzzy"])
    base = KnowledgeBase(engine, tmp_path / "knowledge", mine, retrieval="lexical", agency_thesaurus=rules)
    base.add("manuel-bureau.md", MEETINGS)
    assert base.thesaurus is mine
    assert found(base, JARGON_QUESTION) == []


def test_by_default_the_rules_live_hidden_in_the_knowledge_directory(engine, tmp_path):
    """Shared by replicas like the documents, and never taken for one by a reindex."""
    settings = Settings(data_dir=tmp_path / "data", knowledge_retrieval="lexical")
    knowledge = knowledge_base_for(settings, engine)
    knowledge.add("manuel-bureau.md", MEETINGS)
    assert knowledge.agency_thesaurus is not None
    knowledge.agency_thesaurus.replace(RULE)
    assert (tmp_path / "data" / "knowledge" / ".thesaurus.txt").read_text(encoding="utf-8") == RULE
    assert found(knowledge, JARGON_QUESTION)
    report = knowledge.reindex()
    assert report.unchanged == ["manuel-bureau.md"] and not (report.added or report.rejected)
    assert [d.file_name for d in knowledge.documents()] == ["manuel-bureau.md"]


# --- over HTTP ----------------------------------------------------------------------------------

HEADERS = {"X-API-Key": API_KEY}
THESAURUS = "/api/knowledge/thesaurus"


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    data = tmp_path_factory.mktemp("agency-thesaurus")
    settings = {
        "LEA_KNOWLEDGE_THESAURUS": str(data / "partage" / "thesaurus.txt"),
        "LEA_LOG_CONTENT": "true",  # the prompt the engine received is logged
        "LEA_LLM_MAX_REPLY_TOKENS": "16",
        "LEA_TTS_FOR_TEXT_CHAT": "false",
        "LEA_REQUEST_TIMEOUT_SECONDS": "600",  # what is checked is the prompt, not its speed
    }
    server = LeaServer(data, models_dir, settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def rules_file(lea: LeaServer) -> Iterator[Path]:
    """The server's agency thesaurus (LEA_KNOWLEDGE_THESAURUS), absent before and after each test."""
    path = lea.data_dir / "partage" / "thesaurus.txt"
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def turn(lea: LeaServer, client: httpx.Client, message: str) -> tuple[dict, str]:
    """The turn's body and the user message the engine received."""
    request_id = uuid.uuid4().hex
    r = client.post(CHAT_PATH, json={"message": message}, headers={"X-Request-ID": request_id})
    assert r.status_code == 200, r.text
    prompts = [
        e["prompt"] for e in lea.log_events() if e.get("event") == "llm.prompt" and e.get("request_id") == request_id
    ]
    assert len(prompts) == 1
    return r.json(), prompts[0][-1]["content"]


@pytest.mark.slow
def test_a_turn_in_the_agencys_jargon_is_grounded_once_the_rule_is_written(lea, rules_file):
    rules = rules_file
    messages = lambda: [str(e.get("message", "")) for e in lea.log_events()]  # noqa: E731
    assert any(f"LEA_KNOWLEDGE_THESAURUS {rules} does not exist" in m for m in messages())
    with lea.client(headers=HEADERS) as client:
        r = client.post("/api/knowledge/documents", files={"file": ("manuel-bureau.md", MEETINGS)})
        assert r.status_code == 201, r.text

        body, sent = turn(lea, client, JARGON_QUESTION)
        assert body["sources"] == [] and MEETING_FACT not in sent

        write(rules, RULE)
        r = client.get("/api/knowledge/search", params={"q": JARGON_QUESTION, "limit": 1})
        assert r.status_code == 200 and MEETING_FACT in r.json()["passages"][0]["text"]
        body, sent = turn(lea, client, JARGON_QUESTION)
        assert MEETING_FACT in sent and sent.endswith(JARGON_QUESTION)
        assert [s["file"] for s in body["sources"]] == ["manuel-bureau.md"]
    assert any(f"agency thesaurus {rules} read, rules of its own: 1" in m for m in messages())


def test_the_admin_api_reads_and_replaces_the_agencys_rules(lea, rules_file):
    with lea.client(headers=HEADERS) as client:
        r = client.get(THESAURUS)
        assert r.status_code == 200 and r.json() == {"success": True, "text": "", "rules": 0, "lines_without_rule": []}
        r = client.post("/api/knowledge/documents", files={"file": ("manuel-bureau.md", MEETINGS)})
        assert r.status_code == 201, r.text
        r = client.get("/api/knowledge/search", params={"q": JARGON_QUESTION})
        shipped = r.json()["expansions"]  # "heure" has shipped synonyms
        assert "reunion d equipe" not in shipped

        text = RULE + "le, la, les\n# une note\n"
        r = client.put(THESAURUS, json={"text": text})
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "text": text, "rules": 1, "lines_without_rule": [2]}
        assert rules_file.read_text(encoding="utf-8") == text
        assert client.get(THESAURUS).json()["text"] == text
        r = client.get("/api/knowledge/search", params={"q": JARGON_QUESTION, "limit": 1})
        assert r.json()["expansions"] == [*shipped, "reunion d equipe"]
        assert MEETING_FACT in r.json()["passages"][0]["text"]
        body, sent = turn(lea, client, JARGON_QUESTION)
        assert MEETING_FACT in sent and [s["file"] for s in body["sources"]] == ["manuel-bureau.md"]

        # Bad bodies change nothing.
        for bad in ({"text": 5}, {}, {"rules": "caucus => réunion"}):
            assert_contract_error(client.put(THESAURUS, json=bad), 400)
        assert_contract_error(client.put(THESAURUS, content=b"caucus => r\xe9union"), 400)
        assert_contract_error(client.put(THESAURUS, json={"text": "a, b\n" * 250_000}), 413)
        assert rules_file.read_text(encoding="utf-8") == text

        r = client.put(THESAURUS, json={"text": ""})
        assert r.status_code == 200 and r.json()["rules"] == 0
        assert client.get("/api/knowledge/search", params={"q": JARGON_QUESTION}).json()["expansions"] == shipped


def test_a_hostile_thesaurus_cannot_expand_a_question_without_end(tmp_path):
    """One line of 50,001 synonyms made `notaire` search 50,002 terms: such a line makes no rule,
    and however many rules a question triggers, it is searched with MAX_EXPANSIONS entries at most."""
    path = tmp_path / "thesaurus.txt"
    one_huge_rule = "notaire, " + ", ".join(f"motbidon{i}" for i in range(50_001))
    many_rules = "".join(f"notaire => acte{i}\n" for i in range(1_000))
    path.write_text(f"{one_huge_rule}\n{many_rules}", encoding="utf-8")
    thesaurus = AgencyThesaurus(path).current()
    expansions = analyse_query("notaire", thesaurus).expansions
    assert len(expansions) == MAX_EXPANSIONS
    assert not any(phrase.text.startswith("motbidon") for phrase in expansions)
    assert len(analyse_query("Qui paie le notaire et le courtier ?", thesaurus).expansions) <= MAX_EXPANSIONS
    assert list(Thesaurus([one_huge_rule]).lines_too_long.items()) == [(1, 50_002)]
    assert len(Thesaurus([one_huge_rule])) == 0


def test_a_rule_past_the_cap_is_refused_naming_its_line(lea, rules_file):
    with lea.client(headers=HEADERS) as client:
        assert client.put(THESAURUS, json={"text": RULE}).status_code == 200
        too_long = "notaire, " + ", ".join(f"motbidon{i}" for i in range(MAX_RULE_ENTRIES))
        body = assert_contract_error(client.put(THESAURUS, json={"text": f"{RULE}# notaires\n{too_long}\n"}), 400)
        assert "line 3 " in body["error"] and f"{MAX_RULE_ENTRIES + 1} entries" in body["error"]
        assert rules_file.read_text(encoding="utf-8") == RULE


@pytest.mark.slow
def test_a_large_thesaurus_put_does_not_hold_the_event_loop(lea, rules_file):
    """/health answers while the server is still counting a megabyte of rules (a PUT whose answer
    has not been sent yet): the parse runs off the event loop. Verdict by events: the PUT's file
    is on disk (the rules are being counted), /health answers, and at that moment not one byte of
    the PUT's answer has come."""
    text = "".join(
        f"motif{i}, terme{i}, expression longue numero{i} => acte notarie{i}, compromis{i}\n" for i in range(11_000)
    )
    body = json.dumps({"text": text}).encode()
    url = httpx.URL(lea.url)
    head = (
        f"PUT {THESAURUS} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.host, url.port), timeout=120) as put:
        put.sendall(head + body)
        answered = lambda: bool(select.select([put], [], [], 0)[0])  # noqa: E731
        written = lambda: rules_file.exists() and rules_file.read_text(encoding="utf-8") == text  # noqa: E731
        wait_for(written, "the PUT writes the rules", while_possible=lambda: not answered())
        with lea.client(headers=HEADERS, timeout=60) as client:
            assert client.get("/health").status_code == 200
        assert not answered(), "/health waited for the thesaurus PUT: its parsing held the event loop"
        reply = b""
        while chunk := put.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 200 " in status_line, reply[:500]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["rules"] == 11_000
