"""PostgreSQL as the conversation store shared by several lea-local processes: the session
locks in the database (two lock holders stand for two processes), the schema upgrade that
replicas race to do, `lea-local db upgrade`, and two real servers on one database: history
seen across them, one session's turns serialised across them, an erasure on one waiting for a
turn on the other, and PostgreSQL stopped and restarted under them (503, then service again)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from lea_local.store.conversations import ConversationStore
from lea_local.store.database import StoreUnavailable, create_database_engine
from lea_local.store.schema import MIGRATIONS, alembic_config, upgrade_schema
from lea_local.store.session_locks import PostgresSessionLocks
from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.conftest import db_query, db_rows
from tests.postgres import PostgresCluster
from tests.server import API_KEY, REPO, VOICE_PATH, LeaServer
from tests.waiting import wait_for, wait_for_async

# The newest revision, which `lea-local db upgrade` brings every database to.
HEAD_REVISION = ScriptDirectory(str(MIGRATIONS)).get_current_head()

HEADERS = {"X-API-Key": API_KEY}
ERASE_PATH = "/api/external/agent/erase"

# The advisory locks lea-local holds, as pg_locks shows them: a 64-bit key is split into
# classid (high half) and objid (low half).
LOCKS_HELD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND granted AND mode = %s
  AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)
"""
LOCKS_AWAITED = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def lock_held(url: str, key: str, mode: str = "ExclusiveLock") -> bool:
    with psycopg.connect(conninfo(url)) as connection:
        return connection.execute(LOCKS_HELD, (mode, key)).fetchone()[0] > 0


def locks_awaited(url: str) -> int:
    with psycopg.connect(conninfo(url)) as connection:
        return connection.execute(LOCKS_AWAITED).fetchone()[0]


def two_processes(url: str) -> tuple[PostgresSessionLocks, PostgresSessionLocks]:
    """Two replicas' session locks: each its own in-process layer and its own connections."""
    store = ConversationStore.from_url(url)
    try:
        first, second = store.session_locks(), store.session_locks()
    finally:
        store.close()
    assert isinstance(first, PostgresSessionLocks) and isinstance(second, PostgresSessionLocks)
    return first, second


async def no_sessions(_user: str) -> list[str]:
    return []


# --- the session locks, in the database --------------------------------------------------


def test_turns_of_one_session_on_two_processes_run_one_after_the_other(postgres: PostgresCluster):
    url = postgres.new_database()
    replica_a, replica_b = two_processes(url)
    order: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            async with replica_a.turn("session-1", None):
                order.append("a starts")

                async def turn_b() -> None:
                    async with replica_b.turn("session-1", None):
                        order.append("b starts")

                tasks.start_soon(turn_b)
                # B is queued in PostgreSQL behind A's lock.
                await wait_for_async(
                    lambda: locks_awaited(url) == 1,
                    "B waiting for the session's lock",
                    while_possible=lambda: "b starts" not in order,
                )
                # Another session is not held up.
                async with replica_b.turn("session-2", None):
                    order.append("b in another session")
                order.append("a ends")

    anyio.run(main)
    assert order == ["a starts", "b in another session", "a ends", "b starts"]
    assert not lock_held(url, "lea-local session:session-1")


def test_a_users_erasure_waits_for_that_users_turn_on_another_process_and_holds_back_the_next(
    postgres: PostgresCluster,
):
    url = postgres.new_database()
    replica_a, replica_b = two_processes(url)
    order: list[str] = []
    sessions_read: list[str] = []

    async def sessions_of_user(user: str) -> list[str]:
        order.append("erasure reads the user's sessions")
        sessions_read.append(user)
        return ["session-1"]

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            async with replica_a.turn("session-1", "agent-7"):
                assert lock_held(url, "lea-local user:agent-7", "ShareLock")

                async def erasure_b() -> None:
                    async with replica_b.settled([], "agent-7", sessions_of_user, wait_seconds=60):
                        order.append("erasure runs")
                        # A new turn of that user, in another session, waits for the erasure.
                        tasks.start_soon(next_turn_a)
                        await wait_for_async(
                            lambda: locks_awaited(url) == 1,
                            "the user's next turn waiting",
                            while_possible=lambda: "next turn runs" not in order,
                        )
                        order.append("erasure ends")

                async def next_turn_a() -> None:
                    async with replica_a.turn("session-2", "agent-7"):
                        order.append("next turn runs")

                tasks.start_soon(erasure_b)
                await wait_for_async(
                    lambda: locks_awaited(url) == 1,
                    "the erasure waiting for the user's turn",
                    while_possible=lambda: "erasure runs" not in order,
                )
                order.append("turn ends")

    anyio.run(main)
    assert order == [
        "turn ends",
        "erasure reads the user's sessions",
        "erasure runs",
        "erasure ends",
        "next turn runs",
    ]
    assert sessions_read == ["agent-7"]


def test_a_lock_wait_given_up_leaves_nothing_held(postgres: PostgresCluster):
    """An erasure that stops waiting (its time bound) holds nothing afterwards and waits no
    more in PostgreSQL: the next erasure gets the locks at once."""
    url = postgres.new_database()
    replica_a, replica_b = two_processes(url)

    async def main() -> None:
        async with replica_a.turn("session-1", "agent-1"):
            with pytest.raises(TimeoutError):
                async with replica_b.settled(["session-1"], None, no_sessions, wait_seconds=0.5):
                    raise AssertionError("entered while the session's turn runs")
            assert locks_awaited(url) == 0
        assert not lock_held(url, "lea-local session:session-1")
        async with replica_b.settled(["session-1"], "agent-1", no_sessions, wait_seconds=60):
            assert lock_held(url, "lea-local session:session-1")
            assert lock_held(url, "lea-local user:agent-1")

    anyio.run(main)
    assert not lock_held(url, "lea-local user:agent-1")


def test_session_locks_on_a_database_that_cannot_be_reached_raise_store_unavailable():
    store_locks = PostgresSessionLocks("postgresql://lea:secret@127.0.0.1:9/none", connect_timeout=2)

    async def main() -> None:
        with pytest.raises(StoreUnavailable):
            async with store_locks.turn("session-1", None):
                raise AssertionError("entered without a database")

    anyio.run(main)


# --- the schema --------------------------------------------------------------------------


def upgrade_as_a_replica(url: str, start: Barrier, results: Queue) -> None:
    """One replica opening the store: its own process, released with the others at once."""
    engine = create_database_engine(url)
    start.wait()
    try:
        results.put(upgrade_schema(engine))
    except Exception as exc:  # reported by the test
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def test_replicas_racing_to_upgrade_a_new_database_all_succeed(postgres: PostgresCluster):
    """Four processes open an empty database at the same moment: one creates the schema under
    the upgrade lock, the others wait for it and find nothing to do."""
    url = postgres.new_database()
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(4), context.Queue()
    replicas = [context.Process(target=upgrade_as_a_replica, args=(url, start, results)) for _ in range(4)]
    for replica in replicas:
        replica.start()
    outcomes = [results.get(timeout=300) for _ in replicas]
    for replica in replicas:
        replica.join()
    assert outcomes == [HEAD_REVISION] * 4
    assert db_query_url(url, "SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]


def db_query_url(url: str, statement: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return [tuple(row) for row in db.exec_driver_sql(statement)]
    finally:
        engine.dispose()


def lea_local_db_upgrade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lea_local", "db", "upgrade", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_db_upgrade_creates_the_schema_on_postgresql(postgres: PostgresCluster):
    url = postgres.new_database()
    done = lea_local_db_upgrade("--database-url", url)
    assert done.returncode == 0, done.stderr
    assert f"at revision {HEAD_REVISION}" in done.stdout
    assert postgres.password not in done.stdout + done.stderr
    tables = {row[0] for row in db_query_url(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {
        "alembic_version",
        "conversations",
        "messages",
        "knowledge_directory",
        "knowledge_documents",
        "knowledge_passages",
        "knowledge_vectors",
        "tts_audio",
        "tts_audio_chunks",
    }


def test_db_upgrade_on_a_database_that_cannot_be_reached_fails_clearly():
    done = lea_local_db_upgrade("--database-url", "postgresql+psycopg://lea:not-logged-9f2@127.0.0.1:9/none")
    assert done.returncode == 1
    assert "cannot upgrade postgresql+psycopg://lea:***@127.0.0.1:9/none" in done.stderr
    assert "not-logged-9f2" not in done.stderr


# The revision the previous main (8915c4d) left its SQLite files at.
PREVIOUS_MAIN_REVISION = "0002"


def test_a_sqlite_file_of_the_previous_main_upgrades_with_every_conversation_kept(tmp_path: Path):
    """A file the previous release wrote (its schema, built by its own migrations, and its rows)
    goes through `lea-local db upgrade` (the data directory's default URL) and keeps every row."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'lea.sqlite3'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), PREVIOUS_MAIN_REVISION)
        connection.exec_driver_sql(
            "INSERT INTO conversations VALUES (1, 'old-session', 'agent-old', 'old@x.fr', "
            "'2025-11-20 10:00:00.000000', '2025-11-20 10:01:00.000000')"
        )
        connection.exec_driver_sql(
            "INSERT INTO messages (id, conversation_id, role, content, created_at, model, prompt_tokens,"
            " completion_tokens, audio_seconds, audio_file, user_id, user_email) VALUES"
            " (1, 1, 'user', 'Je vends un T2 à Villeurbanne.', '2025-11-20 10:00:00.000000', NULL, NULL, NULL,"
            "  3.5, NULL, 'agent-old', 'old@x.fr'),"
            " (2, 1, 'assistant', 'Très bien, quelle surface ?', '2025-11-20 10:01:00.000000', 'SmolLM2', 40, 7,"
            "  NULL, 'AbC.mp3', NULL, NULL)"
        )
    engine.dispose()
    before = db_rows(data_dir)

    env = {k: v for k, v in os.environ.items() if not k.startswith("LEA_")}
    done = lea_local_db_upgrade(env={**env, "LEA_DATA_DIR": str(data_dir)})
    assert done.returncode == 0, done.stderr
    assert f"at revision {HEAD_REVISION}" in done.stdout

    assert db_rows(data_dir) == before
    assert db_query(data_dir, "SELECT audio_seconds, audio_file, user_id FROM messages ORDER BY id") == [
        (3.5, None, "agent-old"),
        (None, "AbC.mp3", None),
    ]
    store = ConversationStore.from_url(url)
    try:
        context = store.context_for("old-session", None)
    finally:
        store.close()
    assert context.conversation_id == 1
    assert [(m.role, m.content) for m in context.history] == [
        ("user", "Je vends un T2 à Villeurbanne."),
        ("assistant", "Très bien, quelle surface ?"),
    ]


# --- two real servers on one database ----------------------------------------------------


@pytest.fixture(scope="module")
def two_servers(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, postgres: PostgresCluster
) -> Iterator[tuple[LeaServer, LeaServer, str]]:
    """Replicas A and B: two processes, each its own data directory, one PostgreSQL database and
    one knowledge directory (as deploy/systemd shares it)."""
    url = postgres.new_database()
    base = tmp_path_factory.mktemp("replicas")
    env = {
        "LEA_DATABASE_URL": url,
        "LEA_KNOWLEDGE_DIR": str(base / "knowledge"),
        "LEA_LOG_CONTENT": "true",
        "LEA_LLM_MAX_REPLY_TOKENS": "16",
        # A busy machine slows every turn: neither 504 nor an admission refusal here.
        "LEA_REQUEST_TIMEOUT_SECONDS": "600",
    }
    a, b = LeaServer(base / "a", models_dir, env), LeaServer(base / "b", models_dir, env)
    a.spawn()
    b.spawn()
    try:
        a.wait_until_ready(300)
        b.wait_until_ready(300)
        yield a, b, url
    finally:
        a.stop()
        b.stop()


def prompts(*servers: LeaServer) -> dict[str, list[dict]]:
    """The prompt each turn sent to the model, by the turn's user message, on these servers."""
    found = {}
    for lea in servers:
        for event in lea.log_events():
            if event.get("event") == "llm.prompt" and "prompt" in event:
                found[event["prompt"][-1]["content"]] = event["prompt"]
    return found


def test_turns_alternated_between_two_servers_see_each_others_history(two_servers):
    a, b, _url = two_servers
    name = f"Zoé-{uuid.uuid4().hex[:6]}"
    with a.client() as client_a, b.client() as client_b:
        first = a.chat(client_a, f"Bonjour, je m'appelle {name}.").json()
        session = first["session_id"]
        second = b.chat(client_b, "Comment je m'appelle ?", session_id=session).json()
        third = a.chat(client_a, "Et que vous ai-je demandé ?", session_id=session).json()
    assert first["conversation_id"] == second["conversation_id"] == third["conversation_id"]
    on_b = prompts(b)["Comment je m'appelle ?"]
    assert on_b[1:] == [
        {"role": "user", "content": f"Bonjour, je m'appelle {name}."},
        {"role": "assistant", "content": first["response"]},
        {"role": "user", "content": "Comment je m'appelle ?"},
    ]
    on_a = prompts(a)["Et que vous ai-je demandé ?"]
    assert on_a[-3:] == [
        {"role": "user", "content": "Comment je m'appelle ?"},
        {"role": "assistant", "content": second["response"]},
        {"role": "user", "content": "Et que vous ai-je demandé ?"},
    ]


def test_concurrent_turns_of_one_session_on_two_servers_are_serialised(two_servers):
    """Four turns of one session sent at once, two to each server: all stored whole, one after
    the other, and each turn's prompt holds every turn stored before it (none ran beside
    another on the same history)."""
    a, b, url = two_servers
    with a.client() as client:
        first = a.chat(client, "Bonjour").json()
    session = first["session_id"]
    tag = uuid.uuid4().hex[:6]
    responses: dict[str, httpx.Response] = {}

    def send(lea: LeaServer, text: str) -> None:
        with lea.client() as client:
            responses[text] = lea.chat(client, text, session_id=session)

    threads = [
        threading.Thread(target=send, args=(lea, f"Question {i} {tag}")) for i, lea in enumerate((a, b, a, b), start=1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {text: r.status_code for text, r in responses.items()} == {f"Question {i} {tag}": 200 for i in range(1, 5)}
    assert {r.json()["conversation_id"] for r in responses.values()} == {first["conversation_id"]}

    stored = [
        (role, content)
        for _id, conversation, role, content, *_ in db_rows(a)["messages"]
        if conversation == first["conversation_id"]
    ]
    assert [role for role, _ in stored] == ["user", "assistant"] * 5
    sent = prompts(a, b)
    for turn in range(1, 5):
        message = stored[2 * turn][1]
        history = [{"role": role, "content": content} for role, content in stored[: 2 * turn]]
        assert sent[message][1:-1] == history, f"turn {turn} did not see the turns stored before it"
    assert url  # the database both servers share


def voice_turn(lea: LeaServer, client: httpx.Client, **form: str) -> httpx.Response:
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    return client.post(VOICE_PATH, files={"audio": (name, encode(CLIP, args), mime)}, data=form, headers=HEADERS)


def erase_during_a_voice_turn(
    a: LeaServer, b: LeaServer, url: str, session: str, user: str, erased_by: str
) -> tuple[httpx.Response, httpx.Response]:
    """A voice turn on A; once it holds its session (or its speaker's lock) in PostgreSQL, the
    erasure of that session (or user) on B. Returns both answers."""
    results: dict[str, httpx.Response] = {}

    def speak() -> None:
        with a.client() as client:
            results["turn"] = voice_turn(a, client, session_id=session, user_id=user, user_email="e@x.fr")

    speaker = threading.Thread(target=speak)
    speaker.start()
    if erased_by == "session_id":
        held, key, mode = session, f"lea-local session:{session}", "ExclusiveLock"
    else:
        held, key, mode = user, f"lea-local user:{user}", "ShareLock"
    wait_for(lambda: lock_held(url, key, mode), f"A's turn holding its {erased_by}", while_possible=speaker.is_alive)
    assert "turn" not in results, "the voice turn ended before the erasure could be sent"
    with b.client() as client:
        erasure = client.post(ERASE_PATH, json={erased_by: held}, headers=HEADERS)
    speaker.join()
    return results["turn"], erasure


@pytest.mark.parametrize("erased_by", ["session_id", "user_id"])
def test_an_erasure_on_one_server_waits_for_a_turn_in_flight_on_the_other(two_servers, erased_by: str):
    """A voice turn on A holds its session (and its speaker) from decoding on. Erasing that
    session, or that user, on B while the turn runs on A: the erasure waits for the turn, then
    erases it too; the turn answers 200 (its conversation never vanished halfway)."""
    a, b, url = two_servers
    session, user = f"immo-{uuid.uuid4()}", f"agent-{uuid.uuid4().hex[:8]}"
    turn, erasure = erase_during_a_voice_turn(a, b, url, session, user, erased_by)
    assert turn.status_code == 200, turn.text
    assert erasure.status_code == 200, erasure.text
    erased = erasure.json()["erased"]
    assert (erased["conversations"], erased["messages"]) == (1, 2), erased
    assert [c for c in db_rows(b)["conversations"] if c[1] == session] == []
    assert db_query(b, "SELECT count(*) FROM messages WHERE user_id = :user", user=user) == [(0,)]


def test_while_postgresql_is_down_requests_get_503_then_service_resumes(two_servers, postgres: PostgresCluster):
    a, b, _url = two_servers
    with a.client(timeout=120) as client_a, b.client(timeout=120) as client_b:
        session = a.chat(client_a, "Bonjour").json()["session_id"]
        postgres.stop()
        try:
            refused = {
                "turn on A": a.chat(client_a, "Vous êtes là ?", session_id=session),
                "new session on B": b.chat(client_b, "Bonjour"),
                "erasure on B": client_b.post(ERASE_PATH, json={"session_id": session}, headers=HEADERS),
            }
            for what, response in refused.items():
                assert response.status_code == 503, (what, response.status_code, response.text)
                assert response.headers["Retry-After"] == "5", what
                assert response.json() == {
                    "success": False,
                    "error": "the conversation database is unavailable; try again in a few seconds",
                    "detail": "the conversation database is unavailable; try again in a few seconds",
                }, what
                print(f"\n{what} while PostgreSQL is down: 503 in {response.elapsed.total_seconds() * 1000:.0f} ms")
            assert client_a.get("/health").status_code == 200
        finally:
            postgres.start()
        # No restart of lea-local: the next requests reconnect by themselves.
        again = a.chat(client_a, "Et maintenant ?", session_id=session)
        assert again.status_code == 200, again.text
        assert b.chat(client_b, "Toujours là ?", session_id=session).status_code == 200
    for lea in (a, b):
        log = lea.log_text()
        assert "the conversation database is unreachable" in log
        assert postgres.password not in log
