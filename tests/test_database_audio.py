"""Generated speech in the conversation database (`LEA_AUDIO_STORE=database`), for replicas that
share a database but no disk: the store on its own, on SQLite and PostgreSQL (a reader follows
audio as it is written, sees failures and erasures, never a sentence before it is committed;
erasure and expiry leave no row behind), and two real replicas on one PostgreSQL database with
no shared directory: audio spoken on one plays whole from the other, and an erasure on either
deletes it from both."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import text

from lea_local.store.database import create_database_engine
from lea_local.store.schema import upgrade_schema
from lea_local.tts.audio_store import AudioIncomplete, AudioState
from lea_local.tts.database_audio_store import DatabaseAudioStore
from tests.conftest import db_query
from tests.server import API_KEY, LeaServer
from tests.test_replicas import audio_name, decodes

HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture
def store(database, tmp_path):
    engine = create_database_engine(database.url or f"sqlite:///{tmp_path / 'lea.sqlite3'}")
    upgrade_schema(engine)
    yield DatabaseAudioStore(engine, ttl_seconds=60)
    engine.dispose()


def entries(store: DatabaseAudioStore) -> tuple[int, int]:
    with store.engine.connect() as db:
        audio = db.execute(text("SELECT count(*) FROM tts_audio")).scalar_one()
        chunks = db.execute(text("SELECT count(*) FROM tts_audio_chunks")).scalar_one()
    return audio, chunks


def test_a_reader_follows_audio_as_it_is_written_then_reads_it_whole(store):
    name = store.new_name("mp3")
    partial = store.open_partial(name)
    partial.write(b"ID3 first")
    assert store.state(name) is AudioState.PARTIAL and store.read(name) is None
    received: list[bytes] = []
    first_seen = threading.Event()
    writer_done = threading.Event()

    def writer() -> None:  # the rest comes only once the reader has had the first chunk
        first_seen.wait()
        partial.write(b" second")
        partial.write(b" third")
        partial.finish_writing(head=b"id3")  # a WAV header's sizes, rewritten at the end
        assert partial.publish()
        writer_done.set()

    async def follow() -> None:
        try:
            async for data in store.follow(name, stall_timeout=30):
                received.append(data)
                first_seen.set()
        finally:
            first_seen.set()  # a reader that failed never leaves the writer waiting

    thread = threading.Thread(target=writer)
    thread.start()
    asyncio.run(follow())
    thread.join()
    assert writer_done.is_set()
    assert received[0] == b"ID3 first" and b"".join(received) == b"ID3 first second third"
    assert store.state(name) is AudioState.COMPLETE
    stored = store.read(name)
    assert stored is not None and stored.data == b"id3 first second third"


def test_failed_or_erased_audio_stops_its_readers(store):
    failed, erased = store.new_name("mp3"), store.new_name("mp3")
    store.open_partial(failed).fail()
    writing = store.open_partial(erased)
    writing.write(b"ID3")
    assert store.delete([erased]) == 1
    assert not writing.heartbeat() and not writing.publish()  # the writer learns it was erased

    async def follow(name: str) -> bytes:
        return b"".join([data async for data in store.follow(name, stall_timeout=30)])

    with pytest.raises(AudioIncomplete, match="failed") as raised:
        asyncio.run(follow(failed))
    assert not raised.value.erased
    with pytest.raises(AudioIncomplete) as raised:
        asyncio.run(follow(erased))
    assert raised.value.erased
    assert store.state(failed) is AudioState.FAILED and store.state(erased) is None


def test_sentences_are_public_once_committed_and_erased_with_their_reply(store):
    reply = store.new_name("mp3")
    store.write(reply, b"the whole reply")
    first = store.sentence_name(reply, 0)
    staged = store.stage(first, b"sentence 0")
    assert store.read(first) is None and store.state(first) is None
    store.commit(staged, first)
    assert store.read(first).data == b"sentence 0"
    dropped = store.sentence_name(reply, 1)
    store.discard_staged(store.stage(dropped, b"sentence 1"))
    other = store.new_name("mp3")
    store.write(other, b"another reply")
    assert store.delete([reply]) == 2  # the reply and its committed sentence
    assert store.read(reply) is None and store.read(first) is None
    assert store.read(other).data == b"another reply"
    assert entries(store) == (1, 1)


def test_sweep_deletes_expired_entries_partial_ones_included(store):
    stale, live = store.new_name("mp3"), store.new_name("mp3")
    store.open_partial(stale).write(b"ID3 left by a killed replica")
    store.open_partial(live).write(b"ID3")
    with store.engine.begin() as db:
        db.execute(text("UPDATE tts_audio SET touched_at = touched_at - 120 WHERE name = :name"), {"name": stale})
    assert store.state(stale) is None  # expired
    assert store.sweep() == 1
    assert store.state(live) is AudioState.PARTIAL and entries(store) == (1, 1)


def test_replicas_sharing_no_audio_directory_serve_and_erase_each_others_audio(postgres, tmp_path, models_dir):
    env = {
        "LEA_DATABASE_URL": postgres.new_database(),
        "LEA_AUDIO_STORE": "database",
        "LEA_KNOWLEDGE_DIR": str(tmp_path / "knowledge"),  # the documents' files: shared all the same
        "LEA_TTS_FOR_TEXT_CHAT": "true",
        "LEA_LLM_MAX_REPLY_TOKENS": "16",
    }
    a = LeaServer(tmp_path / "a", models_dir, env)
    b = LeaServer(tmp_path / "b", models_dir, env)
    try:
        a.spawn()
        b.spawn()
        a.wait_until_ready(180)
        b.wait_until_ready(180)
        with a.client() as client_a, b.client() as client_b:
            body = a.chat(client_a, "Bonjour, qui êtes-vous ?").json()
            name = audio_name(body)
            from_b = client_b.get(f"/media/tts/{name}")  # B follows it while A may still write it
            assert from_b.status_code == 200 and from_b.headers["content-type"] == "audio/mpeg"
            from_a = client_a.get(f"/media/tts/{name}")
            assert from_a.status_code == 200 and from_b.content == from_a.content
            decodes(from_b.content)
            assert not list((tmp_path / "a").rglob("*.mp3")) and not list((tmp_path / "b").rglob("*.mp3"))

            erased = client_b.post(
                "/api/external/agent/erase", json={"session_id": body["session_id"]}, headers=HEADERS
            ).json()
            assert erased["success"] is True and erased["erased"]["audio_files"] == 1
            assert client_a.get(f"/media/tts/{name}").status_code == 404
            assert client_b.get(f"/media/tts/{name}").status_code == 404
        assert db_query(a, "SELECT count(*) FROM tts_audio") == [(0,)]
        assert db_query(a, "SELECT count(*) FROM tts_audio_chunks") == [(0,)]
    finally:
        a.stop()
        b.stop()
