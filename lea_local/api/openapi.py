"""OpenAPI description of the error responses every route may give."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

from lea_local.api.schemas import ErrorResponse

_DESCRIPTIONS = {
    400: "Bad request: malformed JSON, wrong types, missing or blank message, bad audio",
    401: "Missing or wrong API key (X-API-Key or Authorization: Bearer)",
    404: "Unknown conversation (or not this session's)",
    409: "Erasure: a turn of this session or user was still running after the wait; nothing erased, retry",
    413: "Upload or audio too large or too long",
    500: "An engine failed",
    503: "Still loading, or busy: the turn could not finish within its time budget given the work "
    "queued ahead; retry after Retry-After seconds",
    504: "The turn took longer than its time budget",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorResponse, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in codes
    }
