"""API key check, as a guard: it runs before the request body is read or parsed.

The key comes in `X-API-Key` (the agent contract) or `Authorization: Bearer <key>` (ImmoAssist's
integration checklist, and OpenAI-style clients)."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

API_KEY_HEADER = "X-API-Key"


def presented_key(connection: ASGIConnection) -> str | None:
    """The key the caller sent: `X-API-Key` when present, else a Bearer token."""
    key = connection.headers.get(API_KEY_HEADER)
    if key:
        return key
    scheme, _, token = (connection.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
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
    if not key_is_valid(presented_key(connection), connection.app.state.api_keys):
        raise NotAuthorizedException("Invalid or missing API key (X-API-Key or Authorization: Bearer)")


def require_api_key_if_configured(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """/metrics and the OpenAPI pages: open, or behind the same key when LEA_METRICS_REQUIRE_KEY."""
    if connection.app.state.settings.metrics_require_key:
        require_api_key(connection, handler)
