"""Chat engine on a remote server speaking OpenAI's `/v1/chat/completions` with streaming:
llama.cpp's `llama-server`, vLLM, llama-cpp-python's server, another lea-local, any other.

What is found out about the server at start (`LEA_LLM_URL`):
- the model: `LEA_LLM_MODEL`, else the first one `/v1/models` lists;
- the context window: `LEA_LLM_CONTEXT_SIZE` when set, else the server's (llama-server's `/props`
  `n_ctx`, vLLM's `max_model_len`), else `LEA_LLM_CONTEXT_SIZE`'s default (4096). llama-cpp-python's
  server does not say its `--n_ctx`: set `LEA_LLM_CONTEXT_SIZE` to it;
- how prompts are counted, exactly where the server can tokenise (`TOKEN_COUNTING` below).

Tools and JSON output pass through as OpenAI's `tools`, `tool_choice`, `parallel_tool_calls` and
`response_format`: the server constrains them (llama-server with `--jinja`, vLLM with a tool
parser, another lea-local). A server that refuses them (a 4xx) is the caller's 400
(FeatureRefused), never a reply without the calls or the JSON asked for.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any, Literal

import httpx

from lea_local.llm.base import ChatMessage, ChatReply, FeatureRefused, JsonOutput, ToolCall, ToolCallDelta, ToolUse
from lea_local.llm.context import PromptTooLong
from lea_local.llm.repetition import RepetitionDetector
from lea_local.llm.tool_formats import openai_tools
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.remote_http import (
    RemoteEngineError,
    loggable_url,
    make_client,
    open_response,
    probe_json,
    request_json,
    wait_for_server,
)

log = logging.getLogger(__name__)

ENGINE = "language model"
ServerKind = Literal["llama-cpp-server", "vllm", "llama-cpp-python-server", "lea-local", "openai-compatible"]

TOKEN_COUNTING: dict[ServerKind, str] = {
    "llama-cpp-server": "exact: /apply-template then /tokenize",
    "vllm": "exact: /tokenize with the messages",
    "llama-cpp-python-server": "exact for a system message then alternating user/assistant messages: each "
    "message's text through /extras/tokenize, plus the chat template's tokens per message, measured at start "
    "from the server's own counts",
    "lea-local": "estimate",
    "openai-compatible": "estimate",
}
# Where the server cannot tokenise: a conservative estimate. Tokenisers of instruct models give
# 3 to 4.5 characters per token on French and English prose; 2.5 overestimates, so history is
# trimmed a little early rather than overflowing the context window.
ESTIMATE_CHARS_PER_TOKEN = 2.5
ESTIMATE_TOKENS_PER_MESSAGE = 8
ESTIMATE_TOKENS_PER_PROMPT = 16
# Counts of message texts kept (history repeats from one turn to the next).
TEXT_COUNT_CACHE_SIZE = 4096

# The texts that measure the chat template's own tokens (llama-cpp-python's server).
_CALIBRATION_SYSTEM = "Tu es Léa, une assistante."
_CALIBRATION_TEXTS = ("Bonjour, qui êtes-vous ?", "Je suis Léa.", "Merci, au revoir.")


def display_name(model_id: str) -> str:
    """`SmolLM2-135M-Instruct.Q4_1` for a GGUF path, the id itself for a name like `org/model`."""
    if model_id.endswith(".gguf"):
        return PurePosixPath(model_id).name.removesuffix(".gguf")
    return model_id


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    chars = sum(len(m.content) for m in messages)
    return (
        math.ceil(chars / ESTIMATE_CHARS_PER_TOKEN)
        + ESTIMATE_TOKENS_PER_MESSAGE * len(messages)
        + ESTIMATE_TOKENS_PER_PROMPT
    )


class RemoteChatEngine:
    """`ChatEngine` over HTTP. Thread-safe: each generation is its own request (the server
    schedules them: llama-server's and vLLM's parallel slots, llama-cpp-python's one at a time)."""

    remote = True
    """Computes elsewhere: speech may overlap generation, and the LLM queue needs no local CPU."""
    on_gpu = False
    gpu_layers = None

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        context_size: int | None = None,
        default_context_size: int = 4096,
        repeat_penalty: float = 1.1,
        wait_seconds: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = make_client(url, api_key, transport=transport)
        models = wait_for_server(self._client, "/v1/models", engine=ENGINE, wait_seconds=wait_seconds)
        listed = [entry for entry in models.get("data", []) if isinstance(entry, dict) and "id" in entry]
        if model is None:
            if not listed:
                raise RemoteEngineError(f"the LLM server at {url} lists no model; set LEA_LLM_MODEL")
            model = str(listed[0]["id"])
        self.request_model = model
        self.model_name = display_name(model)
        self.repeat_penalty = repeat_penalty
        self.kind, detected_context = self._detect(listed)
        self.provider = self.kind
        self.context_size = context_size or detected_context or default_context_size
        self._text_counts: OrderedDict[str, int] = OrderedDict()
        self._counts_lock = threading.Lock()
        self._bos_tokens = 0
        self._overheads: dict[str, int] | None = None
        if self.kind == "llama-cpp-python-server":
            self._calibrate_template()
        log.info(
            "remote LLM",
            extra={
                "event": "llm.remote",
                "url": loggable_url(str(self._client.base_url)),
                "server": self.kind,
                "model": model,
                "context": self.context_size,
                "token_counting": "estimate" if self._counting_is_estimate else TOKEN_COUNTING[self.kind],
            },
        )

    # --- the server -------------------------------------------------------------------------
    def _detect(self, listed: list[dict[str, Any]]) -> tuple[ServerKind, int | None]:
        """The kind of server, from the endpoints only it has, and its context window if it says."""
        props = probe_json(self._client, "GET", "/props")
        if isinstance(props, dict) and "default_generation_settings" in props:
            settings = props["default_generation_settings"]
            n_ctx = settings.get("n_ctx") if isinstance(settings, dict) else None
            return "llama-cpp-server", n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None
        if isinstance(probe_json(self._client, "POST", "/extras/tokenize", json={"input": "a"}), dict):
            return "llama-cpp-python-server", None
        vllm = probe_json(self._client, "POST", "/tokenize", json={"model": self.request_model, "prompt": "a"})
        if isinstance(vllm, dict) and "count" in vllm:
            max_len = vllm.get("max_model_len")
            return "vllm", max_len if isinstance(max_len, int) and max_len > 0 else None
        if any(entry.get("owned_by") == "lea-local" for entry in listed):
            return "lea-local", None
        return "openai-compatible", None

    def _calibrate_template(self) -> None:
        """Measures the chat template's tokens per role from the server's own prompt counts
        (three one-token completions), then checks the result on a fourth prompt. A template
        these do not describe (one that rewrites messages) falls back to the estimate."""
        self._bos_tokens = len(self._tokenize(""))
        system, (first, reply, second) = ChatMessage("system", _CALIBRATION_SYSTEM), _CALIBRATION_TEXTS
        one = [system, ChatMessage("user", first)]
        two = [*one, ChatMessage("assistant", reply), ChatMessage("user", second)]
        try:
            with_one = self._server_prompt_tokens(one) - self._texts_tokens(one)
            pair = self._server_prompt_tokens(two) - self._texts_tokens(two) - with_one
        except RemoteEngineError:
            log.warning("the LLM server's chat template could not be measured; prompts are estimated", exc_info=True)
            return
        # Two user messages in a row split the pair between user and assistant; a template that
        # refuses them (roles must alternate) leaves the split even, which only matters then.
        user = pair // 2
        try:
            repeated = [*one, ChatMessage("user", second)]
            user = self._server_prompt_tokens(repeated) - self._texts_tokens(repeated) - with_one
        except RemoteEngineError:
            pass
        self._overheads = {"system": with_one - user, "user": user, "assistant": pair - user}
        check = [
            ChatMessage("system", "Vous êtes un assistant immobilier.\nRépondez en français."),
            ChatMessage("user", "Quel est le prix moyen d'un 4 ½ à Montréal ?"),
            ChatMessage("assistant", "Environ 1 800 $ par mois, selon le quartier."),
            ChatMessage("user", "Et à Québec ?"),
        ]
        counted, expected = self.count_prompt_tokens(check), self._server_prompt_tokens(check)
        if counted != expected:
            log.warning(
                "the LLM server's chat template is not one the per-message count describes (%d counted, %d "
                "by the server); prompts are estimated",
                counted,
                expected,
            )
            self._overheads = None

    def _server_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """The server's own count of a prompt: the usage of a one-token completion."""
        answer = request_json(
            self._client,
            "POST",
            "/v1/chat/completions",
            engine=ENGINE,
            json={"model": self.request_model, "messages": _wire(messages), "max_tokens": 1, "temperature": 0},
        )
        return int(answer["usage"]["prompt_tokens"])

    @property
    def _can_tokenize(self) -> bool:
        return self.kind in ("llama-cpp-server", "vllm", "llama-cpp-python-server")

    @property
    def _counting_is_estimate(self) -> bool:
        return not self._can_tokenize or (self.kind == "llama-cpp-python-server" and self._overheads is None)

    # --- counting ---------------------------------------------------------------------------
    def _tokenize(self, text: str) -> list[int]:
        if self.kind == "llama-cpp-python-server":
            answer = request_json(self._client, "POST", "/extras/tokenize", engine=ENGINE, json={"input": text})
        elif self.kind == "llama-cpp-server":
            answer = request_json(self._client, "POST", "/tokenize", engine=ENGINE, json={"content": text})
        else:  # vLLM
            body = {"model": self.request_model, "prompt": text, "add_special_tokens": False}
            answer = request_json(self._client, "POST", "/tokenize", engine=ENGINE, json=body)
        return list(answer["tokens"])

    def count_text_tokens(self, text: str) -> int:
        """Tokens of a piece of text, without the tokeniser's BOS; cached."""
        if not text:
            return 0
        if not self._can_tokenize:
            return math.ceil(len(text) / ESTIMATE_CHARS_PER_TOKEN)
        with self._counts_lock:
            cached = self._text_counts.get(text)
            if cached is not None:
                self._text_counts.move_to_end(text)
                return cached
        counted = len(self._tokenize(text)) - (self._bos_tokens if self.kind == "llama-cpp-python-server" else 0)
        with self._counts_lock:
            self._text_counts[text] = counted
            if len(self._text_counts) > TEXT_COUNT_CACHE_SIZE:
                self._text_counts.popitem(last=False)
        return counted

    def _texts_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_text_tokens(m.content) for m in messages)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        if self.kind == "llama-cpp-server":
            formatted = request_json(
                self._client, "POST", "/apply-template", engine=ENGINE, json={"messages": _wire(messages)}
            )
            # As llama-server tokenises a chat prompt: special tokens parsed, BOS added.
            answer = request_json(
                self._client,
                "POST",
                "/tokenize",
                engine=ENGINE,
                json={"content": formatted["prompt"], "add_special": True},
            )
            return len(answer["tokens"])
        if self.kind == "vllm":
            body = {"model": self.request_model, "messages": _wire(messages), "add_generation_prompt": True}
            return int(request_json(self._client, "POST", "/tokenize", engine=ENGINE, json=body)["count"])
        if self._overheads is not None:
            overheads = self._overheads
            return sum(self.count_text_tokens(m.content) + overheads.get(m.role, overheads["user"]) for m in messages)
        return estimate_prompt_tokens(messages)

    # --- generation -------------------------------------------------------------------------
    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        tools: ToolUse | None = None,
        json_output: JsonOutput | None = None,
        on_tool_call: Callable[[ToolCallDelta], None] | None = None,
    ) -> ChatReply:
        prompt_tokens = self.count_prompt_tokens(messages)
        if prompt_tokens >= self.context_size:  # not even one token of reply would fit
            raise PromptTooLong(prompt_tokens, self.context_size - 1)
        body: dict[str, Any] = {
            "model": self.request_model,
            "messages": _wire(messages),
            "max_tokens": max(1, min(max_tokens, self.context_size - prompt_tokens)),
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if top_p is not None:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        body.update(_structured(tools, json_output))
        if self.kind in ("llama-cpp-server", "llama-cpp-python-server"):
            body["repeat_penalty"] = self.repeat_penalty
        elif self.kind == "vllm":
            body["repetition_penalty"] = self.repeat_penalty
        repetition = RepetitionDetector()
        finish_reason, usage, pieces = "stop", None, 0
        calls: dict[int, dict[str, str]] = {}  # the server's index → id, name, arguments
        try:
            with open_response(
                self._client, "POST", "/v1/chat/completions", engine=ENGINE, cancel=cancel, json=body
            ) as response:
                for chunk in _events(response):
                    if cancel is not None and cancel.is_set():
                        break
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    choices = chunk.get("choices") or []
                    if not choices:
                        continue
                    choice = choices[0]
                    delta = choice.get("delta") or {}
                    for fragment in delta.get("tool_calls") or []:
                        pieces += 1
                        _call_fragment(fragment, calls, on_tool_call)
                    text = delta.get("content") or ""
                    if text:
                        pieces += 1
                        if repetition.feed(text):
                            # A loop: leaving closes the stream, and the server stops generating it.
                            log.info("llm.loop_stopped", extra={"event": "llm.loop_stopped"})
                            break
                        if on_text is not None:
                            on_text(text)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                # Leaving the block closes the connection: a server still generating stops.
        except RemoteEngineError as exc:
            refused = _REFUSED.search(str(exc))
            if refused is None or (tools is None and json_output is None):
                raise
            param = "tools" if tools is not None else "response_format"
            raise FeatureRefused(
                f"the LLM server at {loggable_url(str(self._client.base_url))} refuses {param} "
                f"(answered {refused.group(1)}): {str(exc)[-300:]}. llama-server needs --jinja, vLLM a tool parser "
                "(--enable-auto-tool-choice --tool-call-parser …)",
                param,
            ) from exc
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("generation cancelled", completion_tokens=pieces)
        if usage and not repetition.fired:
            prompt_tokens, completion_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        elif self._can_tokenize:
            completion_tokens = self.count_text_tokens(repetition.text)
        else:
            completion_tokens = pieces  # servers stream about one token per chunk
        made = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items()))
        return ChatReply(
            text=repetition.kept_text(),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            # Some servers end their calls with "stop".
            finish_reason=(
                "length" if finish_reason == "length" and not repetition.fired else "tool_calls" if made else "stop"
            ),
            tool_calls=made,
        )

    def prompt_cache_stats(self) -> None:
        """The server's prompt cache is its own (not in this process's /metrics)."""
        return None

    def close(self) -> None:
        self._client.close()


_REFUSED = re.compile(r"answered (4\d\d)")


def _wire(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    wired: list[dict[str, Any]] = []
    for m in messages:
        entry: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            entry["content"] = m.content or None
            entry["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        if m.role == "tool":
            entry["tool_call_id"] = m.tool_call_id
        wired.append(entry)
    return wired


def _structured(tools: ToolUse | None, json_output: JsonOutput | None) -> dict[str, Any]:
    """The request's tools and JSON output in OpenAI's fields."""
    body: dict[str, Any] = {}
    if tools is not None:
        body["tools"] = openai_tools(tools.tools)
        if tools.mode == "named":
            body["tool_choice"] = {"type": "function", "function": {"name": tools.name}}
        else:
            body["tool_choice"] = tools.mode
        body["parallel_tool_calls"] = tools.parallel
    if json_output is not None:
        if json_output.schema is None:
            body["response_format"] = {"type": "json_object"}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": dict(json_output.schema), "strict": True},
            }
    return body


def _call_fragment(
    fragment: dict[str, Any], calls: dict[int, dict[str, str]], on_tool_call: Callable[[ToolCallDelta], None] | None
) -> None:
    """One streamed fragment of a call, kept and passed on: the first of each index with its id
    and name (a server that sends the whole call at once gives one fragment)."""
    index = fragment.get("index", len(calls))
    function = fragment.get("function") or {}
    arguments = function.get("arguments") or ""
    if index not in calls:
        call_id = fragment.get("id") or f"call_{index}"
        calls[index] = {"id": call_id, "name": function.get("name") or "", "arguments": arguments}
        delta = ToolCallDelta(len(calls) - 1, call_id, calls[index]["name"], arguments)
    else:
        calls[index]["arguments"] += arguments
        delta = ToolCallDelta(list(calls).index(index), arguments=arguments)
    if on_tool_call is not None:
        on_tool_call(delta)


def _events(response: httpx.Response) -> Any:
    """The JSON payloads of a server-sent event stream, until `[DONE]`. An error event (some
    servers report a failure after the first event that way) raises RemoteEngineError."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event names
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise RemoteEngineError(f"the {ENGINE} server sent a malformed event: {payload[:200]!r}") from exc
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise RemoteEngineError(f"the {ENGINE} server failed mid-reply: {str(message)[:300]}")
        if isinstance(chunk, dict):
            yield chunk
