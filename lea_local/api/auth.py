"""X-API-Key check, as a guard: it runs before the request body is read or parsed."""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

API_KEY_HEADER = "X-API-Key"


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
    if not key_is_valid(connection.headers.get(API_KEY_HEADER), connection.app.state.api_keys):
        raise NotAuthorizedException("Invalid or missing X-API-Key")
