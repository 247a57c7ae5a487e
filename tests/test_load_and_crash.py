"""Load (scripts/load_test.py), a SIGKILL in the middle of turns, and a server that cannot
reach the network: nothing is lost, nothing is half-written, nothing needs the internet."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import threading

import httpx
import pytest

from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.server import API_KEY, CHAT_PATH, REPO, VOICE_PATH, LeaServer
from tests.waiting import wait_for


@pytest.mark.slow
def test_load_at_concurrency_24_for_two_minutes_answers_in_budget_or_refuses_at_once(tmp_path, models_dir):
    """24 clients with ImmoAssist's timeouts for ~2 minutes: every turn is a 200 within its
    budget or a 503 given at once; each answered turn stored exactly once, in order."""
    summary_path = tmp_path / "load.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "load_test.py"), "--concurrency", "24", "--duration", "120",
         "--sessions", "48", "--models-dir", str(models_dir), "--json", str(summary_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = json.loads(summary_path.read_text())
    print(
        "\n" + json.dumps({k: summary[k] for k in ("statuses", "throughput_turns_per_s", "latency_s", "refused_503")})
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert set(summary["statuses"]) <= {"200", "503"} and summary["answers_after_client_timeout"] == 0
    assert summary["latency_s"]["text"]["n"] >= 5 and summary["latency_s"]["voice"]["n"] >= 5
    assert summary["problems"] == []  # each answered turn stored exactly once, in order
    # Refused at admission, not after waiting: a generous bound (the figure is printed).
    assert summary["refused_503"]["n"] == 0 or summary["refused_503"]["p99_ms"] < 1000


@pytest.mark.slow
def test_sigkill_mid_turns_leaves_a_clean_database(tmp_path, models_dir):
    lea = LeaServer(tmp_path / "data", models_dir, {"LEA_LLM_MAX_REPLY_TOKENS": "200", "LEA_LLM_TEMPERATURE": "0.7"})
    lea.start()
    webm = encode(CLIP, BROWSER_FORMATS["webm-opus"][0])
    stop = threading.Event()
    answered: list[dict] = []

    def keep_talking(i: int) -> None:
        with httpx.Client(base_url=lea.url, timeout=60) as client:
            session = None
            while not stop.is_set():
                try:
                    if i % 2:
                        r = client.post(
                            CHAT_PATH,
                            json={"message": f"Question {i}", "session_id": session},
                            headers={"X-API-Key": API_KEY},
                        )
                    else:
                        form = {"session_id": session} if session else {}
                        r = client.post(
                            VOICE_PATH,
                            files={"audio": ("r.webm", webm, "audio/webm")},
                            data=form,
                            headers={"X-API-Key": API_KEY},
                        )
                except httpx.HTTPError:
                    return  # the server died under us
                if r.status_code == 200:
                    answered.append(r.json())
                    session = r.json()["session_id"]

    workers = [threading.Thread(target=keep_talking, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    # Killed once a turn has completed (an event, not a clock: on a slow machine six seconds
    # once passed with none), while the other clients' turns are still under way.
    wait_for(
        lambda: bool(answered),
        "a turn answered before the kill",
        while_possible=lambda: lea.process.poll() is None and any(w.is_alive() for w in workers),
    )
    lea.kill()  # SIGKILL: no shutdown, no flush
    stop.set()
    for w in workers:
        w.join()

    copy = tmp_path / "after-kill"
    shutil.copytree(lea.data_dir, copy)  # the files exactly as the kill left them
    lea.start()  # the server opens the same database again
    with httpx.Client(base_url=lea.url, timeout=60) as client:
        r = client.post(
            CHAT_PATH,
            json={"message": "Toujours là ?", "session_id": answered[-1]["session_id"]},
            headers={"X-API-Key": API_KEY},
        )
        assert r.status_code == 200
    lea.stop()
    with sqlite3.connect(copy / "lea.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT conversation_id, role FROM messages ORDER BY conversation_id, id").fetchall()
        conversations = {c for (c,) in db.execute("SELECT id FROM conversations")}
    by_conversation: dict[int, list[str]] = {}
    for conversation_id, role in rows:
        by_conversation.setdefault(conversation_id, []).append(role)
    assert set(by_conversation) == conversations  # no conversation without its turn
    for roles in by_conversation.values():
        assert roles == ["user", "assistant"] * (len(roles) // 2)  # whole turns only
    stored = {(c, r) for c, r in rows}
    for body in answered:  # every answered turn survived the kill
        assert (body["conversation_id"], "assistant") in stored


OFFLINE_CLIENT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import httpx
from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer

import socket
probe = socket.socket()
probe.settimeout(3)
outbound = probe.connect_ex(("1.1.1.1", 443))
lea = LeaServer(Path(sys.argv[2]), Path(sys.argv[3]), {"LEA_LLM_MAX_REPLY_TOKENS": "16", "HF_HUB_OFFLINE": "0"})
lea.start()
try:
    with httpx.Client(base_url=lea.url, timeout=120) as client:
        text = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers={"X-API-Key": API_KEY})
        voice = client.post(VOICE_PATH, files={"audio": ("r.webm", encode(CLIP, BROWSER_FORMATS["webm-opus"][0]), "audio/webm")}, headers={"X-API-Key": API_KEY})
        audio = client.get(voice.json()["assistant_audio_url"]) if voice.status_code == 200 else None
    print(json.dumps({"outbound": outbound, "text": text.status_code, "voice": voice.status_code,
                      "audio": audio.status_code if audio else None, "audio_bytes": len(audio.content) if audio else 0}))
finally:
    lea.stop()
"""


@pytest.mark.slow
def test_text_and_voice_turns_work_with_outbound_connections_refused(tmp_path, models_dir):
    """The server and its client run in a network namespace that has only a loopback device:
    every connection off the machine fails, as on an agency LAN cut from the internet."""
    script = tmp_path / "offline_client.py"
    script.write_text(OFFLINE_CLIENT)
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "$@"', "sh",
         str(script), str(REPO), str(tmp_path / "data"), str(models_dir)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["outbound"] != 0  # the namespace really refuses outbound connections
    assert outcome == {**outcome, "text": 200, "voice": 200, "audio": 200}
    assert outcome["audio_bytes"] > 1000
