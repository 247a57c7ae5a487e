"""X-API-Key: required, several keys for rotation, and a server that will not start without one,
or with an example key copied from the documentation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lea_local.api.auth import key_is_valid
from tests.server import CHAT_PATH


@pytest.mark.slow
def test_every_rotated_key_is_accepted_and_others_refused(make_server):
    lea = make_server({"AGENT_API_KEY": "old-key-0123456789, new-key-0123456789"})
    with lea.client() as client:
        for key, status in (
            ("old-key-0123456789", 200),
            ("new-key-0123456789", 200),
            ("old-key-0123456789, new-key-0123456789", 401),
            ("", 401),
            ("x" * 10000, 401),
        ):
            r = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers={"X-API-Key": key})
            assert r.status_code == status, (key[:20], r.text)


def test_key_comparison():
    keys = [b"alpha", b"beta"]
    assert key_is_valid("alpha", keys) and key_is_valid("beta", keys)
    assert not key_is_valid("alph", keys)
    assert not key_is_valid("alphaa", keys)
    assert not key_is_valid(None, keys)
    assert not key_is_valid("", keys)
    assert not key_is_valid("é", keys)


def serve_with_key(tmp_path, key: str | None) -> subprocess.CompletedProcess:
    """`lea-local serve` with this AGENT_API_KEY (None: unset) and no other LEA_ setting."""
    env = {k: v for k, v in os.environ.items() if k != "AGENT_API_KEY" and not k.startswith("LEA_")}
    env["LEA_DATA_DIR"] = str(tmp_path)
    if key is not None:
        env["AGENT_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "lea_local", "serve", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_server_refuses_to_start_without_a_key(tmp_path):
    result = serve_with_key(tmp_path, None)
    assert result.returncode == 2
    assert "AGENT_API_KEY is not set" in result.stderr
    assert not (tmp_path / "lea.sqlite3").exists()


def test_the_readmes_example_key_stops_the_server(tmp_path):
    result = serve_with_key(tmp_path, "change-me-to-a-long-random-key")
    assert result.returncode == 2
    assert "AGENT_API_KEY is an example key" in result.stderr and "openssl rand -hex 32" in result.stderr
    assert "change-me-to-a-long-random-key" not in result.stderr
    assert not (tmp_path / "lea.sqlite3").exists()
