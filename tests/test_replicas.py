"""Two replicas behind nginx with TLS, as `deploy/` ships them: each replica has its own data
directory and SQLite database, both share one audio directory (LEA_AUDIO_DIR). nginx (round
robin, a certificate signed by the test's own CA) answers the agent endpoints over https, with
https audio URLs; audio synthesised on one replica streams whole from the other, also while it is
still being written; a killed replica's partial file fails a transfer rather than hanging it,
and erasing the session deletes it (audio erased elsewhere while synthesised is never published);
a streamed turn passes nginx event by event."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lea_local.tools.server_process import free_port
from lea_local.tts.audio_store import AudioState, TtsAudioStore
from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.conftest import db_rows
from tests.nginx import Nginx
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer

pytestmark = pytest.mark.topology  # nginx in front of several replicas

HEADERS = {"X-API-Key": API_KEY}
STALL_SECONDS = 8


@dataclass
class Deployment:
    nginx: Nginx
    a: LeaServer
    b: LeaServer
    audio_dir: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Deployment]:
    audio_dir = tmp_path_factory.mktemp("shared-audio")
    env = {
        "LEA_AUDIO_DIR": str(audio_dir),
        "LEA_TTS_FOR_TEXT_CHAT": "true",
        "LEA_LLM_MAX_REPLY_TOKENS": "16",
        "LEA_LLM_PROMPT_CACHE_MB": "64",
        # A killed writer's partial file fails its readers after this long without a sign of life.
        "LEA_TTS_STREAM_TIMEOUT_SECONDS": str(STALL_SECONDS),
    }
    nginx = Nginx()  # its port first: replica A's public base URL names it
    # A names the https origin itself; B builds it from the Host and X-Forwarded-Proto nginx sends.
    a = LeaServer(tmp_path_factory.mktemp("replica-a"), models_dir, {**env, "LEA_PUBLIC_BASE_URL": nginx.url})
    b = LeaServer(tmp_path_factory.mktemp("replica-b"), models_dir, env)
    try:
        a.spawn()
        b.spawn()
        a.wait_until_ready(180)
        b.wait_until_ready(180)
        nginx.start([a.port, b.port])
        yield Deployment(nginx, a, b, audio_dir)
    finally:
        nginx.stop()
        for replica in (a, b):
            resume(replica)
            replica.stop()


def signal_replica(replica: LeaServer, signum: int) -> None:
    """The replica and its children (its ffmpeg encoders): it runs in a session of its own."""
    if replica.process is not None and replica.process.poll() is None:
        os.killpg(replica.process.pid, signum)


def resume(replica: LeaServer) -> None:
    signal_replica(replica, signal.SIGCONT)


def decodes(data: bytes) -> None:
    """ffmpeg reads the whole stream without an error."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", "pipe:0", "-f", "null", "-"],
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr.decode(errors="replace")


def audio_name(body: dict) -> str:
    return body["assistant_audio_url"].rsplit("/", 1)[1]


def stored_audio(deployment: Deployment, name: str) -> bytes:
    """The complete file in the shared directory, once its writer has renamed it."""
    path = deployment.audio_dir / name
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path.read_bytes()


def turn_stopped_mid_synthesis(replica: LeaServer, audio_dir: Path, session_id: str | None = None) -> dict:
    """A text turn on `replica`, which is stopped (SIGSTOP) as soon as its answer arrives, while
    its reply's audio is still a partial file in the shared directory. The caller resumes it."""
    with replica.client() as client:
        for _ in range(5):
            fields = {"session_id": session_id} if session_id else {}
            r = replica.chat(client, "Décris en détail la procédure pour vendre une maison.", **fields)
            signal_replica(replica, signal.SIGSTOP)
            assert r.status_code == 200, r.text
            body = r.json()
            name = audio_name(body)
            if (audio_dir / f"{name}.part").exists() and not (audio_dir / name).exists():
                return body
            resume(replica)  # synthesis was over before the stop: another turn
            session_id = body["session_id"]
    pytest.fail("speech was always complete before the replica could be stopped")


def wait_for_log_events(replica: LeaServer, event: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for e in replica.log_events() if e.get("event") == event) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"{event!r} not logged {count} times by the replica")


def test_agent_endpoints_answer_over_https_through_nginx_with_https_audio_urls(deployment):
    nginx, a, b = deployment.nginx, deployment.a, deployment.b
    before = {replica: len(db_rows(replica.data_dir)["conversations"]) for replica in (a, b)}
    with nginx.client() as client:
        assert client.get("/api/external/health", headers=HEADERS).json()["ready"] is True
        bodies = []
        for _ in range(2):  # round robin: one turn on each replica
            r = client.post(CHAT_PATH, json={"message": "Bonjour, qui êtes-vous ?"}, headers=HEADERS)
            assert r.status_code == 200, r.text
            bodies.append(r.json())
        args, mime, filename = BROWSER_FORMATS["webm-opus"]
        r = client.post(VOICE_PATH, files={"audio": (filename, encode(CLIP, args), mime)}, headers=HEADERS)
        assert r.status_code == 200, r.text
        assert r.json()["transcription"].strip()
        bodies.append(r.json())
        for body in bodies:
            url = body["assistant_audio_url"]
            assert url.startswith(f"{nginx.url}/media/tts/"), url
            audio = client.get(url)  # verified against the test's CA, as a browser would
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
            assert audio.content == stored_audio(deployment, audio_name(body))
            decodes(audio.content)
    after = {replica: len(db_rows(replica.data_dir)["conversations"]) for replica in (a, b)}
    assert after[a] - before[a] >= 1 and after[b] - before[b] >= 1, "nginx did not use both replicas"
    assert sum(after.values()) - sum(before.values()) == 3


def test_audio_being_synthesised_on_one_replica_streams_whole_from_the_other(deployment):
    a, b = deployment.a, deployment.b
    follows_before = sum(1 for e in b.log_events() if e.get("event") == "tts.follow")
    results: dict[str, httpx.Response] = {}

    def fetch(method: str) -> None:
        with b.client() as client:
            results[method] = client.request(method, path)

    body = turn_stopped_mid_synthesis(a, deployment.audio_dir)
    try:
        path = "/media/tts/" + audio_name(body)
        readers = [threading.Thread(target=fetch, args=(method,)) for method in ("GET", "HEAD")]
        for reader in readers:
            reader.start()
        # B follows A's partial file (a stream, and a HEAD that waits for the length) while A
        # cannot possibly have finished it.
        wait_for_log_events(b, "tts.follow", follows_before + 2)
        assert (deployment.audio_dir / f"{audio_name(body)}.part").exists()
    finally:
        resume(a)
    for reader in readers:
        reader.join(timeout=120)
    whole = stored_audio(deployment, audio_name(body))
    assert results["GET"].status_code == 200 and results["GET"].content == whole
    assert results["HEAD"].status_code == 200 and int(results["HEAD"].headers["content-length"]) == len(whole)
    decodes(results["GET"].content)


def test_streamed_turn_passes_nginx_event_by_event(deployment):
    """Each read from the socket is timestamped; with a buffering proxy, every event would come
    in the same read as the final one."""
    reads: list[tuple[float, bytes]] = []
    with deployment.nginx.client() as client:
        with client.stream(
            "POST",
            "/api/external/agent/chat/stream",
            json={"message": "Décris en détail la procédure pour acheter une maison."},
            headers=HEADERS,
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for chunk in r.iter_raw():
                reads.append((time.monotonic(), chunk))
    events: list[tuple[int, str]] = []  # (index of the read it ended in, the event's data line)
    pending = b""
    for index, (_, chunk) in enumerate(reads):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        events += [(index, line.decode()) for line in lines if line.startswith(b"data:")]
    done_read = next(index for index, line in events if '"done"' in line)
    deltas_before_done = [line for index, line in events if '"delta"' in line and index < done_read]
    assert len(deltas_before_done) >= 2, reads
    assert '"done"' in events[-1][1]


def test_audio_erased_on_another_replica_while_synthesised_is_never_published(deployment):
    a, audio_dir = deployment.a, deployment.audio_dir
    discarded_before = sum(1 for e in a.log_events() if e.get("event") == "tts.discarded")
    body = turn_stopped_mid_synthesis(a, audio_dir)
    name = audio_name(body)
    try:
        # What an erasure on another replica does: it shares the directory, not A's job.
        assert TtsAudioStore(audio_dir, ttl_seconds=3600).delete([name]) == 1
    finally:
        resume(a)
    wait_for_log_events(a, "tts.discarded", discarded_before + 1)  # A noticed, and stopped
    with a.client() as client:
        assert client.get(f"/media/tts/{name}").status_code == 404
    assert not [p.name for p in audio_dir.iterdir() if p.name.startswith(name.split(".")[0])]


def test_killed_replica_partial_fails_transfers_nginx_moves_on_and_erasure_deletes_it(deployment):
    nginx, a, b, audio_dir = deployment.nginx, deployment.a, deployment.b, deployment.audio_dir
    body = turn_stopped_mid_synthesis(a, audio_dir)
    name = audio_name(body)
    # SIGKILL mid-synthesis (its encoder too): the partial file stays, and shows no more sign of life.
    signal_replica(a, signal.SIGKILL)
    a.kill()
    assert (audio_dir / f"{name}.part").exists()

    # Another replica never hangs on it: the transfer fails once it stalls (no complete file).
    with b.client() as client:
        try:
            r = client.get(f"/media/tts/{name}")
            assert r.status_code == 500 and "stalled" in r.json()["detail"], r.status_code
        except httpx.RemoteProtocolError:
            pass  # the 200 had started with the bytes A wrote: the transfer is cut off instead

    # nginx sends every turn to the surviving replica (A refuses connections).
    rows_before = len(db_rows(b.data_dir)["conversations"])
    with nginx.client() as client:
        for _ in range(2):
            r = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers=HEADERS)
            assert r.status_code == 200, r.text
    assert len(db_rows(b.data_dir)["conversations"]) == rows_before + 2

    a.start()  # the killed replica comes back and serves
    with a.client() as client:
        erased = client.post(
            "/api/external/agent/erase", json={"session_id": body["session_id"]}, headers=HEADERS
        ).json()
        assert erased["success"] is True and erased["erased"]["audio_files"] >= 1
        assert not [p.name for p in audio_dir.iterdir() if p.name.startswith(name.split(".")[0])]
        assert a.chat(client, "Bonjour").status_code == 200


def test_every_replica_down_gives_a_json_503_with_retry_after():
    """nginx alone, its replicas' ports closed: lea-local's error shape, not nginx's HTML page."""
    nginx = Nginx().start([free_port(), free_port()])
    try:
        with nginx.client() as client:
            r = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers=HEADERS)
    finally:
        nginx.stop()
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["success"] is False and r.json()["detail"]


def test_expiry_and_state_cover_partial_files_and_failure_markers(tmp_path):
    """The store alone (narrow): what the sweep deletes, and what a reader is told."""
    store = TtsAudioStore(tmp_path, ttl_seconds=60)
    stale, failed, live = (store.new_name("mp3") for _ in range(3))
    store.open_partial(stale).finish_writing()  # left behind, as by a killed replica
    marker = store.open_partial(failed)
    marker.fail()
    store.open_partial(live).write(b"ID3")
    assert store.state(live) is AudioState.PARTIAL and store.state(failed) is AudioState.FAILED
    old = time.time() - 120
    for path in (tmp_path / f"{stale}.part", tmp_path / f"{failed}.failed"):
        os.utime(path, (old, old))
    assert store.state(stale) is None  # expired
    assert store.sweep() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{live}.part"]


def test_a_realtime_session_runs_through_nginx_over_wss(deployment):
    """The shipped nginx upgrades /v1/realtime to a websocket over TLS (issue 27, item 11)."""
    import asyncio

    from websockets.asyncio.client import connect

    from tests.realtime_client import events_until, next_event, of_type, send

    async def run() -> tuple[dict, list[dict]]:
        url = deployment.nginx.url.replace("https://", "wss://") + "/v1/realtime?model=lea"
        headers = {"X-API-Key": API_KEY, "OpenAI-Beta": "realtime=v1"}
        async with connect(url, additional_headers=headers, ssl=deployment.nginx.ssl_context(), max_size=None) as ws:
            created = await next_event(ws)
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bonjour, qui es-tu ?"}]}
            await send(ws, {"type": "conversation.item.create", "item": item})
            await events_until(ws, of_type("conversation.item.created"))
            await send(ws, {"type": "response.create", "response": {"modalities": ["text"]}})
            return created, await events_until(ws, of_type("response.done"))

    created, events = asyncio.run(run())
    assert created["type"] == "session.created"
    assert "".join(e["delta"] for e in events if e["type"] == "response.text.delta").strip()
    assert events[-1]["response"]["status"] == "completed"


def test_the_realtime_location_outlasts_a_silent_broker():
    """A quiet session sends no frame for up to LEA_REALTIME_IDLE_SECONDS: nginx must not cut it first."""
    import re

    from lea_local.settings import Settings

    site = (Path(__file__).resolve().parent.parent / "deploy/nginx/lea-local.conf").read_text()
    block = site[site.index("location = /v1/realtime") :]
    block = block[: block.index("}")]
    seconds = {name: int(value) for name, value in re.findall(r"(proxy_(?:read|send)_timeout) (\d+)s;", block)}
    idle = Settings.model_fields["realtime_idle_seconds"].default
    assert seconds["proxy_read_timeout"] > idle and seconds["proxy_send_timeout"] > idle
    assert "proxy_set_header Upgrade $http_upgrade;" in block
