"""/metrics labels come from a closed set: known methods (else "other"), the matched route's
template (else "unmatched"), status codes. uvicorn's parser takes any token as a method, so a
label per invented method or raw path would be a series kept for ever: memory any caller grows."""

from __future__ import annotations

import re
import secrets
import socket

from lea_local.runtime.observability import UNMATCHED_ROUTE, method_label, route_label
from tests.server import CHAT_PATH

_SERIES = re.compile(r"^(lea_http_[a-z_]+)(\{[^}]*\})? ", re.MULTILINE)


def raw_request(url: str, method: str, path: str) -> bytes:
    """One request on its own socket, byte for byte (httpx would not send every method name)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


def http_series(metrics_text: str) -> set[str]:
    """Every lea_http_* series (name and label set) in a /metrics page."""
    return {name + (labels or "") for name, labels in _SERIES.findall(metrics_text)}


def test_invented_methods_and_random_paths_add_no_series(server):
    with server.client() as client:
        # One of each kind first, so that the fixed labels ("other", "unmatched") exist.
        raw_request(server.url, "WARMUP", "/warm-up")
        client.get("/nothing-here")
        client.get("/media/tts/" + secrets.token_urlsafe(24) + ".mp3")
        client.post(CHAT_PATH, json={"message": "x"})  # no key: 401
        client.get("/metrics")
        before = client.get("/metrics").text

        statuses = set()
        for i in range(50):
            method = f"FOO{i}{secrets.token_hex(4).upper()}"
            path = "/" + secrets.token_urlsafe(12) + "/" + secrets.token_hex(8)
            statuses.add(raw_request(server.url, method, path).split(b" ", 2)[1])
            client.get(path)
            client.get("/media/tts/" + secrets.token_urlsafe(24) + ".mp3")
            client.post(CHAT_PATH, json={"message": "x"})
        statuses.add(raw_request(server.url, "X" * 12_000, "/" + "y" * 1000).split(b" ", 2)[1])
        after = client.get("/metrics").text

    assert statuses == {b"404"}  # the invented methods did reach the app
    assert http_series(after) == http_series(before)
    for invented in ("FOO0", "FOO49", "XXXXXXXX", secrets.token_hex(4)):
        assert invented not in after
    # The counters moved, the page did not grow with the requests (only digits changed).
    assert len(after) - len(before) < 1000, len(after) - len(before)
    assert 'method="other",route="unmatched",status="404"' in after
    assert 'method="GET",route="/media/tts/{name}",status="404"' in after
    assert f'method="POST",route="{CHAT_PATH}",status="401"' in after


def test_method_label_is_a_closed_set():
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert method_label(method) == method
    for method in ("FOO1", "get", "PROPFIND", "X" * 12_000, ""):
        assert method_label(method) == "other"


def test_route_label_is_the_template_never_the_path():
    name = secrets.token_urlsafe(24) + ".mp3"
    assert route_label({"path": f"/media/tts/{name}", "path_template": "/media/tts/{name}"}) == "/media/tts/{name}"
    assert route_label({"path": "/" + "a" * 5000}) == UNMATCHED_ROUTE  # no route matched
