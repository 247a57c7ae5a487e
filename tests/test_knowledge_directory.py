"""Replicas share their knowledge directory (issue 25, item 5). The documents' rows are shared
through PostgreSQL but their files are not: a replica with a private LEA_KNOWLEDGE_DIR would see
the documents and not their files, so that its `reindex` deletes the others' rows. The directory
carries a marker with an id, the database records the first one, and a replica (or a `lea-local
knowledge` command) with another directory refuses to start, naming the directory to share."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lea_local.knowledge import KnowledgeBase, tables
from lea_local.knowledge.directory import MARKER, KnowledgeDirectoryNotShared, claim_directory, directory_id
from lea_local.store.database import create_database_engine
from lea_local.store.schema import upgrade_schema
from tests.postgres import PostgresCluster
from tests.server import LeaServer

GUIDE = "# Guide\n\nLa visite libre se réserve la veille auprès du courtier inscripteur.\n"


@pytest.fixture
def pg_engine(postgres: PostgresCluster):
    engine = create_database_engine(postgres.new_database())
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def documents_in(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(tables.documents)).scalar_one()


@pytest.mark.topology
def test_replicas_on_one_shared_directory_see_each_others_documents(pg_engine, tmp_path: Path):
    shared = tmp_path / "shared-knowledge"
    a = KnowledgeBase(pg_engine, shared, retrieval="lexical")
    b = KnowledgeBase(pg_engine, shared, retrieval="lexical")
    assert a.directory_id == b.directory_id == (shared / MARKER).read_text().strip()
    a.add("guide.md", GUIDE.encode())
    assert b.reindex().removed == [] and [d.file_name for d in b.documents()] == ["guide.md"]


@pytest.mark.topology
def test_a_replica_with_a_private_directory_is_refused_naming_the_shared_one(pg_engine, tmp_path: Path):
    shared = tmp_path / "shared-knowledge"
    KnowledgeBase(pg_engine, shared, retrieval="lexical").add("guide.md", GUIDE.encode())
    with pytest.raises(KnowledgeDirectoryNotShared) as refusal:
        KnowledgeBase(pg_engine, tmp_path / "replica-b" / "knowledge", retrieval="lexical")
    message = str(refusal.value)
    assert str(shared.resolve()) in message and "LEA_KNOWLEDGE_DIR" in message
    assert str(tmp_path / "replica-b" / "knowledge") in message
    assert documents_in(pg_engine) == 1  # refused before anything could delete the row


@pytest.mark.topology
def test_a_private_directory_holding_a_marker_of_its_own_is_refused_too(pg_engine, tmp_path: Path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    claim_directory(pg_engine, tmp_path / "a")  # a is the database's
    directory_id(tmp_path / "b")  # b marked by an earlier, separate deployment
    with pytest.raises(KnowledgeDirectoryNotShared):
        claim_directory(pg_engine, tmp_path / "b")
    assert claim_directory(pg_engine, tmp_path / "a") == directory_id(tmp_path / "a")


def test_on_sqlite_a_replaced_directory_is_adopted(tmp_path: Path, caplog):
    # One machine's database, opened by one server: a directory restored elsewhere is its own.
    engine = create_database_engine(f"sqlite:///{tmp_path / 'lea.sqlite3'}")
    upgrade_schema(engine)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    claim_directory(engine, tmp_path / "old")
    assert claim_directory(engine, tmp_path / "new") == directory_id(tmp_path / "new")
    assert "adopting it" in caplog.text
    engine.dispose()


def test_replicas_marking_one_new_directory_at_once_agree_on_one_id(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    ids: list[str] = []
    start = threading.Barrier(8)

    def mark() -> None:
        start.wait()
        ids.append(directory_id(shared))

    threads = [threading.Thread(target=mark) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert sorted(p.name for p in shared.iterdir()) == [MARKER]  # no draft left behind


def test_a_damaged_marker_is_refused_with_what_to_do(tmp_path: Path):
    (tmp_path / MARKER).write_text("pas un identifiant\n")
    with pytest.raises(KnowledgeDirectoryNotShared, match="restore it"):
        directory_id(tmp_path)


@pytest.mark.topology
@pytest.mark.slow
def test_the_knowledge_command_with_a_private_directory_deletes_nothing(pg_engine, postgres, tmp_path: Path):
    """The review's case: `knowledge reindex` on a replica that cannot see the files."""
    KnowledgeBase(pg_engine, tmp_path / "shared", retrieval="lexical").add("guide.md", GUIDE.encode())
    environment = {
        **os.environ,
        "LEA_DATA_DIR": str(tmp_path / "replica-b"),
        "LEA_DATABASE_URL": pg_engine.url.render_as_string(hide_password=False),
        "LEA_KNOWLEDGE_RETRIEVAL": "lexical",
    }
    environment.pop("LEA_KNOWLEDGE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "lea_local", "knowledge", "reindex"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "share one knowledge directory" in done.stderr and str((tmp_path / "shared").resolve()) in done.stderr
    assert documents_in(pg_engine) == 1


@pytest.mark.topology
@pytest.mark.slow
def test_a_replica_server_with_a_private_directory_stops_at_start_up(pg_engine, tmp_path: Path, models_dir: Path):
    (tmp_path / "shared").mkdir()
    claim_directory(pg_engine, tmp_path / "shared")
    url = pg_engine.url.render_as_string(hide_password=False)
    replica = LeaServer(tmp_path / "replica-b", models_dir, {"LEA_DATABASE_URL": url})
    replica.spawn()
    try:
        code = replica.process.wait(timeout=300)  # a guard against a hang, not a speed bound
    finally:
        replica.stop()
    assert code == 3
    log = replica.log_text()
    assert "KnowledgeDirectoryNotShared" in log and str((tmp_path / "shared").resolve()) in log


def test_the_shipped_replica_unit_gives_every_replica_one_knowledge_directory():
    unit = (Path(__file__).resolve().parent.parent / "deploy/systemd/lea-local@.service").read_text()
    settings = dict(
        line.removeprefix("Environment=").split("=", 1) for line in unit.splitlines() if line.startswith("Environment=")
    )
    shared = settings["LEA_KNOWLEDGE_DIR"]
    assert "%i" not in shared and "%i" in settings["LEA_DATA_DIR"]  # one for all, outside each replica's own
    assert not shared.startswith(settings["LEA_DATA_DIR"].split("%i")[0] + "%i")
    state = next(line for line in unit.splitlines() if line.startswith("StateDirectory="))
    assert shared.removeprefix("/var/lib/") in state.split()  # systemd creates it, owned by lea
