"""The shipped nginx configuration (deploy/nginx/lea-local.conf), run by a real nginx in front of
two stand-in replicas (plain HTTP servers that count what they receive; no models): HSTS on its
https answers, plain http redirected to https, and a request a replica fails moves on to the other
replica only when it is a GET or HEAD: a DELETE or PUT is sent once (a deletion that committed and
then failed, re-sent, would answer 404), answered with lea-local's JSON 503 to retry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.nginx import Nginx

pytestmark = pytest.mark.topology  # starts nginx

HSTS = "max-age=31536000"


class StandIn:
    """A replica that answers 200 to every method, or (`fails`) reads the request and closes the
    connection without a word, as a replica dying mid-request, or cut by a timeout, does."""

    def __init__(self, *, fails: bool) -> None:
        self.received: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one_request(self) -> None:
                self.raw_requestline = self.rfile.readline(65537)
                if not self.raw_requestline or not self.parse_request():
                    self.close_connection = True
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.received.append((self.command, self.path))
                stand_in.bodies.append(body)
                self.close_connection = True
                if fails:
                    return  # no answer: the connection closes
                answer = b'{"success":true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def deployment() -> Iterator[tuple[Nginx, StandIn, StandIn]]:
    failing, healthy = StandIn(fails=True), StandIn(fails=False)
    nginx = Nginx().start([failing.port, healthy.port])
    try:
        yield nginx, failing, healthy
    finally:
        nginx.stop()
        failing.stop()
        healthy.stop()


def send_until_the_failing_replica_took_one(nginx: Nginx, failing: StandIn, method: str) -> list[httpx.Response]:
    """Requests one by one (round robin) until the failing replica has received one; its answer last."""
    answers: list[httpx.Response] = []
    with nginx.client(timeout=30) as client:
        for n in range(6):
            body = {"text": "caucus => réunion"} if method == "PUT" else None
            answers.append(client.request(method, f"/api/knowledge/thing/{n}", json=body))
            if failing.received:
                return answers
    pytest.fail("the failing replica never got a request")


def test_a_get_a_replica_fails_moves_on_to_the_other(deployment):
    nginx, failing, healthy = deployment
    answers = send_until_the_failing_replica_took_one(nginx, failing, "GET")
    assert [r.status_code for r in answers] == [200] * len(answers)
    assert failing.received[0] in healthy.received  # the same GET, moved on
    assert len(failing.received) + len(healthy.received) == len(answers) + 1


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
def test_a_delete_or_put_a_replica_fails_is_not_sent_again(deployment, method):
    nginx, failing, healthy = deployment
    answers = send_until_the_failing_replica_took_one(nginx, failing, method)
    assert failing.received[0] not in healthy.received, "sent again to the other replica"
    assert len(failing.received) + len(healthy.received) == len(answers)  # each sent once
    assert [r.status_code for r in answers[:-1]] == [200] * (len(answers) - 1)
    if method == "PUT":  # the body goes through the detour nginx takes for methods it would retry
        assert all(json.loads(body) == {"text": "caucus => réunion"} for body in healthy.bodies + failing.bodies)
    failed = answers[-1]  # lea-local's shape, to retry: never nginx's HTML page
    assert failed.status_code == 503 and failed.headers["retry-after"] == "5", failed.text
    assert failed.json()["success"] is False
    assert failed.headers["strict-transport-security"] == HSTS


def test_https_answers_carry_hsts(deployment):
    nginx, _, _ = deployment
    with nginx.client(timeout=30) as client:
        for _ in range(2):  # from either replica, whatever it answered
            r = client.get("/api/external/agent/health")
            assert r.headers["strict-transport-security"] == HSTS, r.headers


def test_plain_http_is_redirected_to_https_and_proxies_nothing(deployment):
    nginx, failing, healthy = deployment
    for method in ("GET", "POST", "DELETE"):
        r = httpx.request(
            method, f"http://127.0.0.1:{nginx.http_port}/api/external/agent/chat?x=1", follow_redirects=False
        )
        assert r.status_code == 301, (method, r.status_code)
        assert r.headers["location"] == "https://127.0.0.1/api/external/agent/chat?x=1"
    assert failing.received == [] and healthy.received == []
