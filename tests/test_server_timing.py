"""Per-stage timings on the real server: a standard `Server-Timing` header on the API responses
(the stages known when the response begins, as the request's log line counts them), and
`timings_ms` in the streamed turns' `done` event (the stages that ran after the headers left)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from lea_local.runtime.observability import server_timing
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer
from tests.test_agent_streams import events_of
from tests.waiting import wait_for

KEY = {"X-API-Key": API_KEY}
CLIP = Path("/work/shared/audio/fr/fleurs_fr_005.ogg")
# W3C Server Timing: metric *( OWS ";" OWS param ), params dur=<number> and desc=<token or quoted>.
METRIC = re.compile(r'(?P<name>[A-Za-z0-9_.-]+);dur=(?P<dur>[0-9]+(?:\.[0-9]+)?)(?:;desc="[^"\\]*")?')


def parse(header: str) -> dict[str, float]:
    timings = {}
    for metric in header.split(", "):
        match = METRIC.fullmatch(metric)
        assert match, f"not a Server-Timing metric: {metric!r}"
        timings[match["name"]] = float(match["dur"])
    return timings


def logged_stages(lea: LeaServer, request_id: str) -> dict[str, float]:
    """The stages of the request's log line (written once the response has gone)."""

    def lines() -> list[dict]:
        return [e for e in lea.log_events() if e.get("event") == "request" and e.get("request_id") == request_id]

    wait_for(lambda: lines() != [], "the request's log line", while_possible=lambda: lea.process.poll() is None)
    [line] = lines()
    return line["stages"]


def test_header_syntax() -> None:
    header = server_timing({"decode": 0.0123, "asr": 1.5, "llm_wait": 0.25}, 2.0)
    assert header == (
        'decode;dur=12.3;desc="audio decode", asr;dur=1500.0;desc="speech recognition", '
        'llm_wait;dur=250.0;desc="language model queue wait", total;dur=2000.0;desc="until the response began"'
    )
    assert parse(header) == {"decode": 12.3, "asr": 1500.0, "llm_wait": 250.0, "total": 2000.0}


def test_chat_response_carries_its_llm_time(server: LeaServer) -> None:
    with server.client() as client:
        response = server.chat(client, "Bonjour")
    assert response.status_code == 200, response.text
    timings = parse(response.headers["server-timing"])
    assert timings["llm"] > 0 and timings["total"] >= timings["llm"]
    assert "asr" not in timings and "decode" not in timings
    # The same figures as the request's log line (seconds there).
    logged = logged_stages(server, response.headers["x-request-id"])
    assert timings["llm"] == round(logged["llm"] * 1000, 1)


def test_voice_response_carries_every_stage_before_the_body(server: LeaServer) -> None:
    with server.client() as client:
        response = client.post(VOICE_PATH, files={"audio": (CLIP.name, CLIP.read_bytes(), "audio/ogg")}, headers=KEY)
    assert response.status_code == 200, response.text
    timings = parse(response.headers["server-timing"])
    assert {"decode", "asr", "llm", "total"} <= set(timings), timings
    assert all(duration > 0 for duration in timings.values()), timings
    assert timings["total"] >= timings["decode"] + timings["asr"] + timings["llm"]


@pytest.mark.slow
def test_streams_give_early_stages_in_the_header_and_all_in_done(server: LeaServer) -> None:
    with server.client() as client:
        with client.stream(
            "POST", VOICE_PATH + "/stream", files={"audio": (CLIP.name, CLIP.read_bytes(), "audio/ogg")}, headers=KEY
        ) as response:
            assert response.status_code == 200, response.read()
            header = parse(response.headers["server-timing"])
            events = list(events_of(response))
        # The stream began with the transcription: decoding and recognition had run.
        assert {"decode", "asr"} <= set(header), header
        done = events[-1]
        assert done["done"] is True
        assert {"decode", "asr", "llm", "tts"} <= set(done["timings_ms"]), done["timings_ms"]
        assert done["timings_ms"]["asr"] == header["asr"]

        with client.stream("POST", CHAT_PATH + "/stream", json={"message": "Bonjour"}, headers=KEY) as response:
            assert response.status_code == 200
            assert "total" in parse(response.headers["server-timing"])
            done = list(events_of(response))[-1]
        assert done["timings_ms"]["llm"] > 0


def test_refused_request_has_only_the_total(server: LeaServer) -> None:
    response = httpx.post(server.url + CHAT_PATH, json={"message": "Bonjour"}, headers={"X-API-Key": "wrong"})
    assert response.status_code == 401
    assert set(parse(response.headers["server-timing"])) == {"total"}
