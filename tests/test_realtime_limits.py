"""/v1/realtime's limits on a server of their own (small ones, `LEA_REALTIME_*`): each gives
its `error` event (and, for the session's length and idle time, close code 1008); one session
too many is refused at the handshake with 503. A hang-up stops the answer under way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import db_rows
from tests.realtime_client import (
    ask_text,
    beta_session,
    events_until,
    next_event,
    of_type,
    refused_handshake,
    say_text,
    send,
    silence_pcm,
    start_response,
    stream_audio,
    update_session,
)
from tests.server import API_KEY, LeaServer
from tests.waiting import wait_for

LIMITS = {
    "LEA_REALTIME_MAX_SESSIONS": "2",
    "LEA_REALTIME_IDLE_SECONDS": "2",
    "LEA_REALTIME_MAX_SESSION_SECONDS": "6",
    "LEA_REALTIME_MAX_BUFFER_SECONDS": "1",
    "LEA_REALTIME_MAX_EVENT_BYTES": "8192",
    "LEA_LLM_MAX_REPLY_TOKENS": "200",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory, models_dir):
    lea = LeaServer(tmp_path_factory.mktemp("realtime-limits"), models_dir, LIMITS)
    lea.start()
    yield lea
    lea.stop()


def test_an_event_too_large_is_an_error_and_the_session_goes_on(limited):
    async def run():
        async with beta_session(limited) as (ws, _):
            await send(ws, {"event_id": "big", "type": "session.update", "session": {"instructions": "x" * 10_000}})
            error = await next_event(ws)
            # Counted in bytes: 3,000 characters of 3 bytes each are over 8 KiB.
            await ws.send(
                json.dumps({"type": "session.update", "session": {"instructions": "€" * 3_000}}, ensure_ascii=False)
            )
            error_bytes = await next_event(ws)
            await send(ws, {"type": "session.update", "session": {"instructions": "court"}})
            return error, error_bytes, await next_event(ws)

    error, error_bytes, updated = asyncio.run(run())
    assert error["type"] == "error" and error["error"]["code"] == "event_too_large"
    assert error_bytes["type"] == "error" and error_bytes["error"]["code"] == "event_too_large"
    assert updated["type"] == "session.updated"


def test_audio_beyond_the_buffer_limit_is_refused(limited):
    async def run():
        async with beta_session(limited) as (ws, _):
            await update_session(ws, turn_detection=None)
            await stream_audio(ws, silence_pcm(1.5), chunk_ms=50)  # 1.5 s in all
            await send(ws, {"type": "input_audio_buffer.clear"})
            return await events_until(ws, of_type("input_audio_buffer.cleared"))

    events = asyncio.run(run())
    errors = [e for e in events if e["type"] == "error"]
    assert errors and all(e["error"]["code"] == "input_audio_buffer_too_large" for e in errors)
    assert len(errors) == 10  # the appends past the first second, each refused


def test_an_idle_session_is_closed_with_its_reason(limited):
    async def run():
        async with beta_session(limited) as (ws, _):
            error = await next_event(ws)  # nothing sent: the idle limit ends it
            with pytest.raises(ConnectionClosed) as closed:
                await next_event(ws)
            return error, closed.value

    error, closed = asyncio.run(run())
    assert error["error"]["code"] == "idle_timeout"
    assert closed.rcvd.code == 1008


@pytest.mark.slow
def test_a_session_ends_at_its_length_limit(limited):
    async def run():
        events = []
        async with beta_session(limited) as (ws, _):

            async def keep_busy() -> None:  # never idle
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await send(ws, {"type": "session.update", "session": {}})
                        await asyncio.sleep(0.5)

            busy = asyncio.create_task(keep_busy())
            try:
                while True:
                    events.append(await next_event(ws))
            except ConnectionClosed as closed:
                await busy
                return events, closed

    events, closed = asyncio.run(run())
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "session_expired"
    assert all(e["type"] == "session.updated" for e in events[:-1])
    assert closed.rcvd.code == 1008


@pytest.mark.slow
def test_a_hang_up_stops_the_answer_under_way(limited):
    async def run():
        async with beta_session(limited) as (ws, _):
            await say_text(ws, "Raconte une longue histoire de maison.")
            await start_response(ws)
            await events_until(ws, of_type("response.created"))
        # Gone as she starts (a reply that ends on its own before the hang-up would prove nothing).

    asyncio.run(run())

    def responses() -> list[dict]:
        return [e for e in limited.log_events() if e.get("event") == "realtime.response"]

    # Every response logs how it ended, cancelled or not: the wait ends either way.
    wait_for(
        lambda: bool(responses()), "the answer's end logged", while_possible=lambda: limited.process.poll() is None
    )
    ended = responses()[-1]
    assert ended["status"] == "cancelled" and ended["reason"] == "session_closed"


def test_one_session_too_many_is_refused_at_the_handshake(limited):
    async def run():
        async with beta_session(limited), beta_session(limited):
            return await refused_handshake(limited, headers={"Authorization": f"Bearer {API_KEY}"})

    response = asyncio.run(run())
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert json.loads(response.body)["error"]["type"] == "server_error"


@pytest.mark.slow
def test_a_stopping_server_closes_its_sessions_as_a_restart(make_server):
    """SIGTERM: the sessions end at once with close code 1012 (service restart), which tells a
    client to reconnect (to another replica behind nginx); the turn already answered is stored."""
    lea = make_server()
    session_id = "rt-stopping"

    async def run():
        async with beta_session(lea, query=f"model=x&session_id={session_id}") as (ws, _):
            await ask_text(ws, "Bonjour.", modalities=["text"])
            lea.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await next_event(ws)
            return closed.value

    closed = asyncio.run(run())
    assert closed.rcvd is not None and closed.rcvd.code == 1012
    lea.process.wait(timeout=60)
    assert [row[1] for row in db_rows(lea.data_dir)["conversations"]] == [session_id]
