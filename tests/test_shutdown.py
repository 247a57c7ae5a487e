"""Stopping a replica with SIGTERM (systemd, Docker, Kubernetes; nginx keeps the other replica):
new connections are refused at once, a turn that finishes within the grace period
(`LEA_SHUTDOWN_GRACE_SECONDS`) answers 200 and is stored, one still running after it is
stopped and answers 503 in the contract's shape (an error event in a stream that has begun),
never 500, and stores nothing. The process then says it stopped and exits as killed by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lea_local.api.shutdown import Drain
from tests.conftest import db_rows
from tests.fixtures.messages import LONG_MESSAGE
from tests.server import API_KEY, CHAT_PATH, LeaServer
from tests.waiting import wait_for

KEY = {"X-API-Key": API_KEY}
CHAT_STREAM = CHAT_PATH + "/stream"
# At temperature 0 the tiny model writes a few hundred tokens to this.
LONG_ASK = "Write a very long and detailed guide, in twenty numbered steps, to buying a house."
SETTINGS = {"LEA_LLM_TEMPERATURE": "0"}
# A hang guard only (the server must exit on its own), never what a test measures.
EXIT_GUARD_SECONDS = 120


def generating(lea: LeaServer) -> bool:
    """The LLM has taken a turn (its prompt is logged just before it is evaluated)."""
    return any(event.get("event") == "llm.prompt" for event in lea.log_events())


def llm_jobs(lea: LeaServer) -> int:
    """Turns running or waiting for the LLM."""
    found = re.search(r'^lea_queue_depth\{queue="language model"\} (\S+)$', httpx.get(f"{lea.url}/metrics").text, re.M)
    assert found
    return int(float(found.group(1)))


def refused(lea: LeaServer) -> bool:
    """A new connection is refused: the replica takes no more work (nginx moves on)."""
    try:
        httpx.get(f"{lea.url}/ready", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.RemoteProtocolError:
        return False  # accepted just before the listening socket closed, then dropped: ask again
    return False


def sigterm(lea: LeaServer, *, while_possible) -> None:
    """SIGTERM; then the listening socket closes at once."""
    assert lea.process is not None
    lea.process.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(lea), "new connections refused during the drain", while_possible=while_possible)


def sigterm_once_generating(lea: LeaServer, message: str) -> httpx.Response:
    """A turn's answer, sent SIGTERM once the LLM has taken it (its prompt about to be evaluated)."""
    with ThreadPoolExecutor(1) as pool, lea.client() as client:
        answer = pool.submit(lea.chat, client, message)
        wait_for(lambda: generating(lea), "the turn generating", while_possible=lambda: not answer.done())
        sigterm(lea, while_possible=lambda: not answer.done())
        return answer.result()


def exit_status(lea: LeaServer) -> int:
    assert lea.process is not None
    return lea.process.wait(timeout=EXIT_GUARD_SECONDS)


def events_of(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield json.loads(line[len("data:") :].strip())


def check_refusal(body: dict) -> None:
    """The contract's error shape, saying why."""
    assert body["success"] is False and body["error"] == body["detail"]
    assert "restarting" in body["error"]


def check_clean_log(lea: LeaServer) -> None:
    """The expected cancellation is no error: nothing at ERROR, no traceback, no 500."""
    events = lea.log_events()
    assert [e for e in events if e.get("level") in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in lea.log_text()
    assert all(e.get("status") != 500 for e in events)


@pytest.mark.slow
def test_turns_still_running_after_the_grace_period_get_503_and_store_nothing(make_server) -> None:
    # No grace: the turns under way are stopped at once, whatever the machine's speed. A long
    # budget, so that the second turn is admitted behind the first's long reply.
    lea = make_server(
        {
            **SETTINGS,
            "LEA_SHUTDOWN_GRACE_SECONDS": "0",
            "LEA_LLM_MAX_REPLY_TOKENS": "2000",
            "LEA_CHAT_TIMEOUT_SECONDS": "3600",
        }
    )
    with ThreadPoolExecutor(1) as pool, lea.client() as client, lea.client() as other:
        with client.stream("POST", CHAT_STREAM, headers=KEY, json={"message": LONG_ASK}) as response:
            assert response.status_code == 200
            events = events_of(response)
            assert set(next(events)) == {"delta"}  # the reply is being written
            # A second turn, waiting for the LLM behind the first.
            queued = pool.submit(lea.chat, other, "Bonjour, quels sont vos horaires ?")
            wait_for(lambda: llm_jobs(lea) == 2, "the second turn queued", while_possible=lambda: not queued.done())
            sigterm(lea, while_possible=lambda: not queued.done())
            rest = list(events)
        answer = queued.result()

    # The running turn stopped between tokens: its stream ends with the error event.
    assert rest and all(set(event) == {"delta"} for event in rest[:-1])
    assert rest[-1]["status"] == 503 and "restarting" in rest[-1]["error"] and rest[-1]["error"] == rest[-1]["detail"]
    # The queued turn left the queue: an ordinary 503.
    assert answer.status_code == 503, answer.text
    check_refusal(answer.json())
    assert answer.headers["retry-after"] == "5"

    assert exit_status(lea) == -signal.SIGTERM
    assert "lea-local: stopped: SIGTERM; 2 request(s) still running after 0 s answered 503" in lea.log_text()
    assert any(e.get("event") == "llm.cancelled" for e in lea.log_events())
    assert db_rows(lea.data_dir) == {"conversations": [], "messages": []}
    check_clean_log(lea)


@pytest.mark.slow
def test_a_turn_that_finishes_within_the_grace_period_is_answered_and_stored(make_server) -> None:
    lea = make_server({**SETTINGS, "LEA_SHUTDOWN_GRACE_SECONDS": "300", "LEA_LLM_MAX_REPLY_TOKENS": "48"})
    response = sigterm_once_generating(lea, LONG_ASK)

    assert response.status_code == 200, response.text
    reply = response.json()["response"]
    assert exit_status(lea) == -signal.SIGTERM
    assert "lea-local: stopped: SIGTERM\n" in lea.log_text()
    messages = [(role, content) for _, _, role, content, *_ in db_rows(lea.data_dir)["messages"]]
    assert messages == [("user", LONG_ASK), ("assistant", reply)]
    check_clean_log(lea)


@pytest.mark.slow
def test_a_turn_stopped_during_its_prompts_evaluation_stops_there(make_server) -> None:
    # LONG_MESSAGE: many seconds of evaluation on a CPU. The SIGTERM comes
    # while it is evaluated; llama.cpp stops within a batch (llm/abort.py), not after it all.
    lea = make_server(
        {
            **SETTINGS,
            "LEA_SHUTDOWN_GRACE_SECONDS": "0",
            "LEA_MAX_MESSAGE_CHARS": "16000",
            "LEA_LLM_CONTEXT_SIZE": "8192",
            "LEA_CHAT_TIMEOUT_SECONDS": "3600",
        }
    )
    response = sigterm_once_generating(lea, LONG_MESSAGE)

    assert response.status_code == 503, response.text
    check_refusal(response.json())
    assert exit_status(lea) == -signal.SIGTERM
    cancelled = [e for e in lea.log_events() if e.get("event") == "llm.cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["completion_tokens"] == 0, cancelled
    assert "during evaluation" in cancelled[0]["reason"]
    assert db_rows(lea.data_dir) == {"conversations": [], "messages": []}
    check_clean_log(lea)


# --- the last resort, in isolation: uvicorn cancelling a request that ignored its deadline ------


async def cancelled_request(drain: Drain) -> list[dict]:
    """A request that never ends on its own, cancelled as uvicorn cancels it; what it sent."""
    sent: list[dict] = []

    async def never_answers(scope, receive, send) -> None:
        await asyncio.Event().wait()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/knowledge/documents", "headers": [], "query_string": b""}
    task = asyncio.create_task(drain.answer_cut_off(never_answers)(scope, receive, send))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        sent.append({"type": "cancelled"})
    return sent


def test_a_request_cancelled_after_the_grace_period_answers_503_not_500() -> None:
    drain = Drain()
    drain.stop()
    sent = asyncio.run(cancelled_request(drain))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["success"] is False and "restarting" in body["detail"]


def test_a_cancellation_outside_a_shutdown_is_left_alone() -> None:
    assert asyncio.run(cancelled_request(Drain())) == [{"type": "cancelled"}]


# Start-up's wait for what is not there yet; SIGTERM ends it long before, or the test fails.
STARTUP_WAIT_SECONDS = 300
PROMPT_EXIT_SECONDS = 60


@pytest.mark.parametrize("waiting_for", ["remote engine", "database"])
def test_sigterm_while_start_up_waits_stops_the_server_at_once(tmp_path, models_dir, waiting_for) -> None:
    """A replica waiting at start for a remote engine server (LEA_REMOTE_WAIT_SECONDS) or its
    database (LEA_DATABASE_WAIT_SECONDS) acts on SIGTERM at once, not when the wait runs out:
    it exits, killed by SIGTERM, while the wait had most of its time left, and says why."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        silent = probe.getsockname()[1]
    env = (
        {"LEA_LLM_URL": f"http://127.0.0.1:{silent}/v1", "LEA_REMOTE_WAIT_SECONDS": str(STARTUP_WAIT_SECONDS)}
        if waiting_for == "remote engine"
        else {
            "LEA_DATABASE_URL": f"postgresql+psycopg://lea:not-logged-7c1d@127.0.0.1:{silent}/lea",
            "LEA_DATABASE_WAIT_SECONDS": str(STARTUP_WAIT_SECONDS),
        }
    )
    lea = LeaServer(tmp_path / "starting", models_dir, env)
    lea.spawn()
    assert lea.process is not None
    try:
        wait_for(
            lambda: any(e.get("message", "").startswith("waiting for the") for e in lea.log_events()),
            "start-up waiting",
            while_possible=lambda: lea.process.poll() is None,
        )
        lea.process.send_signal(signal.SIGTERM)
        try:
            code = lea.process.wait(timeout=PROMPT_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still waiting {PROMPT_EXIT_SECONDS} s after SIGTERM (its wait is {STARTUP_WAIT_SECONDS} s)")
    finally:
        lea.kill()
    log = lea.log_text()
    assert code == -signal.SIGTERM, log[-3000:]
    stopped = [e for e in lea.log_events() if e.get("event") == "startup.stopped"]
    assert stopped and "the server is stopping" in stopped[0]["message"], log[-3000:]
    assert "start-up failed" not in log and f"waited {STARTUP_WAIT_SECONDS}" not in log  # not the wait's end
    assert "lea-local: stopped: SIGTERM" in log
    assert "not-logged-7c1d" not in log
