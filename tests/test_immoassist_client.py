"""The server called exactly as ImmoAssist calls it (docs/contract/immoassist-client.md): its
two health paths, its 60 s / 90 s timeouts, the recording always named `recording.webm`
whatever the container, `;codecs=opus` types, `user_email=""`, `detail` shown on errors,
`usage` read into its "Logs IA" panel, Bearer keys, and the browser's Range requests on the
audio URL."""

from __future__ import annotations

import io
import subprocess
import time

import httpx
import pytest
import soundfile as sf

from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer

HEALTH_PATHS = ["/api/external/health", "/api/external/agent/health"]
TEXT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # ImmoAssist's httpx timeouts
VOICE_TIMEOUT = httpx.Timeout(90.0, connect=10.0)


def immoassist(server) -> httpx.Client:
    """ImmoAssist's backend: httpx, no redirects followed."""
    return httpx.Client(base_url=server.url, follow_redirects=False, timeout=TEXT_TIMEOUT)


def assert_detail_error(r: httpx.Response, status: int) -> str:
    """ImmoAssist shows `body["detail"]` to the user on a non-2xx answer."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    assert isinstance(body["detail"], str) and body["detail"].strip()
    assert body["detail"] == body["error"]
    return body["detail"]


@pytest.mark.parametrize("path", HEALTH_PATHS)
def test_health_check_with_the_key_answers_200_with_the_models(server, path):
    with immoassist(server) as client:
        r = client.get(path, headers={"X-API-Key": API_KEY}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["status"] == "ok" and body["ready"] is True
    assert set(body["models"]) == {"llm", "asr", "tts"} and all(body["models"].values())
    assert body["locale"] == "fr-CA"


@pytest.mark.parametrize("path", HEALTH_PATHS)
def test_health_check_refuses_a_missing_or_wrong_key_with_detail(server, path):
    with immoassist(server) as client:
        for headers in ({}, {"X-API-Key": "wrong-key-0123456789"}, {"Authorization": "Bearer wrong-key-0123456789"}):
            detail = assert_detail_error(client.get(path, headers=headers, timeout=10), 401)
            assert "key" in detail.lower()


@pytest.mark.slow
def test_health_check_answers_503_while_models_load_then_200(tmp_path, models_dir):
    lea = LeaServer(tmp_path / "data", models_dir)
    lea.spawn()
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and 200 not in statuses:
            try:
                r = httpx.get(f"{lea.url}{HEALTH_PATHS[0]}", headers={"X-API-Key": API_KEY}, timeout=10)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert r.headers["retry-after"].isdigit()
                assert_detail_error(r, 503)
    finally:
        lea.stop()
    assert statuses[0] == 503 and statuses[-1] == 200
    assert set(statuses) == {503, 200}


def test_bearer_key_is_accepted_wherever_x_api_key_is(server):
    with immoassist(server) as client:
        r = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200, r.text
        r = client.get(HEALTH_PATHS[1], headers={"Authorization": f"bearer {API_KEY}"})
        assert r.status_code == 200, r.text
        webm = encode(CLIP, BROWSER_FORMATS["webm-opus"][0])
        r = client.post(
            VOICE_PATH,
            files={"audio": ("recording.webm", webm, "audio/webm;codecs=opus")},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=VOICE_TIMEOUT,
        )
        assert r.status_code == 200, r.text


def test_wrong_bearer_is_refused_with_detail(server):
    with immoassist(server) as client:
        for value in ("Bearer not-the-key-0123456789", f"Basic {API_KEY}", "Bearer", f"Token {API_KEY}"):
            r = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers={"Authorization": value})
            assert_detail_error(r, 401)


def test_text_turn_as_immoassist_sends_and_reads_it(server):
    with immoassist(server) as client:
        first = client.post(
            CHAT_PATH,
            json={"message": "Bonjour, quels formulaires pour une promesse d'achat ?"},
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
            timeout=TEXT_TIMEOUT,
        )
        assert first.status_code == 200, first.text
        assert '"success":true' in first.text  # its test scripts grep the compact JSON
        body = first.json()
        assert isinstance(body["response"], str) and body["response"].strip()
        assert body["model"] and body["provider"] == "llama-cpp"
        usage = body["usage"]
        assert isinstance(usage, dict)
        assert all(isinstance(usage[k], int) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        # It passes the session back, never a conversation_id.
        second = client.post(
            CHAT_PATH,
            json={"message": "Et la contre-proposition ?", "session_id": body["session_id"]},
            headers={"X-API-Key": API_KEY},
            timeout=TEXT_TIMEOUT,
        )
        assert second.status_code == 200, second.text
        assert second.json()["session_id"] == body["session_id"]
        assert second.json()["conversation_id"] == body["conversation_id"]
        assert second.json()["usage"]["prompt_tokens"] > usage["prompt_tokens"]  # the history was sent


@pytest.mark.slow
@pytest.mark.parametrize("container", list(BROWSER_FORMATS))
def test_voice_blob_named_recording_webm_in_every_container(server, container):
    """Safari's mp4 too is sent as `recording.webm`, typed as the blob was recorded, with
    `user_id` an integer as text and `user_email` empty."""
    args, mime, _ = BROWSER_FORMATS[container]
    with immoassist(server) as client:
        for field, content_type in (("audio", "audio/webm;codecs=opus"), ("file", mime)):
            r = client.post(
                VOICE_PATH,
                files={field: ("recording.webm", encode(CLIP, args), content_type)},
                data={"user_id": "42", "user_email": ""},
                headers={"X-API-Key": API_KEY},
                timeout=VOICE_TIMEOUT,
            )
            assert r.status_code == 200, (field, r.text)
            body = r.json()
            assert body["transcription"].strip() and body["response"].strip()
            assert body["usage"]["completion_tokens"] > 0
            assert body["assistant_audio_url"].startswith("http://127.0.0.1:")


def test_voice_error_carries_the_detail_immoassist_shows(server):
    with immoassist(server) as client:
        r = client.post(
            VOICE_PATH,
            files={"audio": ("recording.webm", b"not audio at all", "audio/webm;codecs=opus")},
            data={"user_id": "42", "user_email": ""},
            headers={"X-API-Key": API_KEY},
            timeout=VOICE_TIMEOUT,
        )
    assert_detail_error(r, 400)


@pytest.mark.browser
def test_audio_url_plays_in_a_browser_that_asks_with_range_requests(server):
    """`new Audio(url)`: absolute URL, no key, audio/mpeg; Safari's media element first asks
    for a small range, then the rest."""
    webm = encode(CLIP, BROWSER_FORMATS["webm-opus"][0])
    with immoassist(server) as client:
        body = client.post(
            VOICE_PATH,
            files={"audio": ("recording.webm", webm, "audio/webm;codecs=opus")},
            headers={"X-API-Key": API_KEY},
            timeout=VOICE_TIMEOUT,
        ).json()
    url = body["assistant_audio_url"]
    with httpx.Client(timeout=60) as browser:  # no key: the URL is the credential
        head = browser.get(url, headers={"Range": "bytes=0-1023"})
        assert head.status_code == 206, head.text
        assert head.headers["content-type"] == "audio/mpeg"
        assert head.headers["accept-ranges"] == "bytes"
        total = int(head.headers["content-range"].rsplit("/", 1)[1])
        assert head.headers["content-range"] == f"bytes 0-1023/{total}" and len(head.content) == 1024
        rest = browser.get(url, headers={"Range": "bytes=1024-"})
        assert rest.status_code == 206
        assert rest.headers["content-range"] == f"bytes 1024-{total - 1}/{total}"
        whole = browser.get(url)
        assert whole.status_code == 200 and int(whole.headers["content-length"]) == total
    assert head.content + rest.content == whole.content
    # What the pieces make is a playable MP3 of the reply.
    wav = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "wav", "pipe:1"],
        input=head.content + rest.content,
        capture_output=True,
        check=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav))
    assert len(samples) / rate > 0.5
