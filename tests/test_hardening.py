"""Backpressure, timeouts, disconnects, readiness, metrics, request logs, CORS, erasure and
retention, on the real server."""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.conftest import db_rows
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer

HEADERS = {"X-API-Key": API_KEY}
LONG = "Écris une très longue histoire sur une maison à vendre à Lyon."
# Makes even the tiny model write long, varied text (no loop for the repetition stop to cut).
COUNTING = "Écris en toutes lettres tous les nombres de un à mille, séparés par des virgules."


@pytest.mark.slow
def test_full_queue_answers_503_with_retry_after(make_server):
    lea = make_server({"LEA_LLM_QUEUE_SIZE": "1", "LEA_LLM_MAX_REPLY_TOKENS": "200", "LEA_LLM_TEMPERATURE": "0"})
    responses: list[httpx.Response] = []

    def send() -> None:
        with lea.client() as client:
            responses.append(client.post(CHAT_PATH, json={"message": LONG}, headers=HEADERS))

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 2 and statuses.count(503) == 3, statuses  # one running, one waiting
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"].isdigit()
    assert busy.json()["success"] is False and "busy" in busy.json()["error"]
    assert len(db_rows(lea.data_dir)["messages"]) == 4  # the two answered turns, nothing of the refused


@pytest.mark.slow
def test_slow_turn_is_stopped_with_504_and_nothing_stored(make_server):
    lea = make_server(
        {"LEA_REQUEST_TIMEOUT_SECONDS": "1", "LEA_LLM_MAX_REPLY_TOKENS": "400", "LEA_LLM_TEMPERATURE": "0"}
    )
    with lea.client() as client:
        r = client.post(CHAT_PATH, json={"message": COUNTING}, headers=HEADERS)
        message = "the request took longer than 1 s"
        assert r.status_code == 504 and r.json() == {"success": False, "error": message, "detail": message}
        assert db_rows(lea.data_dir)["messages"] == []
        assert client.post(CHAT_PATH, json={"message": "Bonjour"}, headers=HEADERS).status_code in (200, 503, 504)
    # Stopped between tokens when the budget ran out, not after the 400 it was allowed: what
    # the engine generated is counted (a busy machine generates fewer, never more).
    stopped = [e for e in lea.log_events() if e.get("event") == "llm.cancelled"]
    assert stopped and stopped[0]["completion_tokens"] is not None, stopped
    assert stopped[0]["completion_tokens"] < 400


@pytest.mark.slow
def test_client_that_hangs_up_stops_its_generation(make_server):
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "400", "LEA_LLM_TEMPERATURE": "0"})
    with lea.client(timeout=0.8) as client:
        try:
            client.post(CHAT_PATH, json={"message": COUNTING}, headers=HEADERS)
        except httpx.ReadTimeout:
            pass  # the client gave up and closed the connection
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(e.get("event") == "request" and e.get("status") == 499 for e in lea.log_events()):
            break
        time.sleep(0.1)
    request_lines = [e for e in lea.log_events() if e.get("event") == "request" and e.get("route") == CHAT_PATH]
    assert request_lines and request_lines[-1]["status"] == 499
    # The 400 tokens it was allowed were not all generated: it stopped when the client left.
    stopped = [e for e in lea.log_events() if e.get("event") == "llm.cancelled"]
    assert stopped and stopped[0]["completion_tokens"] is not None and stopped[0]["completion_tokens"] < 400
    assert db_rows(lea.data_dir)["messages"] == []


@pytest.mark.slow
def test_ready_goes_from_503_to_200_during_startup(tmp_path, models_dir):
    lea = LeaServer(tmp_path / "data", models_dir)
    lea.spawn()
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not statuses or statuses[-1] != 200):
            try:
                statuses.append(httpx.get(f"{lea.url}/ready", timeout=1).status_code)
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.02)
        assert 503 in statuses and statuses[-1] == 200, statuses
        assert statuses.index(200) > statuses.index(503)
        assert httpx.get(f"{lea.url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{lea.url}/ready").json()["models"] == {
            "llm": "SmolLM2-135M-Instruct.Q4_1",
            "asr": "faster-whisper:faster-whisper-base",
            "tts": "en_US-joe-medium",
        }
    finally:
        lea.stop()


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_metrics_move_as_requests_are_served(server):
    with server.client() as client:
        before = client.get("/metrics")
        assert before.headers["content-type"].startswith("text/plain")
        server.chat(client, "Bonjour")
        args, mime, name = BROWSER_FORMATS["webm-opus"]
        assert (
            client.post(VOICE_PATH, files={"audio": (name, encode(CLIP, args), mime)}, headers=HEADERS).status_code
            == 200
        )
        time.sleep(1.5)  # speech finishes after the answer
        after = client.get("/metrics").text
    b = before.text
    assert (
        metric(after, "lea_http_requests_total", route=CHAT_PATH, status="200")
        == metric(b, "lea_http_requests_total", route=CHAT_PATH, status="200") + 1
    )
    assert metric(after, "lea_llm_tokens_generated_total") > metric(b, "lea_llm_tokens_generated_total")
    assert metric(after, "lea_asr_audio_seconds_total") >= metric(b, "lea_asr_audio_seconds_total") + 5.5
    for stage in ("decode", "asr", "llm", "tts"):
        assert metric(after, "lea_stage_seconds_count", stage=stage) > metric(
            b, "lea_stage_seconds_count", stage=stage
        ), stage
    for queue in ("language model", "speech recognition", "speech synthesis", "audio decoder"):
        assert f'lea_queue_depth{{queue="{queue}"}}' in after


@pytest.mark.slow
def test_one_log_line_per_request_with_request_id_and_stages_but_no_texts(make_server):
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "16"})
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    with lea.client() as client:
        r = client.post(
            VOICE_PATH,
            files={"audio": (name, encode(CLIP, args), mime)},
            data={"user_email": "secret.person@agence.fr"},
            headers={**HEADERS, "X-Request-ID": "immo-req-123"},
        )
        chat = lea.chat(client, "Mon client s'appelle Monsieur Confidentiel")
    assert r.headers["x-request-id"] == "immo-req-123"
    assert re.fullmatch(r"[0-9a-f]{32}", chat.headers["x-request-id"])
    lines = [e for e in lea.log_events() if e.get("event") == "request" and e["request_id"] == "immo-req-123"]
    assert len(lines) == 1
    assert lines[0]["status"] == 200 and set(lines[0]["stages"]) >= {"decode", "asr", "llm"}
    log = lea.log_text()
    for private in ("Confidentiel", "secret.person", r.json()["transcription"], r.json()["response"][:30], API_KEY):
        assert private not in log, private
    assert all(e.get("request_id") == "immo-req-123" for e in lea.log_events() if e.get("event") == "asr")


@pytest.mark.slow
def test_cors_preflight_for_both_endpoints_and_the_media_route(make_server):
    origin = "https://app.immoassist.fr"
    lea = make_server({"LEA_CORS_ORIGINS": f"{origin},https://staging.immoassist.fr", "LEA_LLM_MAX_REPLY_TOKENS": "8"})
    with lea.client() as client:
        for path, method in ((CHAT_PATH, "POST"), (VOICE_PATH, "POST"), ("/media/tts/" + "A" * 32 + ".mp3", "GET")):
            r = client.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "x-api-key, content-type",
                },
            )
            assert r.status_code == 204, (path, r.status_code)
            assert r.headers["access-control-allow-origin"] == origin
            assert "x-api-key" in r.headers["access-control-allow-headers"].lower()
        chat = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers={**HEADERS, "Origin": origin})
        assert chat.headers["access-control-allow-origin"] == origin
        assert "x-request-id" in chat.headers["access-control-expose-headers"].lower()
        other = client.options(
            CHAT_PATH, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


@pytest.mark.slow
def test_erase_a_session_or_a_user(server):
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    with server.client() as client:
        first = server.chat(client, "Bonjour")
        session = first.json()["session_id"]
        voice = client.post(
            VOICE_PATH,
            files={"audio": (name, encode(CLIP, args), mime)},
            data={"session_id": session, "user_id": "agent-erase-me"},
            headers=HEADERS,
        ).json()
        audio_name = voice["assistant_audio_url"].rsplit("/", 1)[1]
        assert client.get(voice["assistant_audio_url"]).status_code == 200  # wait for the file
        other = server.chat(client, "Je reste").json()
        r = client.post("/api/external/agent/erase", json={"user_id": "agent-erase-me"}, headers=HEADERS)
        assert r.status_code == 200
        # The user's own turn goes (both messages, its audio); the anonymous text turn before it stays.
        assert r.json() == {"success": True, "erased": {"conversations": 0, "messages": 2, "audio_files": 1}}
        assert not (server.data_dir / "tts" / audio_name).exists()
        assert client.get(voice["assistant_audio_url"]).status_code == 404
        rows = db_rows(server.data_dir)
        assert [c[1:] for c in rows["conversations"] if c[1] == session] == [(session, None, None)]
        assert other["session_id"] in [c[1] for c in rows["conversations"]]
        again = client.post("/api/external/agent/erase", json={"session_id": other["session_id"]}, headers=HEADERS)
        assert again.json()["erased"]["conversations"] == 1
        for bad in ({}, {"session_id": "a", "user_id": "b"}, {"session_id": 3}):
            assert client.post("/api/external/agent/erase", json=bad, headers=HEADERS).status_code == 400
        assert client.post("/api/external/agent/erase", json={"session_id": "x"}).status_code == 401


@pytest.mark.slow
def test_retention_purges_old_conversations(make_server, tmp_path):
    data_dir = tmp_path / "retention"
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "8"}, data_dir=data_dir)
    with lea.client() as client:
        old = lea.chat(client, "Ancienne conversation").json()
        recent = lea.chat(client, "Conversation récente").json()
    lea.stop()
    with sqlite3.connect(data_dir / "lea.sqlite3") as db:
        db.execute(
            "UPDATE conversations SET updated_at = ? WHERE id = ?",
            ((datetime.now(UTC) - timedelta(days=40)).isoformat(" "), old["conversation_id"]),
        )
    lea.extra_env["LEA_RETENTION_DAYS"] = "30"
    lea.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        c[0] == old["conversation_id"] for c in db_rows(data_dir)["conversations"]
    ):
        time.sleep(0.2)
    ids = [c[0] for c in db_rows(data_dir)["conversations"]]
    assert old["conversation_id"] not in ids and recent["conversation_id"] in ids


def test_body_limit_is_enforced_while_reading_a_chunked_upload(server):
    """No Content-Length: the server counts while reading and stops at the limit."""
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            f"POST {VOICE_PATH} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {API_KEY}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"0" * 1024 * 1024
        try:
            for _ in range(60):  # up to 60 MiB; the limit is 25 MiB
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = sock.recv(4096).decode("latin-1")
    assert response.startswith("HTTP/1.1 413"), response[:200]
    assert sent < 60 * 1024 * 1024 or "413" in response
    with server.client() as client:
        assert client.get("/health").status_code == 200
