"""The event loop stays free while the model generates: health answers fast, requests queue."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.server import API_KEY, CHAT_PATH


@pytest.mark.slow
def test_health_answers_while_a_generation_runs(make_server):
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "400", "LEA_LLM_TEMPERATURE": "0"})
    window: dict[str, float] = {}
    result: dict[str, httpx.Response] = {}

    def long_generation() -> None:
        with lea.client() as client:
            window["start"] = time.monotonic()
            result["chat"] = client.post(
                CHAT_PATH,
                json={"message": "Écris en toutes lettres tous les nombres de un à mille, séparés par des virgules."},
                headers={"X-API-Key": API_KEY},
            )
            window["end"] = time.monotonic()

    worker = threading.Thread(target=long_generation)
    worker.start()
    samples: list[tuple[float, float]] = []
    with lea.client() as client:
        while "start" not in window:
            time.sleep(0.01)
        time.sleep(0.3)  # let the generation get going
        while worker.is_alive():
            sent = time.monotonic()
            r = client.get("/health")
            samples.append((sent, time.monotonic() - sent))
            assert r.status_code == 200
            time.sleep(0.05)
    worker.join()
    assert result["chat"].status_code == 200
    during = [latency for sent, latency in samples if window["start"] < sent and sent + latency < window["end"]]
    # Many health checks were sent and answered while the one generation ran: the event loop
    # never waited for the model. (Their latencies are printed, not bounded: on a busy machine
    # the operating system, not the server, decides them.)
    assert len(during) >= 10, f"generation too short to measure ({window['end'] - window['start']:.2f} s)"
    print(f"\nhealth during generation: {len(during)} requests, max {max(during) * 1000:.1f} ms")


def test_concurrent_turns_of_one_session_are_stored_in_order(store_server):
    """Two requests of the same session at once: each turn is stored whole, one after the other
    (on SQLite and on PostgreSQL)."""
    server = store_server
    with server.client() as client:
        first = server.chat(client, "Bonjour").json()
    session = first["session_id"]
    responses: list[httpx.Response] = []

    def send(text: str) -> None:
        with server.client() as client:
            responses.append(server.chat(client, text, session_id=session))

    threads = [threading.Thread(target=send, args=(f"Question {i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert {r.json()["conversation_id"] for r in responses} == {first["conversation_id"]}
    from tests.conftest import db_rows

    rows = [m for m in db_rows(server)["messages"] if m[1] == first["conversation_id"]]
    assert [m[2] for m in rows] == ["user", "assistant"] * 4
