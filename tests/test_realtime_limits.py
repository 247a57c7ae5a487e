"""/v1/realtime's limits on a server of their own (small ones, `LEA_REALTIME_*`): each gives
its `error` event (and, for the session's length and idle time, close code 1008). A hang-up
stops the answer under way. A session the server cannot serve is refused at the handshake with
503 and Retry-After: one too many, a server still starting, one without speech engines; a
stopping server takes no new connection at all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from lea_local.api.app import create_app
from lea_local.llm.base import ChatReply
from lea_local.pipeline.turns import ChatTurns
from lea_local.runtime.inference_queue import InferenceQueue
from lea_local.services import Services
from lea_local.settings import Settings
from lea_local.store.conversations import ConversationStore
from lea_local.tools.server_process import free_port
from tests.conftest import db_rows
from tests.fixtures.engines import LocalStandInEngine
from tests.realtime_client import (
    ask_text,
    beta_headers,
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
    ws_url,
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


def still_starting(lea: LeaServer) -> bool:
    """The server answers, and says it is not ready yet."""
    try:
        return httpx.get(f"{lea.url}/ready", timeout=5).status_code == 503
    except httpx.HTTPError:
        return False  # not listening yet


def handshake_503(response: Response, reason: str) -> None:
    """A refused session in OpenAI's error shape, saying why, with a Retry-After."""
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    error = json.loads(response.body)["error"]
    assert error["type"] == "server_error" and reason in error["message"], error


@pytest.mark.slow
def test_a_server_still_starting_refuses_a_session_with_503(tmp_path, models_dir):
    """Start-up waits for a remote LLM that never answers (a port nothing listens on): the
    server answers HTTP, not ready, and a realtime handshake gets 503 rather than a session."""
    lea = LeaServer(
        tmp_path / "starting",
        models_dir,
        {"LEA_LLM_URL": f"http://127.0.0.1:{free_port()}/v1", "LEA_REMOTE_WAIT_SECONDS": "600"},
    )
    lea.spawn()
    try:
        wait_for(lambda: still_starting(lea), "listening, not ready", while_possible=lambda: lea.process.poll() is None)
        response = asyncio.run(refused_handshake(lea, headers=beta_headers()))
        assert still_starting(lea)  # it was refused while starting, not once it had given up
    finally:
        lea.stop()
    handshake_503(response, "starting")
    assert not [e for e in lea.log_events() if e.get("event") == "realtime.open"]


def listening(lea: LeaServer) -> bool | None:
    """Whether the server takes a new connection (None: accepted, then dropped as it closed)."""
    try:
        httpx.get(f"{lea.url}/ready", timeout=5)
    except httpx.ConnectError:
        return False
    except httpx.HTTPError:
        return None
    return True


@pytest.mark.slow
def test_a_stopping_server_takes_no_new_session(make_server):
    """SIGTERM while a text turn still runs within its grace period: the server is alive, but its
    listening socket is closed, so a realtime handshake is refused at the connection (nginx moves
    on to another replica) and no session opens. (The route's own 503 for a stopping server is for
    a handshake that still reaches it: tested below, on a server in this process.)"""
    lea = make_server({"LEA_SHUTDOWN_GRACE_SECONDS": "300", "LEA_LLM_TEMPERATURE": "0"})

    async def attempt() -> None:
        async with connect(ws_url(lea), additional_headers=beta_headers()):
            pass

    with ThreadPoolExecutor(1) as pool, lea.client() as client:
        answer = pool.submit(
            lea.chat, client, "Write a very long and detailed guide, in twenty steps, to buying a house."
        )
        wait_for(
            lambda: any(e.get("event") == "llm.prompt" for e in lea.log_events()),
            "the turn generating",
            while_possible=lambda: not answer.done(),
        )
        lea.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: listening(lea) is False,
            "the listening socket closed",
            while_possible=lambda: lea.process.poll() is None,
        )
        with pytest.raises(OSError):
            asyncio.run(attempt())
        draining = lea.process.poll() is None  # refused while stopping, not once stopped
        assert answer.result().status_code == 200  # the turn under way finished in its grace period
    assert draining
    assert lea.process.wait(timeout=120) == -signal.SIGTERM
    assert not [e for e in lea.log_events() if e.get("event") == "realtime.open"]


class StandInEngine(LocalStandInEngine):
    """A chat engine that answers at once: the route is under test, not the models."""

    def count_prompt_tokens(self, messages):
        return 1

    def generate(self, messages, *, max_tokens, **kwargs):
        return ChatReply("ok", 1, 1, "stop")


@contextmanager
def served(app) -> Iterator[SimpleNamespace]:
    """The app on a real uvicorn (a thread of this process) on 127.0.0.1, ready: a refused
    handshake is answered over a real connection, which the ASGI test client cannot do."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn listening", while_possible=thread.is_alive)
        url = f"http://127.0.0.1:{server.config.port}"
        wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, "ready", while_possible=thread.is_alive)
        yield SimpleNamespace(url=url)
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_a_server_without_speech_engines_or_stopping_refuses_a_session_with_503(tmp_path):
    """Engines whose services have no recogniser nor voice (the shipped build always has both;
    another `build` may not): 503, as once the server is stopping (set here by hand: a real
    server's listener is closed by then, above)."""
    settings = Settings(_env_file=None, api_keys=API_KEY, data_dir=tmp_path)
    store = ConversationStore.from_url(settings.effective_database_url)

    def build(_: Settings) -> Services:
        engine = StandInEngine()
        queue = InferenceQueue("language model", max_waiting=4)
        turns = ChatTurns(
            engine=engine, store=store, llm_queue=queue, system_prompt="s", max_reply_tokens=64, temperature=0
        )
        return Services(settings=settings, store=store, chat_engine=engine, llm_queue=queue, turns=turns)

    app = create_app(settings, build=build)
    with served(app) as server:
        no_speech = asyncio.run(refused_handshake(server, headers=beta_headers()))
        app.state.drain.stopping = True
        stopping = asyncio.run(refused_handshake(server, headers=beta_headers()))
    handshake_503(no_speech, "no speech recognition or synthesis")
    handshake_503(stopping, "restarting")
