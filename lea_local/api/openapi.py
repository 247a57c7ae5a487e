"""OpenAPI description of the error responses every route may give."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

from lea_local.api.schemas import ErrorResponse

_DESCRIPTIONS = {
    400: "Bad request: malformed JSON, wrong types, missing or blank message, bad audio",
    401: "Missing or wrong X-API-Key",
    404: "Unknown conversation (or not this session's)",
    413: "Upload or audio too large or too long",
    500: "An engine failed",
    503: "Busy: the queue is full; retry after Retry-After seconds",
    504: "The request took longer than the configured timeout",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorResponse, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in codes
    }
