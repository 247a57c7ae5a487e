"""API key check, as a guard: it runs before the request body is read or parsed.

The key comes in `X-API-Key` (the agent contract) or `Authorization: Bearer <key>` (ImmoAssist's
integration checklist, and OpenAI-style clients)."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

API_KEY_HEADER = "X-API-Key"


BROWSER_KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""A browser's WebSocket cannot send headers: OpenAI's Realtime clients in a page offer the key as
the subprotocol `openai-insecure-api-key.<key>` instead (the console's hands-free mode does)."""


def presented_key(connection: ASGIConnection) -> str | None:
    """The key the caller sent: `X-API-Key` when present, else a Bearer token, else (a websocket
    opened by a page) the key subprotocol."""
    key = connection.headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, token = (connection.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if connection.scope["type"] == "websocket":
        for offered in (connection.headers.get("Sec-WebSocket-Protocol") or "").split(","):
            if offered.strip().startswith(BROWSER_KEY_SUBPROTOCOL):
                return offered.strip().removeprefix(BROWSER_KEY_SUBPROTOCOL) or None
    return None


def key_is_valid(presented: str | None, accepted: list[bytes]) -> bool:
    """Constant-time comparison against every accepted key (rotation): the time taken says
    nothing about which key, or how much of one, matched."""
    if not presented:
        return False
    candidate = presented.encode("utf-8", "surrogateescape")
    matched = False
    for key in accepted:
        matched |= hmac.compare_digest(candidate, key)
    return matched


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """An integration key (AGENT_API_KEY), or an admin key (LEA_ADMIN_API_KEY): an admin may do
    what an integration may, in the console too."""
    state = connection.app.state
    if not key_is_valid(presented_key(connection), state.api_keys + state.admin_keys):
        raise NotAuthorizedException("Invalid or missing API key (X-API-Key or Authorization: Bearer)")


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require_admin_key_to_write(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """The knowledge base's writes (POST, PUT, DELETE: documents and thesaurus, which go into
    every user's prompt) with LEA_ADMIN_API_KEY set: its keys only, an integration key is a 403.
    Unset: the integration keys write, as before. Runs after require_api_key (a 401 first)."""
    admin_keys = connection.app.state.admin_keys
    if not admin_keys or connection.method in READ_METHODS:
        return
    if not key_is_valid(presented_key(connection), admin_keys):
        raise PermissionDeniedException(
            "Writing the knowledge base needs the admin key (LEA_ADMIN_API_KEY); this key may only read it"
        )


def require_api_key_if_configured(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """/metrics and the OpenAPI pages: open, or behind the same key when LEA_METRICS_REQUIRE_KEY."""
    if connection.app.state.settings.metrics_require_key:
        require_api_key(connection, handler)
