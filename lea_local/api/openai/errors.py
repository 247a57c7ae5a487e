"""Errors in OpenAI's shape, for every route under /v1: `{"error": {"message", "type", "param",
"code"}}`, which the official SDKs turn into their typed exceptions (BadRequestError,
AuthenticationError, RateLimitError…)."""

from __future__ import annotations

import msgspec
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec

OPENAI_PREFIX = "/v1/"

_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("invalid_request_error", "client_closed_request"),
    503: ("server_error", "overloaded"),
    504: ("server_error", "timeout"),
}


class OpenAIError(HTTPException):
    """An error of the /v1 routes that names the parameter at fault and OpenAI's code for it.
    Answered like `lea_local.api.errors.ApiError` (its own status and message), without importing
    that module: it imports this one to shape every /v1 error."""

    def __init__(self, status_code: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.param = param
        self.code = code


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX) or path == OPENAI_PREFIX.rstrip("/")


def openai_error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    kind, default_code = _TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(msgspec.Struct):
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request: a parameter is missing, of the wrong type or out of range (`param` names it)",
    401: "Missing or wrong API key (Authorization: Bearer or X-API-Key)",
    404: "Unknown model",
    413: "Upload or audio too large or too long",
    500: "An engine failed",
    503: "Still loading, or busy: the request could not finish within its time budget; retry after Retry-After",
    504: "The request took longer than its time budget",
}


def openai_error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI description of a /v1 route's errors (OpenAI's shape)."""
    return {
        code: ResponseSpec(data_container=OpenAIErrorResponse, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in codes
    }
