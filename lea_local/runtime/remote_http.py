"""HTTP plumbing the remote engines share (`llm/`, `asr/`, `tts/` `remote_engine.py`): a client for
one engine server, its answers checked, and cancellation that closes the connection at once.

How a failure of the engine server reaches the client:
- unreachable (connection refused, connect timeout) or a refusal with 503/429: `EngineUnavailable`,
  a `QueueFull`, so the request answers 503 with `Retry-After` at once, as when a local queue is
  full (OpenAI's SDKs and ImmoAssist retry it);
- any other failure (another status, a malformed answer, silence past the read timeout, a
  connection cut mid-answer): `RemoteEngineError`, which the turn reports as an engine failure (500).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from lea_local.runtime import startup
from lea_local.runtime.cancellation import GenerationCancelled, on_cancel
from lea_local.runtime.inference_queue import QueueFull
from lea_local.runtime.observability import current_request_id

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
# A server busy with other requests may stay silent this long before its first token or byte;
# the request's own budget (its cancel event) usually ends the wait first.
READ_TIMEOUT_SECONDS = 120.0
DEFAULT_RETRY_AFTER = 5
# How often a request in flight looks at its cancel event.
CANCEL_POLL_SECONDS = 0.05
ERROR_BODY_LIMIT = 2048


class EngineUnavailable(QueueFull):
    """The engine server cannot take the request now: 503 with Retry-After."""

    def __init__(self, engine: str, reason: str, retry_after: int = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(f"the {engine} is unavailable ({reason}); try again in a few seconds", retry_after, engine)


class RemoteEngineError(RuntimeError):
    """The engine server failed the request: the turn fails like an engine failure (500)."""


def server_root(url: str) -> str:
    """The server's root: `http://gpu:8080`, given with or without `/v1` (OpenAI SDKs take the latter)."""
    root = url.strip().rstrip("/")
    return root.removesuffix("/v1")


def loggable_url(url: str) -> str:
    """The URL without any `user:password@` it may carry."""
    try:
        return str(httpx.URL(url).copy_with(userinfo=b""))
    except httpx.InvalidURL:
        return "<invalid URL>"


def make_client(
    url: str, api_key: str | None, *, max_connections: int = 32, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """`transport`: a narrow unit test's fake server; else the network."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(
        base_url=server_root(url),
        transport=transport,
        headers=headers,
        timeout=httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        # Only the configured server: no proxy from the environment.
        trust_env=False,
    )


def _retry_after(response: httpx.Response) -> int:
    try:
        return max(1, min(60, int(response.headers.get("retry-after", DEFAULT_RETRY_AFTER))))
    except ValueError:  # an HTTP date: rare from engine servers
        return DEFAULT_RETRY_AFTER


def _error_message(body: bytes) -> str:
    """The server's own message (OpenAI's `{"error": {"message"}}`, FastAPI's `{"detail"}`…), short."""
    text = body[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail", parsed))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:300]
    return text.strip()[:300]


def check_response(response: httpx.Response, engine: str) -> None:
    """Raises EngineUnavailable (503, 429) or RemoteEngineError (any other non-2xx)."""
    if response.is_success:
        return
    body = response.read() if not response.is_closed else response.content
    if response.status_code in (429, 503):
        raise EngineUnavailable(engine, f"its server answered {response.status_code}", _retry_after(response))
    raise RemoteEngineError(
        f"the {engine} server answered {response.status_code} on {response.request.url.path}: {_error_message(body)}"
    )


def _shut_down(response: httpx.Response) -> Callable[[], None]:
    """What ends a request in flight once its cancel event is set: its connection shut down, so a
    read blocked on it returns at once and the server sees its client leave (llama.cpp's servers
    then stop generating)."""
    stream = response.extensions.get("network_stream")
    sock: socket.socket | None = stream.get_extra_info("socket") if stream is not None else None

    def shut_down() -> None:
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    return shut_down


@contextmanager
def open_response(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    engine: str,
    cancel: threading.Event | None = None,
    **request: Any,
) -> Iterator[httpx.Response]:
    """A checked response whose body is still to be read (streamed). Raises EngineUnavailable,
    RemoteEngineError, or GenerationCancelled once `cancel` is set, also while a read waits."""
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled(f"{engine} request cancelled before it was sent")
    request_id = current_request_id()
    if request_id is not None:  # the engine server (llama-server, another lea-local) logs it too
        request["headers"] = {**(request.get("headers") or {}), "X-Request-ID": request_id}
    try:
        with (
            client.stream(method, path, **request) as response,
            on_cancel(cancel, _shut_down(response), CANCEL_POLL_SECONDS),
        ):
            check_response(response, engine)
            yield response
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # The client learns that the engine is unreachable; only the log says where it was looked for.
        log.warning("the %s server at %s is unreachable: %s", engine, loggable_url(str(client.base_url)), exc)
        raise EngineUnavailable(engine, "its server cannot be reached") from exc
    except httpx.HTTPError as exc:
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"{engine} request cancelled") from exc
        raise RemoteEngineError(f"the {engine} server failed mid-request: {type(exc).__name__}: {exc}") from exc


def request_json(
    client: httpx.Client, method: str, path: str, *, engine: str, cancel: threading.Event | None = None, **request: Any
) -> Any:
    """A JSON answer (see `open_response` for the errors)."""
    with open_response(client, method, path, engine=engine, cancel=cancel, **request) as response:
        body = response.read()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise RemoteEngineError(f"the {engine} server's answer on {path} is not JSON") from exc


def probe_json(client: httpx.Client, method: str, path: str, **request: Any) -> Any | None:
    """The JSON answer of an endpoint only some servers have (llama-server's /props…), or None
    when this server does not answer it with JSON."""
    try:
        response = client.request(method, path, timeout=30.0, **request)
    except httpx.HTTPError:
        return None
    if not response.is_success:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def wait_for_server(client: httpx.Client, path: str, *, engine: str, wait_seconds: float) -> Any:
    """`path`'s JSON once the server answers it. A server still starting (unreachable, or 503
    while it loads its model) is waited for up to `wait_seconds`; then the error is raised."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return request_json(client, "GET", path, engine=engine)
        except EngineUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("waiting for the %s server at %s: %s", engine, loggable_url(str(client.base_url)), exc)
            startup.pause(1.0, f"the {engine} server")  # StartupStopped at once on SIGTERM
