"""A Realtime session's conversation: its items (messages; function calls and their outputs
once tools are served) and how each dialect names them and the events about them."""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from lea_local.llm.base import ChatMessage, ToolCall
from lea_local.pipeline.realtime.config import ConfigError, Dialect

# The GA event names; beta's where they differ.
BETA_EVENT_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}


def event_name(name: str, dialect: Dialect) -> str:
    return BETA_EVENT_NAMES.get(name, name) if dialect == "beta" else name


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class Part:
    """One content part: `input_text`, `input_audio` (its transcript once heard), or Léa's
    `text` / `audio` (its transcript)."""

    kind: Literal["input_text", "input_audio", "text", "audio"]
    text: str | None = None
    audio: str | None = field(default=None, repr=False)
    """A client's `input_audio` part: its base64 audio, until it is transcribed."""

    def render(self, dialect: Dialect) -> dict[str, Any]:
        if self.kind == "input_text":
            return {"type": "input_text", "text": self.text or ""}
        if self.kind == "input_audio":
            return {"type": "input_audio", "transcript": self.text}
        if self.kind == "text":
            return {"type": "output_text" if dialect == "ga" else "text", "text": self.text or ""}
        return {"type": "output_audio" if dialect == "ga" else "audio", "transcript": self.text or ""}


@dataclass
class Item:
    id: str
    type: Literal["message", "function_call", "function_call_output"]
    role: Literal["user", "assistant", "system"] | None = None
    content: list[Part] = field(default_factory=list)
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    spoken: list[tuple[str, float]] = field(default_factory=list, repr=False)
    """Léa's answer: each spoken piece and its audio's length in ms, as sent."""

    def render(self, dialect: Dialect) -> dict[str, Any]:
        shown: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "message":
            shown["role"] = self.role
            shown["content"] = [part.render(dialect) for part in self.content]
        elif self.type == "function_call":
            shown.update(call_id=self.call_id, name=self.name, arguments=self.arguments or "")
        else:
            shown.update(call_id=self.call_id, output=self.output or "")
        return shown

    def text(self) -> str:
        """What the language model reads of it."""
        return " ".join(p.text.strip() for p in self.content if p.text and p.text.strip())

    def chat_message(self) -> ChatMessage | None:
        if self.type == "function_call":
            if self.status != "completed":  # cut off by a cancel: its arguments are not whole
                return None
            call = ToolCall(self.call_id or self.id, self.name or "", self.arguments or "{}")
            return ChatMessage("assistant", "", tool_calls=(call,))
        if self.type == "function_call_output":
            return ChatMessage("tool", self.output or "", tool_call_id=self.call_id)
        if self.type != "message" or not (text := self.text()):
            return None
        return ChatMessage("assistant" if self.role == "assistant" else "user", text)


def item_from_client(value: Any, dialect: Dialect) -> Item:
    """A `conversation.item.create`'s item; ConfigError names what is wrong."""
    if not isinstance(value, dict):
        raise ConfigError("'item' must be an object", "item", "invalid_type")
    item_id = value.get("id") or new_id("item")
    if not isinstance(item_id, str) or not 1 <= len(item_id) <= 64:
        raise ConfigError("'item.id' must be a string of at most 64 characters", "item.id")
    kind = value.get("type", "message")
    if kind == "function_call_output":
        output = value.get("output")
        if not isinstance(output, str) or not isinstance(value.get("call_id"), str):
            raise ConfigError("a function_call_output needs 'call_id' and 'output' strings", "item.output")
        return Item(item_id, "function_call_output", call_id=value["call_id"], output=output)
    if kind != "message":
        raise ConfigError(f"'item.type' {kind!r} is not supported: 'message' or 'function_call_output'", "item.type")
    role = value.get("role")
    if role not in ("user", "assistant", "system"):
        raise ConfigError("'item.role' must be 'user', 'assistant' or 'system'", "item.role")
    content = value.get("content")
    if not isinstance(content, list) or not content:
        raise ConfigError("'item.content' must be a non-empty list", "item.content")
    parts = []
    for index, part in enumerate(content):
        param = f"item.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise ConfigError(f"'{param}.text' must be a string", f"{param}.text")
            parts.append(Part("input_text" if role != "assistant" else "text", part["text"]))
        elif kind == "input_audio" and role == "user":
            audio = part.get("audio")
            if audio is not None and not isinstance(audio, str):
                raise ConfigError(f"'{param}.audio' must be base64 audio", f"{param}.audio")
            parts.append(Part("input_audio", part.get("transcript"), audio=audio))
        else:
            raise ConfigError(f"'{param}.type' {kind!r} is not supported for a {role} message", f"{param}.type")
    return Item(item_id, "message", role=role, content=parts)


def copy_item(item: Item) -> Item:
    return copy.deepcopy(item)
