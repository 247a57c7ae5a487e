"""How each model family sees tools and writes its calls, read from its GGUF chat template.

- `mistral` (Mistral-Nemo…), found by `[TOOL_CALLS]`: tools shown by the template
  (`[AVAILABLE_TOOLS]`); a call is `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`;
- `hermes` (Qwen 2.5…), found by `<tool_call>`: tools shown by the template (`<tools>` in the
  system turn); a call is `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`;
- `llama3` (Llama 3.1–3.3), found by `<|python_tag|>` or `"parameters"` with `ipython`: tools
  shown by the template (in the first user turn); a call is `{"name": …, "parameters": {…}}`;
- `generic` (SmolLM2, any template without tools): a system instruction written here shows the
  tools; calls are written as `hermes` ones.

Each family has a `trigger` (what starts a call in free text), a `prefill` (what is put in the
prompt before a constrained call: its opener, possibly a control token the grammar could not
emit) and the grammar of what follows the prefill (`body_rule`). `CallScanner` reads that
body as it is generated, and gives each call's name as soon as it is known and its arguments
piece by piece."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lea_local.llm.base import ChatMessage, ToolSpec
from lea_local.llm.grammar import GrammarBuilder, call_object_rules

Family = Literal["mistral", "hermes", "llama3", "generic"]


@dataclass(frozen=True)
class ToolFormat:
    family: Family
    trigger: str
    """Text that starts a call when the model writes freely."""
    prefill: str
    """Put after the generation prompt (and any text before the call) when a call is constrained."""
    arguments_key: str = "arguments"
    trigger_at_start_only: bool = False
    """The trigger only counts as the reply's first non-blank text (llama3's bare JSON)."""
    start_triggers: tuple[str, ...] = ()
    """Other openers that start a call when the reply begins with them: how models of the family
    also write calls (Qwen's bare or fenced JSON, with the doubled braces its template shows).
    The call is then constrained in the family's own syntax from there."""
    template_knows_tools: bool = True
    parallel_calls: bool = True

    def body_rule(self, builder: GrammarBuilder, tools: Sequence[ToolSpec], parallel: bool) -> str:
        """The grammar's root rule: what follows the prefill, one call (or several when
        `parallel` and the family writes several)."""
        call = call_object_rules(builder, [(t.name, t.parameters) for t in tools], self.arguments_key)
        several = parallel and self.parallel_calls
        if self.family == "mistral":
            return f'"[" {call} ("," " "? {call})* "]"' if several else f'"[" {call} "]"'
        if self.family == "llama3":
            return call
        close = builder.literal("\n</tool_call>")
        again = builder.literal("\n<tool_call>\n")
        return f"{call} {close} ({again} {call} {close})*" if several else f"{call} {close}"

    def call_id(self, call_id: str) -> str:
        """The id as the template wants it: Mistral's are 9 letters or digits."""
        if self.family != "mistral" or re.fullmatch(r"[a-zA-Z0-9]{9}", call_id):
            return call_id
        digest = hashlib.sha256(call_id.encode("utf-8")).hexdigest()
        return digest[:9]


FORMATS: dict[Family, ToolFormat] = {
    "mistral": ToolFormat("mistral", trigger="[TOOL_CALLS]", prefill="[TOOL_CALLS]", start_triggers=('[{"',)),
    "hermes": ToolFormat(
        "hermes", trigger="<tool_call>", prefill="<tool_call>\n", start_triggers=('{"', '{{"', "```json", "```\n{")
    ),
    "llama3": ToolFormat(
        "llama3", trigger="{", prefill="", arguments_key="parameters", trigger_at_start_only=True, parallel_calls=False
    ),
    "generic": ToolFormat(
        "generic",
        trigger="<tool_call>",
        prefill="<tool_call>\n",
        template_knows_tools=False,
        start_triggers=('{"', "```json"),
    ),
}


def format_of(template: str) -> ToolFormat:
    """The family a chat template was trained on, from what it writes."""
    if "[TOOL_CALLS]" in template:
        return FORMATS["mistral"]
    if "<tool_call>" in template and "tools" in template:
        return FORMATS["hermes"]
    if "<|python_tag|>" in template or ('"parameters"' in template and "ipython" in template):
        return FORMATS["llama3"]
    return FORMATS["generic"]


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The tools as chat templates read them (OpenAI's form)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
        }
        for t in tools
    ]


def generic_instruction(tools: Sequence[ToolSpec]) -> str:
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in openai_tools(tools))
    return (
        "You can call functions. Their signatures:\n<tools>\n"
        f"{listed}\n</tools>\n"
        "To call one, answer with only this, one per call:\n"
        '<tool_call>\n{"name": <function name>, "arguments": <JSON object of its arguments>}\n</tool_call>'
    )


def _arguments_value(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def template_messages(
    messages: Sequence[ChatMessage], fmt: ToolFormat, tools: Sequence[ToolSpec] | None
) -> list[dict[str, Any]]:
    """The messages as the family's template reads them: assistant calls and tool results in
    its own fields, or (generic) written out as text, with the tools' instruction in the system
    message."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if not fmt.template_knows_tools:
            if m.role == "tool":
                out.append({"role": "user", "content": f"<tool_response>\n{m.content}\n</tool_response>"})
                continue
            if m.tool_calls:
                calls = "\n".join(
                    "<tool_call>\n"
                    + json.dumps({"name": c.name, "arguments": _arguments_value(c.arguments)}, ensure_ascii=False)
                    + "\n</tool_call>"
                    for c in m.tool_calls
                )
                out.append({"role": "assistant", "content": f"{m.content}\n{calls}" if m.content else calls})
                continue
            out.append({"role": m.role, "content": m.content})
            continue
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": fmt.call_id(c.id),
                    "type": "function",
                    "function": {"name": c.name, "arguments": _arguments_value(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_call_id"] = fmt.call_id(m.tool_call_id or "")
            if m.name:
                entry["name"] = m.name
        out.append(entry)
    if tools and not fmt.template_knows_tools:
        instruction = generic_instruction(tools)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{instruction}"}
        else:
            out.insert(0, {"role": "system", "content": instruction})
    return out


@dataclass(frozen=True)
class CallEvent:
    index: int
    name: str | None = None
    """Set on a call's first event."""
    arguments: str = ""


_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


class CallScanner:
    """Reads a constrained call body (what follows the prefill) as it is generated: each call's
    name as soon as its arguments begin, then its arguments' text piece by piece, exactly as
    generated (joined: the call's `arguments`)."""

    def __init__(self, fmt: ToolFormat) -> None:
        self._call_depth = 2 if fmt.family == "mistral" else 1
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._head: list[str] | None = None  # the current call's text before its arguments
        self._arguments: list[str] | None = None
        self._args_done = False
        self._index = -1
        self.calls: list[tuple[str, str]] = []
        """Complete calls: name, arguments text."""
        self._name = ""

    def feed(self, text: str) -> list[CallEvent]:
        events: list[CallEvent] = []
        piece: list[str] = []
        for char in text:
            if self._in_string:
                if self._arguments is not None and not self._args_done:
                    piece.append(char)
                elif self._head is not None:
                    self._head.append(char)
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
                continue
            if char == '"':
                self._in_string = True
            opening = char in "{["
            closing = char in "}]"
            if opening:
                self._depth += 1
                if self._depth == self._call_depth and char == "{":
                    self._head, self._arguments, self._args_done = [], None, False
                elif self._depth == self._call_depth + 1 and self._head is not None and self._arguments is None:
                    match = _NAME.search("".join(self._head))
                    self._name = json.loads(f'"{match.group(1)}"') if match else ""
                    self._index += 1
                    self._arguments = []
                    events.append(CallEvent(self._index, name=self._name))
            in_arguments = self._arguments is not None and not self._args_done
            if in_arguments:
                piece.append(char)
            elif self._head is not None and self._arguments is None:
                self._head.append(char)
            if closing:
                self._depth -= 1
                if in_arguments and self._depth == self._call_depth:
                    self._args_done = True
                    self._flush(piece, events)
                elif self._depth == self._call_depth - 1 and self._arguments is not None:
                    self.calls.append((self._name, "".join(self._arguments)))
                    self._head, self._arguments = None, None
        self._flush(piece, events)
        return events

    def _flush(self, piece: list[str], events: list[CallEvent]) -> None:
        if piece and self._arguments is not None:
            text = "".join(piece)
            self._arguments.append(text)
            events.append(CallEvent(self._index, arguments=text))
            piece.clear()


def parse_calls(body: str, fmt: ToolFormat) -> list[tuple[str, str]]:
    """The complete calls in a body: name, arguments text."""
    scanner = CallScanner(fmt)
    scanner.feed(body)
    return scanner.calls


def tool_names(tools: Sequence[ToolSpec]) -> Mapping[str, ToolSpec]:
    return {t.name: t for t in tools}


class TriggerWatch:
    """The free phase of `tool_choice: "auto"`: passes the text on, except what may be the
    beginning of a call opener (held until it is known not to be), and ends the phase once the
    opener is written (`feed` returns True). A control-token opener is reported by `feed("")`."""

    def __init__(self, fmt: ToolFormat, on_text: Callable[[str], None] | None) -> None:
        self._fmt = fmt
        self._on_text = on_text
        self._held = ""
        self._sent: list[str] = []
        self._watching = True
        self.triggered = False

    def _send(self, text: str) -> None:
        if text:
            self._sent.append(text)
            if self._on_text is not None:
                self._on_text(text)

    def feed(self, piece: str) -> bool:
        if self.triggered:
            return True
        if not piece:  # a control-token opener
            self.triggered = True
            self._held = ""
            return True
        if not self._watching:
            self._send(piece)
            return False
        text = self._held + piece
        fmt = self._fmt
        starts = (fmt.trigger,) if fmt.trigger_at_start_only else fmt.start_triggers
        if not self._sent and starts:
            stripped = text.lstrip()
            if not stripped:  # blanks before a call are not content
                self._held = text
                return False
            if any(stripped.startswith(start) for start in starts):
                self.triggered, self._held = True, ""
                return True
            if any(start.startswith(stripped) for start in starts):
                self._held = text  # may still become an opener
                return False
            if fmt.trigger_at_start_only:
                self._watching, self._held = False, ""
                self._send(text)
                return False
        trigger = fmt.trigger
        at = text.find(trigger)
        if at >= 0:
            before = text[:at]
            self._send(before if self._sent or before.strip() else "")  # blanks before a call are not content
            self.triggered, self._held = True, ""
            return True
        keep = 0
        for size in range(min(len(trigger) - 1, len(text)), 0, -1):
            if trigger.startswith(text[-size:]):
                keep = size
                break
        self._send(text[: len(text) - keep])
        self._held = text[len(text) - keep :]
        return False

    def finish(self) -> str:
        """The free text (what was sent); held text that was not an opener is sent now."""
        if not self.triggered and self._held:
            self._send(self._held)
            self._held = ""
        return "".join(self._sent)
