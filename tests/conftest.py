from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from lea_local.catalog import load_catalog
from tests.server import LeaServer

REPO = Path(__file__).resolve().parent.parent


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


def db_rows(data_dir: Path) -> dict[str, list[tuple]]:
    """Read the server's SQLite database directly: every conversation and message row."""
    with sqlite3.connect(data_dir / "lea.sqlite3") as db:
        return {
            "conversations": db.execute(
                "SELECT id, session_id, user_id, user_email FROM conversations ORDER BY id"
            ).fetchall(),
            "messages": db.execute(
                "SELECT id, conversation_id, role, content, model, prompt_tokens, completion_tokens FROM messages ORDER BY id"
            ).fetchall(),
        }
