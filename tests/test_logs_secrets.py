"""No secret reaches the server's log: neither an API key (right or wrong) nor an audio file's
name (its 192 random bits are the credential of /media/tts/<name>). A key too short to be
safe, or to be masked without mangling ordinary text, stops the server at start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from lea_local.runtime.logs import JsonFormatter
from tests.server import API_KEY, CHAT_PATH


@pytest.mark.parametrize("keys", ["k", "a-long-enough-test-key,abc"])
def test_a_short_key_refuses_to_start_with_the_reason(tmp_path, keys):
    env = {k: v for k, v in os.environ.items() if k != "AGENT_API_KEY" and not k.startswith("LEA_")}
    env.update({"AGENT_API_KEY": keys, "LEA_DATA_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "lea_local", "serve", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "AGENT_API_KEY is too short: every key needs at least 16 characters" in result.stderr
    assert not (tmp_path / "lea.sqlite3").exists()


@pytest.mark.slow
def test_the_log_holds_no_key_no_audio_name_and_no_masking(make_server):
    lea = make_server(
        # A generous time budget: this test is about what is logged, on however busy a machine.
        {"LEA_TTS_FOR_TEXT_CHAT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "8", "LEA_REQUEST_TIMEOUT_SECONDS": "900"}
    )
    wrong_key = API_KEY + "-wrong"
    with lea.client() as client:
        r = lea.chat(client, "Bonjour")
        assert r.status_code == 200, r.text
        audio_url = r.json()["assistant_audio_url"]
        assert audio_url and client.get(audio_url).status_code == 200
        audio_name = audio_url.rsplit("/", 1)[1]
        assert client.get(f"/media/tts/{audio_name}?download=1").status_code == 200
        missing_name = "N" * 32 + ".mp3"
        assert client.get(f"/media/tts/{missing_name}").status_code == 404
        for headers in ({"X-API-Key": wrong_key}, {"Authorization": f"Bearer {wrong_key}"}, {}):
            assert client.post(CHAT_PATH, json={"message": "Bonjour"}, headers=headers).status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": API_KEY}).status_code == 200
    # A request's log line is written once its answer has left: wait for the last one's.
    for _ in range(600):
        requests = [e for e in lea.log_events() if e.get("event") == "request"]
        if any(e["route"] == "/metrics" for e in requests):
            break
        time.sleep(0.05)
    log = lea.log_text()
    assert {e["route"] for e in requests} >= {CHAT_PATH, "/media/tts/{name}", "/metrics"}
    for secret in (API_KEY, wrong_key, audio_name, audio_name.rsplit(".", 1)[0], missing_name):
        assert secret not in log, secret
    assert "***" not in log  # nothing was masked: nothing needed to be
    assert '"message": "request"' in log and '"event": "ready"' in log  # ordinary words intact


def _format(formatter: JsonFormatter, message: str) -> str:
    return formatter.format(logging.makeLogRecord({"msg": message, "levelname": "INFO", "name": "t"}))


def test_masking_is_only_a_last_defence_for_whole_long_keys():
    key = "a-long-enough-test-key"
    formatter = JsonFormatter(secrets=[key, "k"])
    line = _format(formatter, f"bookkeeping key={key} kept")
    assert key not in line and "key=***" in line
    assert "bookkeeping" in line and "kept" in line  # a short "key" would have mangled these
