"""Time budgets on the real server: a turn that cannot finish in time is refused at once, and a
request whose time runs out (or whose client leaves) while it waits never starts an engine.
Assertions are on the work the server did (its log lines), not on wall-clock time."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.server import API_KEY, CHAT_PATH

HEADERS = {"X-API-Key": API_KEY}
LONG = "Écris une très longue histoire sur une maison à vendre à Montréal, avec tous les détails."


def _send_together(lea, count: int, message: str = LONG, timeout: float = 120) -> list[httpx.Response]:
    responses: list[httpx.Response] = []
    barrier = threading.Barrier(count)

    def send(i: int) -> None:
        with lea.client(timeout=timeout) as client:
            barrier.wait()
            responses.append(client.post(CHAT_PATH, json={"message": f"{message} ({i})"}, headers=HEADERS))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return responses


def _engine_starts(lea) -> int:
    """How many LLM generations began (each logs the prompt it sends)."""
    return sum(1 for e in lea.log_events() if e.get("event") == "llm.prompt")


@pytest.mark.slow
def test_requests_that_expire_while_queued_never_start_the_engine(make_server):
    # Budget 1 s, replies of up to 400 tokens (several seconds here): one request runs, the
    # others' time ends while they wait (or they are refused at once): none of them may start.
    lea = make_server(
        {"LEA_REQUEST_TIMEOUT_SECONDS": "1", "LEA_LLM_MAX_REPLY_TOKENS": "400", "LEA_LLM_TEMPERATURE": "0"}
    )
    before = _engine_starts(lea)
    responses = _send_together(lea, 4)
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {503, 504}, statuses
    for r in responses:
        assert r.json()["detail"] == r.json()["error"]
    assert _engine_starts(lea) - before <= 1, statuses


@pytest.mark.slow
def test_a_turn_that_cannot_finish_in_time_is_refused_at_once_with_retry_after(make_server):
    lea = make_server({"LEA_CHAT_TIMEOUT_SECONDS": "8", "LEA_LLM_MAX_REPLY_TOKENS": "256", "LEA_LLM_TEMPERATURE": "0"})
    with lea.client() as client:  # a first turn measures how long one takes
        assert client.post(CHAT_PATH, json={"message": LONG}, headers=HEADERS).status_code in (200, 504)
    responses = _send_together(lea, 8)
    refused = [r for r in responses if r.status_code == 503]
    assert refused, sorted(r.status_code for r in responses)
    for r in refused:
        assert r.headers["retry-after"].isdigit() and int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["detail"]
    # Refused at admission: those requests never waited for, nor used, an engine.
    lines = [e for e in lea.log_events() if e.get("event") == "request" and e.get("status") == 503]
    assert len(lines) >= len(refused)
    for line in lines:
        assert not any(key.startswith("llm") for key in line.get("stages", {})), line
