"""Checks of client input that the wire types cannot express, shared by the routes."""

from __future__ import annotations

import unicodedata
from typing import TypeVar

import msgspec
from litestar import Request

from lea_local.api.errors import ApiError

T = TypeVar("T")


async def strictly(request: Request, schema: type[T]) -> T:
    """The JSON body converted without coercion. Litestar's own conversion is lenient ("12"
    becomes 12, 1.0 becomes 1); the contract's types are not, and its client sends real integers."""
    try:
        return msgspec.convert(await request.json(), schema, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(status_code=400, detail=f"Invalid request: {exc}") from exc


def is_blank(text: str) -> bool:
    """Nothing visible: whitespace, control and format characters (zero-width spaces…).
    A Python loop over every character: check a value's length before calling it (24 MB of
    zero-width spaces held the event loop for 0.7 s)."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text)


def clean_message(message: str, max_chars: int) -> str:
    if len(message) > max_chars:  # first: is_blank is linear in the (attacker-sized) text
        raise ApiError(status_code=400, detail=f"message is too long ({len(message)} characters, at most {max_chars})")
    if is_blank(message):
        raise ApiError(status_code=400, detail="message is required and must not be blank")
    return message.strip()


def clean_identifier(value: str | None, name: str, max_length: int = 128) -> str | None:
    """An id or e-mail from the client: blank means absent; control characters are refused
    (these values end up in the database and in log context)."""
    if value is None:
        return None
    if len(value) > max_length:  # before is_blank, which is linear in the value
        raise ApiError(status_code=400, detail=f"{name} is too long (at most {max_length} characters)")
    if is_blank(value):
        return None
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ApiError(status_code=400, detail=f"{name} must not contain control characters")
    return value.strip()


def parse_conversation_id(value: str | None) -> int | None:
    """A conversation id sent as multipart text."""
    if value is not None and len(value) > 64:  # no integer id is longer; spare is_blank a huge field
        raise ApiError(status_code=400, detail="conversation_id must be a positive integer")
    if value is None or is_blank(value) or value.strip().lower() in ("null", "none"):
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) < 2**63:
        raise ApiError(status_code=400, detail="conversation_id must be a positive integer")
    return int(text)
