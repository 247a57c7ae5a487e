"""Bad input, table-driven: each case gets its 4xx JSON error in the contract's shape, the
server stays up and the database does not change. (Per-endpoint error cases live in
test_chat_errors.py, test_voice_errors.py and test_tts_media.py; these add the rest.)"""

from __future__ import annotations

import socket

import pytest

from tests.conftest import db_rows
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH

KEY = {"X-API-Key": API_KEY}
JSON = {**KEY, "Content-Type": "application/json"}


def multipart(field: str, filename: str, data: bytes, mime: str = "audio/webm") -> tuple[dict, bytes]:
    boundary = "leaboundary7f3a"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {mime}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {**KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"}, body


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)

# (name, method, path, headers, body, expected status)
CASES = [
    ("malformed json", "POST", CHAT_PATH, JSON, b'{"message": ', 400),
    ("zero-byte audio", "POST", VOICE_PATH, *multipart("audio", "rec.webm", b""), 400),
    ("png named .webm", "POST", VOICE_PATH, *multipart("audio", "rec.webm", PNG), 400),
    (
        "pdf under the file field",
        "POST",
        VOICE_PATH,
        *multipart("file", "rec.ogg", b"%PDF-1.7\n" + bytes(100), "audio/ogg"),
        400,
    ),
    ("webm header only", "POST", VOICE_PATH, *multipart("audio", "rec.webm", b"\x1a\x45\xdf\xa3" + bytes(60)), 400),
    ("huge message", "POST", CHAT_PATH, JSON, b'{"message": "' + b"a" * 2_000_000 + b'"}', 413),
    ("lone surrogate escape", "POST", CHAT_PATH, JSON, b'{"message": "\\ud800"}', 400),
    ("invalid utf-8 bytes", "POST", CHAT_PATH, JSON, b'{"message": "\xff\xfe"}', 400),
    ("nul character in session id", "POST", CHAT_PATH, JSON, b'{"message": "Bonjour", "session_id": "a\\u0000b"}', 400),
    ("zero-width message", "POST", CHAT_PATH, JSON, '{"message": "\u200b\u200b"}'.encode(), 400),
    (
        "session id of 129 characters",
        "POST",
        CHAT_PATH,
        JSON,
        b'{"message": "x", "session_id": "' + b"s" * 129 + b'"}',
        400,
    ),
    ("negative conversation id", "POST", CHAT_PATH, JSON, b'{"message": "x", "conversation_id": -1}', 400),
    (
        "conversation id beyond 64 bits",
        "POST",
        CHAT_PATH,
        JSON,
        b'{"message": "x", "conversation_id": 99999999999999999999999}',
        400,
    ),
    ("message as object", "POST", CHAT_PATH, JSON, b'{"message": {"text": "x"}}', 400),
    ("message as list", "POST", CHAT_PATH, JSON, b'{"message": ["x"]}', 400),
    (
        "deeply nested json",
        "POST",
        CHAT_PATH,
        JSON,
        b'{"message": "x", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
    ),
    ("json null body", "POST", CHAT_PATH, JSON, b"null", 400),
    ("text/plain body", "POST", CHAT_PATH, {**KEY, "Content-Type": "text/plain"}, b"Bonjour", 400),
    ("xml body", "POST", CHAT_PATH, {**KEY, "Content-Type": "application/xml"}, b"<message>Bonjour</message>", 400),
    (
        "form body to the json endpoint",
        "POST",
        CHAT_PATH,
        {**KEY, "Content-Type": "application/x-www-form-urlencoded"},
        b"message=Bonjour",
        400,
    ),
    ("multipart without boundary", "POST", VOICE_PATH, {**KEY, "Content-Type": "multipart/form-data"}, b"--x\r\n", 400),
    (
        "multipart with a broken body",
        "POST",
        VOICE_PATH,
        {**KEY, "Content-Type": "multipart/form-data; boundary=zz"},
        b"--zz\r\ngarbage",
        400,
    ),
    (
        "empty api key",
        "POST",
        CHAT_PATH,
        {"X-API-Key": "", "Content-Type": "application/json"},
        b'{"message": "x"}',
        401,
    ),
    (
        "wrong api key",
        "POST",
        CHAT_PATH,
        {"X-API-Key": "nope", "Content-Type": "application/json"},
        b'{"message": "x"}',
        401,
    ),
    (
        "very long api key",
        "POST",
        CHAT_PATH,
        {"X-API-Key": "k" * 8000, "Content-Type": "application/json"},
        b'{"message": "x"}',
        401,
    ),
    (
        "api key with a suffix",
        "POST",
        CHAT_PATH,
        {"X-API-Key": API_KEY + "0", "Content-Type": "application/json"},
        b'{"message": "x"}',
        401,
    ),
    (
        "api key in another header",  # X-API-Key and Authorization: Bearer only
        "POST",
        CHAT_PATH,
        {"X-Api-Token": API_KEY, "Authorization": f"Basic {API_KEY}", "Content-Type": "application/json"},
        b'{"message": "x"}',
        401,
    ),
    ("unknown route", "GET", "/api/external/agent/../../etc/passwd", KEY, b"", 404),
    ("media traversal", "GET", "/media/tts/..%2F..%2Flea.sqlite3", {}, b"", 404),
    ("media listing", "GET", "/media/tts/", {}, b"", 404),
    ("PUT on chat", "PUT", CHAT_PATH, JSON, b'{"message": "x"}', 405),
    ("DELETE on voice", "DELETE", VOICE_PATH, KEY, b"", 405),
]


@pytest.fixture
def unchanged(server):
    before = db_rows(server.data_dir)
    yield
    assert db_rows(server.data_dir) == before
    with server.client() as client:
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(("name", "method", "path", "headers", "body", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, unchanged, name, method, path, headers, body, status):
    with server.client() as client:
        r = client.request(method, path, headers=headers, content=body)
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    payload = r.json()
    assert payload["success"] is False and isinstance(payload["error"], str) and payload["error"]
    assert "Traceback" not in r.text and "<html" not in r.text.lower()


def raw_request(server, head: bytes) -> bytes:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_header_injection_in_request_id_is_not_reflected(server, unchanged):
    response = raw_request(
        server,
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc\rSet-Cookie: evil=1\r\nConnection: close\r\n\r\n",
    )
    assert b"set-cookie" not in response.lower()
    assert b"evil" not in response


def test_request_id_with_crlf_is_replaced(server, unchanged):
    with server.client() as client:
        r = client.get("/health", headers={"X-Request-ID": "ok\tbad value"})
    assert r.headers["x-request-id"] != "ok\tbad value" and len(r.headers["x-request-id"]) == 32


def test_api_key_with_control_characters_in_raw_request(server, unchanged):
    body = b'{"message": "x"}'
    response = raw_request(
        server,
        b"POST " + CHAT_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-API-Key: " + API_KEY.encode() + b"\x01\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body,
    )
    assert response.split(b"\r\n", 1)[0].split()[1] in (b"400", b"401")
