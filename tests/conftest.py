from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from lea_local.catalog import load_catalog
from lea_local.services import preset_model_path
from lea_local.store.database import create_database_engine
from lea_local.store.schema import upgrade_schema
from tests.postgres import PostgresCluster
from tests.server import REPO, LeaServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that runs on PostgreSQL (its cluster, or the "postgresql" case of a database
    parameter) is marked `topology`, so that `scripts/test --quick` leaves it out; the SQLite case
    of the same test stays in. nginx, replicas and browsers are marked in their modules."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = callspec is not None and "postgresql" in callspec.params.values()
        if on_postgresql or {"postgres", "pg_server"} & set(item.fixturenames):
            item.add_marker(pytest.mark.topology)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The tiny preset's real weights. Missing models fail the run (they never skip it):
    `scripts/test` installs them."""
    path = Path(os.environ.get("LEA_TEST_MODELS_DIR", REPO / "models")).resolve()
    missing = [e.id for e in load_catalog().preset_entries("tiny") if not e.is_installed(path)]
    if missing:
        pytest.fail(
            f"tiny preset models missing in {path}: {', '.join(missing)}. "
            f"Run: lea-local models --preset tiny --models-dir {path}"
        )
    return path


@pytest.fixture(scope="session")
def tiny_llm_path(models_dir: Path) -> Path:
    """The tiny preset's GGUF chat model (SmolLM2-135M-Instruct), for tests of the llama.cpp engine."""
    return preset_model_path(load_catalog(), "tiny", models_dir, "llm", "llama-cpp")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    """One real server for the tests that do not need their own settings."""
    lea = LeaServer(
        tmp_path_factory.mktemp("shared-server"),
        models_dir,
        {"LEA_LOG_CONTENT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "48"},
    )
    lea.start()
    yield lea
    lea.stop()


@pytest.fixture
def make_server(tmp_path: Path, models_dir: Path) -> Iterator:
    """Start servers with their own settings (and data directory); stopped after the test."""
    started: list[LeaServer] = []

    def start(env: dict[str, str] | None = None, data_dir: Path | None = None) -> LeaServer:
        lea = LeaServer(data_dir or tmp_path / f"data{len(started)}", models_dir, env)
        started.append(lea)
        return lea.start()

    yield start
    for lea in started:
        lea.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (each test takes a database of its
    own in it). Missing PostgreSQL binaries fail the run: `scripts/install --test` installs them."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


@dataclass(frozen=True)
class Database:
    """The conversation database a parametrised test runs on."""

    kind: str
    url: str | None = None
    """None: the server's default SQLite file in its data directory."""

    @property
    def env(self) -> dict[str, str]:
        return {"LEA_DATABASE_URL": self.url} if self.url else {}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    """Runs the test on SQLite (the default) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return Database("sqlite")
    return Database("postgresql", request.getfixturevalue("postgres").new_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty conversation database at the schema's newest revision, on SQLite and on a fresh
    PostgreSQL database (for tests of what lives in it without a server: the knowledge base)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lea.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    engine = create_database_engine(url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, postgres: PostgresCluster
) -> Iterator[LeaServer]:
    """The shared server's twin, on PostgreSQL."""
    lea = LeaServer(
        tmp_path_factory.mktemp("shared-pg-server"),
        models_dir,
        {"LEA_LOG_CONTENT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "48", "LEA_DATABASE_URL": postgres.new_database()},
    )
    lea.start()
    yield lea
    lea.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_server(request: pytest.FixtureRequest) -> LeaServer:
    """The shared server on SQLite, then its twin on PostgreSQL."""
    return request.getfixturevalue("server" if request.param == "sqlite" else "pg_server")


def database_url(where: Path | LeaServer) -> str:
    """The database of a server (or of a data directory's SQLite file)."""
    if isinstance(where, LeaServer):
        return where.extra_env.get("LEA_DATABASE_URL") or f"sqlite:///{where.data_dir / 'lea.sqlite3'}"
    return f"sqlite:///{where / 'lea.sqlite3'}"


def db_query(where: Path | LeaServer, statement: str, **params: object) -> list[tuple]:
    """Rows read straight from a server's database (SQLite or PostgreSQL), not through lea-local."""
    engine = create_engine(database_url(where), poolclass=NullPool)
    try:
        with engine.begin() as db:
            result = db.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def db_rows(where: Path | LeaServer) -> dict[str, list[tuple]]:
    """Read the server's database directly: every conversation and message row."""
    return {
        "conversations": db_query(where, "SELECT id, session_id, user_id, user_email FROM conversations ORDER BY id"),
        "messages": db_query(
            where,
            "SELECT id, conversation_id, role, content, model, prompt_tokens, completion_tokens FROM messages ORDER BY id",
        ),
    }
