"""Generated speech: fetched over HTTP from the app's own media route, decoded, timed against
its text; byte ranges, HEAD and ETags as a browser's media element uses them; expiry, traversal
attempts, other formats, text chat with speech, synthesis failure."""

from __future__ import annotations

import io
import shutil
import socket
import time

import httpx
import pytest
import numpy as np
import soundfile as sf

from lea_local.tts.encode import encode_audio
from tests.audio import BROWSER_FORMATS, CLIP, encode
from tests.server import API_KEY, VOICE_PATH, LeaServer
from tests.waiting import wait_for

HEADERS = {"X-API-Key": API_KEY}


def voice_turn(server) -> dict:
    args, mime, name = BROWSER_FORMATS["webm-opus"]
    with server.client() as client:
        r = client.post(VOICE_PATH, files={"audio": (name, encode(CLIP, args), mime)}, headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.json()


def test_audio_url_serves_audio_whose_duration_fits_the_text(server):
    body = voice_turn(server)
    with server.client() as client:
        r = client.get(body["assistant_audio_url"])  # no API key: a browser <audio> fetches it
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/mpeg"
    samples, rate = sf.read(io.BytesIO(r.content))
    seconds = len(samples) / rate
    spoken_chars = len(body["response"])
    # Piper reads about 13-20 characters a second; the bounds leave room for numbers written out.
    assert 0.025 * spoken_chars < seconds < 0.15 * spoken_chars, (seconds, spoken_chars)
    assert np.abs(samples).max() > 0.05  # speech, not silence


def test_traversal_and_listing_attempts_are_404(server):
    body = voice_turn(server)
    name = body["assistant_audio_url"].rsplit("/", 1)[1]
    attempts = [
        "/media/tts/",
        "/media/tts",
        "/media/tts/../lea.sqlite3",
        "/media/tts/..%2Flea.sqlite3",
        "/media/tts/%2e%2e%2flea.sqlite3",
        "/media/tts/..%2F..%2F..%2Fetc%2Fpasswd",
        "/media/tts/%2Fetc%2Fpasswd",
        f"/media/tts/{name[:-4]}.wav",  # right id, wrong extension
        f"/media/tts/{name}%00.mp3",
        f"/media/tts/.{name}.tmp",
        "/media/tts/" + "A" * 32 + ".mp3",  # well-formed, unknown
    ]
    with server.client() as client:
        for path in attempts:
            r = client.get(path)
            assert r.status_code == 404, (path, r.status_code)
            assert r.json()["success"] is False
        assert client.get(f"/media/tts/{name}").status_code == 200


@pytest.mark.slow
def test_expired_audio_is_404_and_swept(make_server):
    lea = make_server({"LEA_TTS_TTL_SECONDS": "2", "LEA_LLM_MAX_REPLY_TOKENS": "24"})
    body = voice_turn(lea)
    name = body["assistant_audio_url"].rsplit("/", 1)[1]
    with lea.client() as client:
        assert client.get(body["assistant_audio_url"]).status_code == 200
        time.sleep(2.5)
        r = client.get(body["assistant_audio_url"])
    assert r.status_code == 404 and r.json()["error"] == "audio not found or expired"
    deadline = time.monotonic() + 10
    while (lea.data_dir / "tts" / name).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (lea.data_dir / "tts" / name).exists(), "the sweeper did not delete the expired file"


@pytest.mark.slow
def test_ogg_format_and_public_base_url(make_server):
    lea = make_server(
        {
            "LEA_TTS_FORMAT": "ogg",
            "LEA_PUBLIC_BASE_URL": "https://lea.agence.example/",
            "LEA_LLM_MAX_REPLY_TOKENS": "24",
        }
    )
    body = voice_turn(lea)
    assert body["assistant_audio_url"].startswith("https://lea.agence.example/media/tts/")
    assert body["assistant_audio_url"].endswith(".ogg")
    path = body["assistant_audio_url"].removeprefix("https://lea.agence.example")
    with lea.client() as client:
        r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/ogg"
    samples, rate = sf.read(io.BytesIO(r.content))
    assert rate == 24000 and len(samples) > rate // 2


@pytest.mark.slow
def test_text_chat_speaks_when_the_setting_asks(make_server):
    lea = make_server({"LEA_TTS_FOR_TEXT_CHAT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "24"})
    with lea.client() as client:
        body = lea.chat(client, "Bonjour").json()
        assert body["assistant_audio_url"].startswith(f"{lea.url}/media/tts/")
        assert client.get(body["assistant_audio_url"]).status_code == 200


@pytest.mark.slow
def test_speech_that_cannot_start_leaves_a_null_audio_url(make_server):
    lea = make_server({"LEA_LLM_MAX_REPLY_TOKENS": "24"})
    # Make the store's directory a file, as a broken disk or a wrong mount would.
    shutil.rmtree(lea.data_dir / "tts")
    (lea.data_dir / "tts").write_bytes(b"")
    body = voice_turn(lea)
    assert body["assistant_audio_url"] is None
    assert body["response"].strip()
    assert "speech skipped" in lea.log_text()


@pytest.mark.slow
def test_speech_that_fails_after_the_answer_gives_an_error_status_not_a_hang(make_server, tmp_path):
    """The answer leaves before speech is done; if synthesis then fails (here: no audio
    encoder on the PATH), the audio URL answers 500 at once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A stall timeout far beyond the client's own: a 500 can only come from the failure being
    # reported, not from waiting it out (a hang would end in the client's timeout instead).
    lea = make_server(
        {
            "LEA_TTS_FOR_TEXT_CHAT": "true",
            "LEA_LLM_MAX_REPLY_TOKENS": "24",
            "LEA_TTS_STREAM_TIMEOUT_SECONDS": "3600",
            "PATH": str(bin_dir),
        }
    )
    with lea.client() as client:
        body = lea.chat(client, "Bonjour").json()
        assert body["response"].strip() and body["assistant_audio_url"]
        r = client.get(body["assistant_audio_url"])
    assert r.status_code == 500 and r.json()["success"] is False
    assert r.json()["error"] == "speech synthesis failed"
    assert "stalled" not in lea.log_text()


def test_encoders_produce_decodable_files():
    """The same ffmpeg encoder the server streams through; files complete and readable."""
    rate = 22050
    t = np.arange(2 * rate) / rate  # libsndfile misreads Ogg Opus streams of a single second
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    for fmt, expected_rate in (("mp3", 22050), ("ogg", 24000), ("wav", 22050)):
        data = encode_audio(tone, rate, fmt)
        samples, decoded_rate = sf.read(io.BytesIO(data))
        assert decoded_rate == expected_rate
        assert abs(len(samples) / decoded_rate - 2.0) < 0.1, fmt


# --- what a browser's media element asks (Safari: Range from the first request) ---------------


def complete_audio(server) -> tuple[str, bytes]:
    """A voice turn's audio URL and its whole file, once synthesis is over."""
    url = voice_turn(server)["assistant_audio_url"]
    with server.client() as client:
        r = client.get(url)  # streams until the job is done and the file stored
    assert r.status_code == 200
    return url, r.content


def test_byte_ranges_answer_206_with_the_exact_bytes(server):
    url, whole = complete_audio(server)
    size = len(whole)
    assert size > 2048
    with server.client() as client:
        for header, start, end in (
            ("bytes=0-1023", 0, 1023),
            ("bytes=500-", 500, size - 1),
            ("bytes=-500", size - 500, size - 1),
            (f"bytes=1000-{size + 5000}", 1000, size - 1),  # past the end: up to the end
        ):
            r = client.get(url, headers={"Range": header})
            assert r.status_code == 206, (header, r.status_code)
            assert r.headers["content-range"] == f"bytes {start}-{end}/{size}", header
            assert r.headers["content-length"] == str(end - start + 1)
            assert r.headers["content-type"] == "audio/mpeg"
            assert r.headers["accept-ranges"] == "bytes"
            assert r.content == whole[start : end + 1], header
        # Several ranges: the whole file (RFC 9110 allows it); an invalid header is ignored.
        for header in ("bytes=0-99,200-299", "bytes=500-100", "lines=0-10"):
            r = client.get(url, headers={"Range": header})
            assert r.status_code == 200 and r.content == whole, header


def test_ranges_a_player_stitches_together_decode_as_the_whole_audio(server):
    url, whole = complete_audio(server)
    size = len(whole)
    half = size // 2
    with server.client() as client:
        first = client.get(url, headers={"Range": f"bytes=0-{half - 1}"})
        second = client.get(url, headers={"Range": f"bytes={half}-"})
    assert first.status_code == second.status_code == 206
    assert first.content + second.content == whole
    samples, rate = sf.read(io.BytesIO(first.content + second.content))
    whole_samples, _ = sf.read(io.BytesIO(whole))
    assert len(samples) == len(whole_samples) and len(samples) / rate > 1
    # The first half alone is playable MP3: the first half of the speech.
    head, _ = sf.read(io.BytesIO(first.content))
    assert 0.3 * len(whole_samples) < len(head) < 0.7 * len(whole_samples)
    assert np.abs(head).max() > 0.05


def test_unsatisfiable_ranges_are_416_with_the_size(server):
    url, whole = complete_audio(server)
    size = len(whole)
    with server.client() as client:
        for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            r = client.get(url, headers={"Range": header})
            assert r.status_code == 416, header
            assert r.headers["content-range"] == f"bytes */{size}"
            assert r.json()["success"] is False


def test_head_gives_the_headers_without_the_body(server):
    url, whole = complete_audio(server)
    with server.client() as client:
        r = client.head(url)
        get = client.get(url)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(whole)) == get.headers["content-length"]
    assert r.headers["content-type"] == "audio/mpeg"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == get.headers["etag"]
    with server.client() as client:
        assert client.head(url.rsplit("/", 1)[0] + "/" + "B" * 32 + ".mp3").status_code == 404


@pytest.mark.slow
def test_etag_and_if_none_match_give_304(server):
    url, whole = complete_audio(server)
    with server.client() as client:
        r = client.get(url)
        etag = r.headers["etag"]
        assert etag.startswith('"') and not etag.startswith("W/")  # strong: ranges may use it
        assert r.headers["content-length"] == str(len(whole))
        assert client.get(url).headers["etag"] == etag  # the same file, the same tag
        not_modified = client.get(url, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200
        # If-Range with another file's tag: the whole of this one, not a piece of it.
        r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'})
        assert r.status_code == 200 and r.content == whole
        r = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert r.status_code == 206 and r.content == whole[:10]
    other_url, _ = complete_audio(server)
    with server.client() as client:
        assert client.get(other_url).headers["etag"] != etag


@pytest.mark.slow
def test_a_range_on_audio_in_progress_waits_for_it_then_answers_206(make_server):
    lea = make_server({"LEA_TTS_FOR_TEXT_CHAT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "160", "LEA_LLM_TEMPERATURE": "0"})
    with lea.client() as client:
        body = lea.chat(client, "Écris une très longue histoire sur une maison à vendre à Lyon.").json()
        name = body["assistant_audio_url"].rsplit("/", 1)[1]
        assert not (lea.data_dir / "tts" / name).exists(), "speech was finished before the JSON left"
        r = client.get(body["assistant_audio_url"], headers={"Range": "bytes=0-1023"})
        stored = (lea.data_dir / "tts" / name).read_bytes()
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 0-1023/{len(stored)}"
        assert r.content == stored[:1024]
        tail = client.get(body["assistant_audio_url"], headers={"Range": "bytes=1024-"})
    samples, rate = sf.read(io.BytesIO(r.content + tail.content))
    assert len(samples) / rate > 3


def test_audio_asked_of_a_replica_still_starting_is_503_not_404(tmp_path, models_dir):
    """The audio may be another replica's (shared directory): a starting one says "retry" (nginx
    then moves the GET on), never "not found". Kept starting by a remote voice that does not answer."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        silent = probe.getsockname()[1]
    lea = LeaServer(
        tmp_path / "starting",
        models_dir,
        {"LEA_TTS_URL": f"http://127.0.0.1:{silent}/v1", "LEA_REMOTE_WAIT_SECONDS": "120"},
    )
    lea.spawn()
    try:
        name = "a" * 32 + ".mp3"
        answers: list[httpx.Response] = []

        def answered() -> bool:
            try:
                answers.append(httpx.get(f"{lea.url}/media/tts/{name}", timeout=5))
            except httpx.TransportError:
                return False
            return True

        # Until the server listens; over if it exits (the wait for the silent voice is 120 s).
        wait_for(answered, "the starting server answered", while_possible=lambda: lea.process.poll() is None)
        r = answers[-1]
        assert httpx.get(f"{lea.url}/ready", timeout=5).status_code == 503  # still starting
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        body = r.json()
        assert body["success"] is False and body["error"] == body["detail"] and "starting" in body["error"]
    finally:
        lea.kill()
