"""POST /api/external/agent/erase on the real server: what an erasure removes (a session, a
user's turns, their audio), turns under way included (on SQLite and PostgreSQL), what it leaves
in the SQLite database's files (nothing), and the database upgrade that per-turn speakers
needed."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, insert
from sqlalchemy.pool import NullPool

from lea_local.knowledge import tables as knowledge_tables
from lea_local.store.conversations import Base, ConversationRow, ConversationStore, MessageRow
from lea_local.tts import database_audio_store
from tests.audio import BROWSER_FORMATS, CLIP, FIXTURES, encode
from tests.conftest import Database, database_url, db_query, db_rows
from tests.server import API_KEY, VOICE_PATH, LeaServer
from tests.test_store_postgres import HEAD_REVISION
from tests.waiting import wait_for

HEADERS = {"X-API-Key": API_KEY}
ERASE_PATH = "/api/external/agent/erase"
LONG = "Écris une très longue histoire sur une maison à vendre à Lyon."
WEBM = BROWSER_FORMATS["webm-opus"]
SHORT_CLIP = FIXTURES / "fleurs_fr_005.ogg"  # 7 s: transcribed while the long generation runs
# A long turn whatever the model writes: about 1,300 tokens of prompt to evaluate first (5 s on
# 2 cores), many times the voice turn's decoding and recognition. (The system prompt, which used
# to be evaluated cold by the first turn, is evaluated by the warm-up now.)
LISTING = (
    "Maison à étages de 1962 à Lyon, quatre chambres, deux salles de bains, sous-sol aménagé, "
    "garage simple, terrain de 6 000 pieds carrés, toiture refaite en 2019, fenêtres d'origine. "
)
BLOCKER = (LONG + " Voici la fiche du bien, à reprendre en détail : " + LISTING * 40)[:3_900]


def erase(client: httpx.Client, **body: str) -> httpx.Response:
    return client.post(ERASE_PATH, json=body, headers=HEADERS)


def voice_turn(lea: LeaServer, client: httpx.Client, clip: Path = CLIP, **form: str) -> httpx.Response:
    args, mime, name = WEBM
    return client.post(VOICE_PATH, files={"audio": (name, encode(clip, args), mime)}, data=form, headers=HEADERS)


def llm_queue_depth(client: httpx.Client) -> int:
    """Turns running or waiting for the language model (a waiting turn holds its session)."""
    found = re.search(r'^lea_queue_depth\{queue="language model"\} (\S+)$', client.get("/metrics").text, re.M)
    assert found, "no language model queue depth in /metrics"
    return int(float(found.group(1)))


def in_background(results: dict[str, httpx.Response], name: str, lea: LeaServer, call) -> threading.Thread:
    def run() -> None:
        with lea.client(timeout=3600) as client:
            results[name] = call(client)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def database_bytes(data_dir: Path) -> dict[str, bytes]:
    """The raw bytes of the SQLite database and its write-ahead log and shared-memory files."""
    return {
        path.name: path.read_bytes()
        for path in (data_dir / name for name in ("lea.sqlite3", "lea.sqlite3-wal", "lea.sqlite3-shm"))
        if path.exists()
    }


def message_speakers(lea: LeaServer) -> list[tuple]:
    return db_query(lea, "SELECT conversation_id, role, user_id, user_email FROM messages ORDER BY id")


def wait_for_audio(client: httpx.Client, url: str) -> str:
    """Downloads a turn's audio (so that its file exists); returns its name."""
    assert client.get(url).status_code == 200
    return url.rsplit("/", 1)[1]


def stored_turn(lea: LeaServer, session_id: str, message: str, reply: str) -> int:
    """A conversation of one turn, written straight into the server's database."""
    now = datetime.now(UTC)
    engine = create_engine(database_url(lea), poolclass=NullPool)
    try:
        with engine.begin() as db:
            conversation = db.execute(
                insert(ConversationRow.__table__).values(session_id=session_id, created_at=now, updated_at=now)
            ).inserted_primary_key[0]
            for role, content in (("user", message), ("assistant", reply)):
                db.execute(
                    insert(MessageRow.__table__).values(
                        conversation_id=conversation, role=role, content=content, created_at=now
                    )
                )
    finally:
        engine.dispose()
    return conversation


@pytest.mark.slow
def test_erasure_waits_for_turns_under_way_and_erases_them_too(make_server, database: Database):
    """Turns of the erased sessions and user hold their session while they wait for the language
    model, behind a long generation: each erasure waits for them, and erases them too. The turns
    themselves answer 200: none finds its conversation gone halfway (no 404)."""
    lea = make_server(
        {
            "LEA_LLM_MAX_REPLY_TOKENS": "200",
            "LEA_LLM_TEMPERATURE": "0",
            "LEA_ENGINES_SHARE_CPU": "false",
            # A busy machine slows every turn: neither 504 nor an admission refusal (503) here.
            "LEA_REQUEST_TIMEOUT_SECONDS": "3600",
            **database.env,
        }
    )
    secret = f"mon adresse est 12 rue X{uuid.uuid4().hex[:10]}"
    new_session = f"immo-{uuid.uuid4()}"
    user = f"agent-{uuid.uuid4().hex[:8]}"
    turns: dict[str, httpx.Response] = {}
    erasures: dict[str, httpx.Response] = {}
    with lea.client() as client:
        existing = {"session_id": f"immo-{uuid.uuid4()}"}
        stored_turn(lea, existing["session_id"], "Bonjour, je cherche un T3 à Lyon.", "Avec plaisir !")
        threads = [in_background(turns, "blocker", lea, lambda c: lea.chat(c, BLOCKER))]
        wait_for(
            lambda: llm_queue_depth(client) >= 1, "the long generation started", while_possible=threads[0].is_alive
        )
        threads += [
            in_background(
                turns, "voice", lea, lambda c: voice_turn(lea, c, SHORT_CLIP, user_id=user, user_email="c@x.fr")
            ),
            in_background(turns, "new", lea, lambda c: lea.chat(c, secret, session_id=new_session)),
            in_background(
                turns, "existing", lea, lambda c: lea.chat(c, "Et le prix ?", session_id=existing["session_id"])
            ),
        ]
        wait_for(
            lambda: llm_queue_depth(client) >= 4,
            "three turns waiting for the language model",
            while_possible=lambda: all(t.is_alive() for t in threads),
        )
        assert "blocker" not in turns, "the long generation ended too soon for this test"
        threads += [
            in_background(erasures, "new", lea, lambda c: erase(c, session_id=new_session)),
            in_background(erasures, "existing", lea, lambda c: erase(c, session_id=existing["session_id"])),
            in_background(erasures, "user", lea, lambda c: erase(c, user_id=user)),
        ]
        for thread in threads:
            thread.join()
        for name, response in turns.items():
            assert response.status_code == 200, (name, response.text)
        assert erasures["new"].json() == {
            "success": True,
            "erased": {"conversations": 1, "messages": 2, "audio_files": 0},
        }
        assert erasures["existing"].json() == {
            "success": True,
            "erased": {"conversations": 1, "messages": 4, "audio_files": 0},
        }
        by_user = erasures["user"].json()
        assert by_user["success"] is True
        assert by_user["erased"]["conversations"] == 1 and by_user["erased"]["messages"] == 2
        audio = turns["voice"].json()["assistant_audio_url"]
        assert client.get(audio).status_code == 404  # its speech was stopped and deleted
        assert not (lea.data_dir / "tts" / audio.rsplit("/", 1)[1]).exists()
    rows = db_rows(lea)
    gone = {new_session, existing["session_id"], turns["voice"].json()["session_id"]}
    assert [c for c in rows["conversations"] if c[1] in gone] == []
    assert [c[1] for c in rows["conversations"]] == [turns["blocker"].json()["session_id"]]
    assert len(rows["messages"]) == 2  # the blocker's turn only
    if database.kind == "sqlite":
        assert all(secret.encode() not in data for data in database_bytes(lea.data_dir).values())


@pytest.mark.slow
def test_erasing_a_user_removes_their_turns_and_only_theirs(store_server):
    """Two agents speak in one session: each turn records its own speaker, and erasing one agent
    removes that agent's turns (both messages, the audio), nobody else's."""
    server = store_server
    agent_a, agent_b = f"agent-a-{uuid.uuid4().hex[:8]}", f"agent-b-{uuid.uuid4().hex[:8]}"
    email_b = f"{agent_b}@x.fr"
    with server.client() as client:
        first = voice_turn(server, client, user_id=agent_a, user_email="a@x.fr").json()
        session, conversation = first["session_id"], first["conversation_id"]
        second = voice_turn(server, client, user_id=agent_b, user_email=email_b, session_id=session).json()
        assert second["conversation_id"] == conversation
        audio_a = wait_for_audio(client, first["assistant_audio_url"])
        audio_b = wait_for_audio(client, second["assistant_audio_url"])

        speakers = [m[1:] for m in message_speakers(server) if m[0] == conversation]
        assert speakers == [
            ("user", agent_a, "a@x.fr"),
            ("assistant", None, None),
            ("user", agent_b, email_b),
            ("assistant", None, None),
        ]
        row = next(c for c in db_rows(server)["conversations"] if c[0] == conversation)
        assert row[2:] == (agent_a, "a@x.fr")  # one turn's id and e-mail, never mixed

        r = erase(client, user_id=agent_b)
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "erased": {"conversations": 0, "messages": 2, "audio_files": 1}}
        assert not (server.data_dir / "tts" / audio_b).exists()
        assert (server.data_dir / "tts" / audio_a).exists()
        left = [m for m in db_rows(server)["messages"] if m[1] == conversation]
        assert [m[2] for m in left] == ["user", "assistant"]
        assert left[0][3] == first["transcription"] and left[1][3] == first["response"]
        everything = repr(db_query(server, "SELECT * FROM conversations")) + repr(
            db_query(server, "SELECT * FROM messages")
        )
        assert agent_b not in everything and email_b not in everything

        r = erase(client, user_id=agent_a)
        assert r.json() == {"success": True, "erased": {"conversations": 1, "messages": 2, "audio_files": 1}}
        assert conversation not in [c[0] for c in db_rows(server)["conversations"]]
        assert erase(client, user_id=agent_a).json()["erased"] == {"conversations": 0, "messages": 0, "audio_files": 0}


def test_erased_text_is_gone_from_the_database_files(server):
    """Not only unreachable: the erased words are in none of the database's files (rows are
    overwritten, the write-ahead log emptied)."""
    secret = f"mon adresse est 12 rue Y{uuid.uuid4().hex[:10]}"
    with server.client() as client:
        session = server.chat(client, f"Bonjour, {secret}.").json()["session_id"]
        server.chat(client, f"Je répète : {secret}.", session_id=session)
        assert any(secret.encode() in data for data in database_bytes(server.data_dir).values())
        r = erase(client, session_id=session)
        assert r.status_code == 200 and r.json()["erased"]["messages"] == 4
    leftovers = {name: data.count(secret.encode()) for name, data in database_bytes(server.data_dir).items()}
    assert not any(leftovers.values()), leftovers


# The tables lea-local created before it had migrations (SQLAlchemy's create_all, SQLite).
PREVIOUS_SCHEMA = """
CREATE TABLE conversations (
    id INTEGER NOT NULL,
    session_id VARCHAR(128) NOT NULL,
    user_id VARCHAR(256),
    user_email VARCHAR(320),
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_conversations_session_id ON conversations (session_id);
CREATE INDEX ix_conversations_updated_at ON conversations (updated_at);
CREATE INDEX ix_conversations_user_id ON conversations (user_id);
CREATE TABLE messages (
    id INTEGER NOT NULL,
    conversation_id INTEGER NOT NULL,
    role VARCHAR(16) NOT NULL,
    content TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    model VARCHAR(256),
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    audio_seconds DOUBLE,
    audio_file VARCHAR(64),
    PRIMARY KEY (id),
    FOREIGN KEY(conversation_id) REFERENCES conversations (id) ON DELETE CASCADE
);
CREATE INDEX ix_messages_conversation_order ON messages (conversation_id, id);
"""


def make_previous_database(path: Path) -> None:
    now = datetime.now(UTC).isoformat(" ")
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_SCHEMA)
        db.execute("INSERT INTO conversations VALUES (1, 'old-session', 'agent-old', 'old@x.fr', ?, ?)", (now, now))
        db.execute("INSERT INTO conversations VALUES (2, 'anonymous', NULL, NULL, ?, ?)", (now, now))
        db.executemany(
            "INSERT INTO messages (id, conversation_id, role, content, created_at, model) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (1, 1, "user", "Je vends un T2 à Villeurbanne.", now, None),
                (2, 1, "assistant", "Très bien, quelle surface ?", now, "SmolLM2"),
                (3, 2, "user", "Bonjour", now, None),
                (4, 2, "assistant", "Bonjour !", now, "SmolLM2"),
            ],
        )


@pytest.mark.slow
def test_a_database_of_the_previous_schema_is_upgraded_in_place(make_server, tmp_path):
    data_dir = tmp_path / "previous"
    data_dir.mkdir()
    make_previous_database(data_dir / "lea.sqlite3")
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "16", "LEA_REQUEST_TIMEOUT_SECONDS": "600"}, data_dir=data_dir)
    with sqlite3.connect(data_dir / "lea.sqlite3") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
        assert {"user_id", "user_email"} <= columns
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
        # Every row is still there; turns stored before carry their conversation's user.
        assert db.execute("SELECT id, role, content, user_id, user_email FROM messages ORDER BY id").fetchall() == [
            (1, "user", "Je vends un T2 à Villeurbanne.", "agent-old", "old@x.fr"),
            (2, "assistant", "Très bien, quelle surface ?", None, None),
            (3, "user", "Bonjour", None, None),
            (4, "assistant", "Bonjour !", None, None),
        ]
    with lea.client() as client:
        r = lea.chat(client, "Et combien de pièces ?", session_id="old-session")
        assert r.status_code == 200 and r.json()["conversation_id"] == 1
        assert erase(client, user_id="agent-old").json()["erased"] == {
            "conversations": 0,  # the anonymous turn just added stays
            "messages": 2,
            "audio_files": 0,
        }
    assert [c[:2] for c in db_rows(data_dir)["conversations"]] == [(1, "old-session"), (2, "anonymous")]
    lea.stop()
    # A second start finds the database at the newest revision: nothing to do, nothing lost.
    lea.start()
    assert len(db_rows(data_dir)["messages"]) == 4


def the_code_schema() -> MetaData:
    """Every table the code declares: the conversations', the knowledge base's, the audio's."""
    schema = MetaData()
    for metadata in (Base.metadata, knowledge_tables.metadata, database_audio_store.metadata):
        for table in metadata.tables.values():
            table.to_metadata(schema)
    return schema


def is_declared_by_the_code(item, name, type_, reflected, compare_to) -> bool:
    """What the knowledge index builds by hand beside its tables (lea_local/knowledge/index.py):
    SQLite's FTS5 table and its shadow tables, PostgreSQL's tsvector column and its GIN index."""
    if type_ == "table" and name is not None and name.startswith("knowledge_passages_fts"):
        return False
    return not (name in ("search_vector", "ix_knowledge_passages_search") and reflected)


def test_migrations_build_exactly_the_schema_the_code_uses(tmp_path, database: Database):
    url = database.url or f"sqlite:///{tmp_path / 'new.sqlite3'}"
    store = ConversationStore.from_url(url)
    store.close()
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": is_declared_by_the_code})
        differences = compare_metadata(context, the_code_schema())
    engine.dispose()
    assert differences == []


def asr_queue_depth(client: httpx.Client) -> int:
    found = re.search(r'^lea_queue_depth\{queue="speech recognition"\} (\S+)$', client.get("/metrics").text, re.M)
    assert found, "no speech recognition queue depth in /metrics"
    return int(float(found.group(1)))


@pytest.mark.slow
def test_erasing_a_user_covers_their_voice_turn_still_being_transcribed(make_server, database: Database):
    """A user's first voice turn (no session yet) waits for speech recognition behind another
    user's long generation (the engines share the CPU) when the user is erased: the erasure
    waits for that turn and removes it; the turn itself answers 200."""
    lea = make_server(
        {
            "LEA_LLM_MAX_REPLY_TOKENS": "200",
            "LEA_LLM_TEMPERATURE": "0",
            "LEA_ENGINES_SHARE_CPU": "true",
            "LEA_REQUEST_TIMEOUT_SECONDS": "3600",
            **database.env,
        }
    )
    user = f"agent-{uuid.uuid4().hex[:8]}"
    turns: dict[str, httpx.Response] = {}
    erasures: dict[str, httpx.Response] = {}
    with lea.client() as client:
        threads = [in_background(turns, "blocker", lea, lambda c: lea.chat(c, BLOCKER))]
        wait_for(
            lambda: llm_queue_depth(client) >= 1, "the long generation started", while_possible=threads[0].is_alive
        )
        threads.append(
            in_background(
                turns, "voice", lea, lambda c: voice_turn(lea, c, SHORT_CLIP, user_id=user, user_email="d@x.fr")
            )
        )
        wait_for(
            lambda: asr_queue_depth(client) >= 1,
            "the voice turn waiting for speech recognition",
            while_possible=lambda: all(t.is_alive() for t in threads),
        )
        assert "blocker" not in turns, "the long generation ended too soon for this test"
        threads.append(in_background(erasures, "user", lea, lambda c: erase(c, user_id=user)))
        for thread in threads:
            thread.join()
        assert turns["voice"].status_code == 200, turns["voice"].text
        assert erasures["user"].json()["erased"]["conversations"] == 1
        assert erasures["user"].json()["erased"]["messages"] == 2
    speakers = [row for row in message_speakers(lea) if row[2] == user]
    assert speakers == []
    everything = repr(db_query(lea, "SELECT * FROM conversations")) + repr(db_query(lea, "SELECT * FROM messages"))
    assert "d@x.fr" not in everything
    if database.kind == "sqlite":
        assert "d@x.fr" not in b"".join(database_bytes(lea.data_dir).values()).decode("latin-1")
