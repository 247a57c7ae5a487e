"""Every error leaves as `{"success": false, "error": "<clear message>", "detail": "<same>"}`:
never HTML, never a stack trace. `error` is the contract's field; ImmoAssist's web app shows
`detail` to the user. Under /v1 (the OpenAI-compatible API) the same errors take OpenAI's shape
(`lea_local.api.openai.errors`). Registered once, on the app, so router-level 404/405 are
shaped too."""

from __future__ import annotations

import logging
import re

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from lea_local.asr.base import NoSpeech
from lea_local.asr.decode import AudioRejected
from lea_local.llm.context import PromptTooLong
from lea_local.pipeline.errors import EngineFailure
from lea_local.runtime.inference_queue import QueueFull
from lea_local.runtime.observability import method_label, route_label
from lea_local.store.conversations import ConversationNotFound
from lea_local.store.database import StoreUnavailable

log = logging.getLogger(__name__)


class ApiError(HTTPException):
    """An error the API answers with its own status and message."""


def _is_ours(exc: HTTPException) -> bool:
    """Raised by our routes with a message for the client (not Litestar's own)."""
    from lea_local.api.openai.errors import OpenAIError

    return isinstance(exc, (ApiError, OpenAIError))


def still_starting() -> ApiError:
    return ApiError(status_code=503, detail="Léa is starting: models are loading", headers={"Retry-After": "5"})


def error_response(
    status_code: int,
    message: str,
    headers: dict[str, str] | None = None,
    request: Request | None = None,
    exc: Exception | None = None,
) -> Response:
    """The error in the shape of the API the request went to."""
    # Imported here: lea_local.api.openai loads its routes, and they import this module.
    from lea_local.api.openai.errors import is_openai_path, openai_error_body

    if request is not None and is_openai_path(request.url.path):
        param = _validation_param(exc) if isinstance(exc, ValidationException) else getattr(exc, "param", None)
        content = openai_error_body(status_code, message, param=param, code=getattr(exc, "code", None))
    else:
        content = {"success": False, "error": message, "detail": message}
    return Response(
        content=content,
        status_code=status_code,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _validation_message(exc: ValidationException) -> str:
    details = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for item in details:
        if isinstance(item, dict) and item.get("message"):
            key = item.get("key")
            parts.append(f"{key}: {item['message']}" if key else str(item["message"]))
    if parts:
        return "Invalid request: " + "; ".join(parts)
    return "Invalid request body"


def _validation_param(exc: ValidationException) -> str | None:
    """The body field a validation error is about (OpenAI's `param`): Litestar names it, or
    names the whole body (`data`) when a required field is missing."""
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            # A missing field is named after the object that lacks it ("messages[0]" → "messages[0].role").
            missing = re.search(r"missing required field `([^`]+)`", str(item.get("message", "")))
            if item["key"] != "data":
                return f"{item['key']}.{missing.group(1)}" if missing else item["key"]
            return missing.group(1) if missing else None
    return None


def _http_exception(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        message = _validation_message(exc)
    elif isinstance(exc, NotFoundException) and not _is_ours(exc) and exc.detail in ("Not Found", ""):
        message = f"No such route: {request.method} {request.url.path}"
    elif isinstance(exc, MethodNotAllowedException):
        message = f"Method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code >= 500 and not _is_ours(exc):
        # Litestar's own 500s (ImproperlyConfiguredException…) carry internal details: file paths.
        log.error("internal error on %s %s", method_label(request.method), route_label(request.scope), exc_info=exc)
        message = "Internal server error"
    else:
        message = exc.detail or "Request failed"
    headers = dict(exc.headers or {})
    return error_response(exc.status_code, message, headers or None, request, exc)


def _queue_full(request: Request, exc: QueueFull) -> Response:
    return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)}, request)


def _store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
    return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)}, request)


def _unexpected(request: Request, exc: Exception) -> Response:
    # The route template, not the path: an audio name in /media/tts/<name> is a credential.
    log.error("unhandled error on %s %s", method_label(request.method), route_label(request.scope), exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error", request=request)


_STATUSES: dict[type[Exception], int] = {
    NoSpeech: 400,
    PromptTooLong: 400,
    ConversationNotFound: 404,
    EngineFailure: 500,
    QueueFull: 503,
    StoreUnavailable: 503,
}
"""The status each of the turns' own errors is answered with (their message is the answer's)."""


def status_and_message(exc: Exception) -> tuple[int, str] | None:
    """What a turn's error is answered with, None for an unexpected one (a 500 whose message
    says nothing of it). Streams use it for the errors that come after their first event."""
    if isinstance(exc, HTTPException):
        return exc.status_code, exc.detail
    if isinstance(exc, AudioRejected):
        return exc.status, str(exc)
    for kind, status in _STATUSES.items():
        if isinstance(exc, kind):
            return status, str(exc)
    return None


def _status(code: int):
    def handler(request: Request, exc: Exception) -> Response:
        return error_response(code, str(exc), request=request)

    return handler


def _audio_rejected(request: Request, exc: AudioRejected) -> Response:
    return error_response(exc.status, str(exc), request=request)


def _undecodable_text(request: Request, exc: UnicodeDecodeError) -> Response:
    # Raised while parsing a client's body (e.g. Litestar's multipart parser on a text field
    # holding binary data): the client's fault, not ours.
    return error_response(400, "the request contains text that is not valid UTF-8", request=request)


def _too_deep(request: Request, exc: RecursionError) -> Response:
    return error_response(400, "the request body is nested too deeply", request=request)


exception_handlers = {
    UnicodeDecodeError: _undecodable_text,
    RecursionError: _too_deep,
    HTTPException: _http_exception,
    AudioRejected: _audio_rejected,
    **{kind: _status(status) for kind, status in _STATUSES.items()},
    # With Retry-After:
    QueueFull: _queue_full,
    StoreUnavailable: _store_unavailable,
    Exception: _unexpected,
}
