"""Bad recordings and bad forms on the voice endpoint: each gets its status and a JSON error in
the contract's shape, and leaves the database and the audio store as they were."""

from __future__ import annotations

import os

import pytest

from tests.audio import BROWSER_FORMATS, CLIP, encode, silence
from tests.conftest import db_query, db_rows
from tests.server import API_KEY, VOICE_PATH

HEADERS = {"X-API-Key": API_KEY}


def audio_files(server) -> set[str]:
    """The audio store's files, each under its final name (`<name>.part` while being written)."""
    directory = server.data_dir / "tts"
    return {name.removesuffix(".part") for name in os.listdir(directory)} if directory.exists() else set()


def stems(audio_name: str) -> set[str]:
    """The reply audio a file may belong to: `<stem>.mp3` itself, or `<stem>` for a spoken piece
    `<stem>-<n>.mp3`."""
    stem = audio_name.split(".")[0]
    return {stem, stem.rsplit("-", 1)[0]}


@pytest.fixture
def nothing_changes(server):
    rows, files = db_rows(server.data_dir), audio_files(server)
    stored = {name.split(".")[0] for (name,) in db_query(server, "SELECT audio_file FROM messages WHERE audio_file IS NOT NULL")}
    yield
    assert db_rows(server.data_dir) == rows
    # The shared server may still be speaking an earlier test's reply (a voice turn answers
    # before its speech ends): its file can appear or lose its `.part` meanwhile. Any other
    # new file, or a file gone, would be this request's doing.
    after = audio_files(server)
    assert files <= after
    assert {name for name in after - files if not stems(name) & stored} == set()


@pytest.fixture(scope="module")
def webm() -> bytes:
    return encode(CLIP, BROWSER_FORMATS["webm-opus"][0])


def send(server, files=None, data=None, headers=None, **kwargs):
    with server.client() as client:
        return client.post(VOICE_PATH, files=files, data=data, headers=headers or HEADERS, **kwargs)


def assert_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"success", "error", "detail"} and body["success"] is False and body["error"]
    assert body["detail"] == body["error"]  # ImmoAssist shows `detail` to the user
    for word in words:
        assert word.lower() in body["error"].lower(), body["error"]


def test_empty_file_is_400(server, nothing_changes):
    assert_error(send(server, files={"audio": ("rec.webm", b"", "audio/webm")}), 400, "empty")


def test_truncated_webm_is_400(server, nothing_changes, webm):
    assert_error(send(server, files={"audio": ("rec.webm", webm[: len(webm) // 3], "audio/webm")}), 400, "truncated")


def test_truncated_ogg_is_400(server, nothing_changes):
    ogg = encode(CLIP, BROWSER_FORMATS["ogg-opus"][0])
    assert_error(send(server, files={"audio": ("rec.ogg", ogg[: len(ogg) // 2], "audio/ogg")}), 400, "truncated")


def test_truncated_mp4_is_400(server, nothing_changes):
    mp4 = encode(CLIP, BROWSER_FORMATS["mp4-aac"][0])
    assert_error(send(server, files={"audio": ("rec.mp4", mp4[: len(mp4) // 2], "audio/mp4")}), 400, "truncated")


def test_png_named_webm_is_400(server, nothing_changes):
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200)
    assert_error(send(server, files={"audio": ("rec.webm", png, "audio/webm")}), 400, "unsupported")


def test_random_bytes_are_400(server, nothing_changes):
    assert_error(send(server, files={"audio": ("rec.webm", os.urandom(5000), "audio/webm")}), 400)


def test_corrupt_webm_body_is_400(server, nothing_changes, webm):
    corrupt = webm[:200] + os.urandom(len(webm) - 200)
    assert_error(send(server, files={"audio": ("rec.webm", corrupt, "audio/webm")}), 400)


def test_silence_is_400_no_speech(server, nothing_changes):
    assert_error(send(server, files={"audio": ("rec.webm", silence(5), "audio/webm")}), 400, "no speech")


def test_pure_tone_is_400_no_speech(server, nothing_changes):
    """A tone recorded by a browser is refused, not turned into invented words for the LLM."""
    tone = encode("sine=frequency=440:duration=5", BROWSER_FORMATS["webm-opus"][0], input_args=["-f", "lavfi"])
    assert_error(send(server, files={"audio": ("rec.webm", tone, "audio/webm")}), 400, "no speech")


def test_ten_minutes_of_silence_is_413_too_long(server, nothing_changes):
    assert_error(send(server, files={"audio": ("rec.webm", silence(600), "audio/webm")}), 413, "longer than 120")


def test_oversized_upload_is_413(server, nothing_changes):
    big = b"\x1a\x45\xdf\xa3" + os.urandom(26 * 1024 * 1024)
    assert_error(send(server, files={"audio": ("rec.webm", big, "audio/webm")}), 413)


def test_missing_file_field_is_400(server, nothing_changes):
    assert_error(
        send(server, data={"session_id": "abc"}, files={"other": ("x.webm", b"123", "audio/webm")}),
        400,
        "audio or file",
    )


def test_audio_sent_as_text_field_is_400(server, nothing_changes):
    assert_error(send(server, data={"audio": "not a file"}, files={"x": ("x", b"1", "text/plain")}), 400)


def test_non_integer_conversation_id_is_400(server, nothing_changes, webm):
    r = send(server, files={"audio": ("rec.webm", webm, "audio/webm")}, data={"conversation_id": "douze"})
    assert_error(r, 400, "conversation_id")


def test_unknown_conversation_id_is_404(server, nothing_changes, webm):
    r = send(server, files={"audio": ("rec.webm", webm, "audio/webm")}, data={"conversation_id": "99999999"})
    assert_error(r, 404, "conversation")


def test_another_sessions_conversation_is_404(server, webm):
    with server.client() as client:
        a = server.chat(client, "Bonjour").json()
    before = db_rows(server.data_dir)
    r = send(
        server,
        files={"audio": ("rec.webm", webm, "audio/webm")},
        data={"conversation_id": str(a["conversation_id"]), "session_id": "someone-else"},
    )
    assert_error(r, 404)
    assert db_rows(server.data_dir) == before


def test_json_body_is_400(server, nothing_changes):
    with server.client() as client:
        r = client.post(VOICE_PATH, json={"audio": "x"}, headers=HEADERS)
    assert_error(r, 400)


def test_multipart_without_boundary_is_400(server, nothing_changes):
    with server.client() as client:
        r = client.post(VOICE_PATH, content=b"--x\r\n\r\n", headers={**HEADERS, "Content-Type": "multipart/form-data"})
    assert_error(r, 400)


@pytest.mark.slow
def test_missing_api_key_is_401(server, nothing_changes, webm):
    with server.client() as client:
        r = client.post(VOICE_PATH, files={"audio": ("rec.webm", webm, "audio/webm")})
    assert_error(r, 401, "X-API-Key")
