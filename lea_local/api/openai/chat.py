"""POST /v1/chat/completions: OpenAI's chat completions on the local LLM, streamed (server-sent
events) or not. Stateless: the caller sends the whole conversation, nothing is stored. Same LLM
queue, admission, time budget and cancellation as the agent's text turn."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
from litestar.response import Stream

from lea_local.api.deadline import request_deadline
from lea_local.api.openai.errors import OpenAIError, openai_error_body, openai_error_responses
from lea_local.api.openai.models import local_model
from lea_local.api.openai.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ChunkFunction,
    ChunkToolCall,
    FinishReason,
    RequestMessage,
    ResponseFunction,
    ResponseMessage,
    ResponseToolCall,
    Usage,
)
from lea_local.api.streaming import SSE_HEADERS, event_stream_operation, open_stream
from lea_local.llm.base import (
    ChatMessage,
    FeatureRefused,
    JsonOutput,
    PromptRejected,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    ToolUse,
)
from lea_local.llm.grammar import MAX_SCHEMA_CHARS, MAX_TOOLS, SchemaRefused, check_buildable, check_name, check_schema
from lea_local.pipeline.completions import ChatCompletions, Completion, CompletionRequest
from lea_local.pipeline.errors import ContextLengthExceeded, EngineFailure
from lea_local.runtime.inference_queue import InferenceQueue, current_deadline
from lea_local.services import Services
from lea_local.settings import Settings

log = logging.getLogger(__name__)

_MSGSPEC_PATH = re.compile(r"(?s)^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$")
_MISSING_FIELD = re.compile(r"missing required field `(?P<field>[^`]+)`")
# The id given to a legacy `function_call` of the history (its result, a `function` message, has none).
LEGACY_CALL_ID = "call_legacy_"


# The 200 answer is JSON, or server-sent events when the request has `stream: true`.
_ChatCompletionsOperation = event_stream_operation(
    "`data: <chat.completion.chunk>` events, then `data: [DONE]`; "
    'a failure after the first event is sent as `data: {"error": {…}}`',
    also_json=True,
)


@post(
    "/chat/completions",
    status_code=200,
    summary="Chat completion (OpenAI-compatible)",
    description="OpenAI's chat completions on the local model. Any model name is accepted; the answer "
    "names the model that replied. `stream: true` answers with server-sent events. The request has "
    "`LEA_CHAT_TIMEOUT_SECONDS`; one that could not finish in time behind the work already queued is "
    "refused at once with 503 and Retry-After.",
    responses=openai_error_responses(400, 401, 413, 500, 503, 504),
    operation_class=_ChatCompletionsOperation,
)
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], request: Request, services: NamedDependency[Services]
) -> ChatCompletion:
    data = await _strictly(request)  # `data` above gives the OpenAPI schema; this conversion is strict
    settings = services.settings
    wanted = completion_request(data, settings)
    completions = ChatCompletions(
        engine=services.chat_engine, llm_queue=services.llm_queue, log_content=settings.log_content
    )
    answer = _Answer(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=local_model(services, "llm"))
    # Only the LLM: no speech is made for a completion.
    stages = [stage for stage in services.turn_stages("chat") if stage[0] is services.llm_queue]
    timeout = settings.turn_timeout("chat")
    legacy = data.functions is not None
    try:
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return await _streamed(request, completions, wanted, answer, timeout, stages, include_usage, legacy)  # type: ignore[return-value]
        async with request_deadline(request, timeout, stages) as deadline:
            completion = await completions.complete(wanted, cancel=deadline.cancel)
    except ContextLengthExceeded as exc:
        raise OpenAIError(400, str(exc), param="messages", code="context_length_exceeded") from exc
    except PromptRejected as exc:
        raise OpenAIError(400, str(exc), param="messages") from exc
    except FeatureRefused as exc:
        raise OpenAIError(400, str(exc), param=exc.param) from exc
    return ChatCompletion(
        id=answer.id,
        object="chat.completion",
        created=answer.created,
        model=answer.model,
        choices=[Choice(index=0, message=_message(completion, legacy), finish_reason=_finish(completion, legacy))],
        usage=_usage(completion),
    )


def _message(completion: Completion, legacy: bool) -> ResponseMessage:
    calls = completion.tool_calls
    content = completion.text if completion.text or not calls else None
    if legacy:
        function = ResponseFunction(calls[0].name, calls[0].arguments) if calls else None
        return ResponseMessage(role="assistant", content=content, function_call=function)
    return ResponseMessage(
        role="assistant",
        content=content,
        tool_calls=[ResponseToolCall(c.id, "function", ResponseFunction(c.name, c.arguments)) for c in calls] or None,
    )


def _finish(completion: Completion, legacy: bool) -> FinishReason:
    if legacy and completion.finish_reason == "tool_calls":
        return "function_call"
    return completion.finish_reason


@dataclass(frozen=True)
class _Answer:
    """What every chunk of one answer repeats."""

    id: str
    created: int
    model: str


async def _strictly(request: Request) -> ChatCompletionRequest:
    """The body converted without coercion ("12" is not 12), errors naming the field at fault."""
    try:
        return msgspec.convert(await request.json(), ChatCompletionRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise OpenAIError(400, f"Invalid request: {exc}", param=_param_of(str(exc))) from exc


def _param_of(error: str) -> str | None:
    """`messages[0].role` from msgspec's "… - at `$.messages[0].role`"."""
    match = _MSGSPEC_PATH.match(error)
    path = (match.group("path") if match else None) or ""
    missing = _MISSING_FIELD.search(error)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    return path or None


def completion_request(data: ChatCompletionRequest, settings: Settings) -> CompletionRequest:
    """What the engine is asked, or OpenAIError(400) naming the parameter this server cannot honour."""
    if data.n is not None and data.n != 1:
        raise OpenAIError(400, "n: only one choice per request is supported (n=1)", param="n")
    if data.stream_options is not None and not data.stream:
        raise OpenAIError(400, "stream_options is only allowed when stream is true", param="stream_options")
    tools = tool_use(data)
    json_output = _json_output(data)
    if tools is not None and json_output is not None:
        raise OpenAIError(
            400, "response_format json_object/json_schema cannot be combined with tools here", param="response_format"
        )
    stop = [data.stop] if isinstance(data.stop, str) else list(data.stop or [])
    return CompletionRequest(
        messages=chat_messages(data.messages),
        max_tokens=min(
            data.max_completion_tokens or data.max_tokens or settings.llm_max_reply_tokens,
            settings.llm_max_completion_tokens,
        ),
        temperature=settings.llm_temperature if data.temperature is None else data.temperature,
        top_p=data.top_p,
        stop=stop,
        seed=data.seed,
        tools=tools,
        json_output=json_output,
    )


def _schema_refused(exc: SchemaRefused, param: str, what: str) -> OpenAIError:
    where = f" at `{exc.path}`" if exc.path else ""
    return OpenAIError(400, f"{param}: {what}{where} {exc}", param=param)


def tool_use(data: ChatCompletionRequest) -> ToolUse | None:
    """The request's tools and tool_choice (or the legacy functions and function_call); None
    when the model is to call nothing."""
    legacy = data.functions is not None
    if legacy and data.tools is not None:
        raise OpenAIError(400, "functions: give tools or the legacy functions, not both", param="functions")
    raw = data.functions if legacy else data.tools
    field, choice_field = ("functions", "function_call") if legacy else ("tools", "tool_choice")
    choice = data.function_call if legacy else data.tool_choice
    if data.function_call is not None and not legacy:
        raise OpenAIError(400, "function_call needs functions (or use tools and tool_choice)", param="function_call")
    if not raw:
        if choice not in (None, "none", "auto"):
            raise OpenAIError(400, f"{choice_field}: there are no {field} to call", param=choice_field)
        return None
    if len(raw) > MAX_TOOLS:
        raise OpenAIError(400, f"{field}: at most {MAX_TOOLS} are accepted, not {len(raw)}", param=field)
    specs: list[ToolSpec] = []
    total = 0
    for i, tool in enumerate(raw):
        where = f"{field}[{i}]"
        if legacy:
            function = tool
        else:
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise OpenAIError(400, f"{where}.type: only 'function' tools are supported", param=f"{where}.type")
            function = tool.get("function")
            where = f"{where}.function"
        if not isinstance(function, dict):
            raise OpenAIError(400, f"{where}: a function object is required", param=where)
        name = function.get("name")
        why = check_name(name)
        if why is not None:
            raise OpenAIError(400, f"{where}.name {why}", param=f"{where}.name")
        if any(spec.name == name for spec in specs):
            raise OpenAIError(400, f"{where}.name: {name!r} is given twice", param=f"{where}.name")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise OpenAIError(400, f"{where}.description must be a string", param=f"{where}.description")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        try:
            schema = check_schema(parameters)
            check_buildable(schema)
        except SchemaRefused as exc:
            raise _schema_refused(exc, f"{where}.parameters", "the schema") from exc
        total += len(json.dumps(schema, separators=(",", ":")))
        if total > MAX_SCHEMA_CHARS:
            raise OpenAIError(400, f"{field}: the schemas are larger than {MAX_SCHEMA_CHARS} characters", param=field)
        specs.append(ToolSpec(name=name, description=description, parameters=schema))  # type: ignore[arg-type]
    parallel = not legacy and data.parallel_tool_calls is not False
    if choice is None or choice == "auto":
        return ToolUse(tuple(specs), "auto", parallel=parallel)
    if choice == "none":
        return None
    if choice == "required" and not legacy:
        return ToolUse(tuple(specs), "required", parallel=parallel)
    named = choice.get("name") if legacy and isinstance(choice, dict) else None
    if not legacy and isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        named = function.get("name") if isinstance(function, dict) else None
    if not isinstance(named, str):
        expected = "'auto', 'none' or {\"name\": …}" if legacy else "'auto', 'none', 'required' or a named function"
        raise OpenAIError(400, f"{choice_field} must be {expected}", param=choice_field)
    if all(spec.name != named for spec in specs):
        raise OpenAIError(400, f"{choice_field}: {named[:64]!r} is not one of the {field}", param=choice_field)
    return ToolUse(tuple(specs), "named", name=named, parallel=False)


def _json_output(data: ChatCompletionRequest) -> JsonOutput | None:
    fmt = data.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonOutput()
    if fmt.type != "json_schema":
        message = f"response_format.type {fmt.type[:40]!r}: expected 'text', 'json_object' or 'json_schema'"
        raise OpenAIError(400, message, param="response_format.type")
    if fmt.json_schema is None:
        raise OpenAIError(400, "response_format.json_schema is required", param="response_format.json_schema")
    why = check_name(fmt.json_schema.name)
    if why is not None:
        raise OpenAIError(400, f"response_format.json_schema.name {why}", param="response_format.json_schema.name")
    if fmt.json_schema.schema is None:
        return JsonOutput()
    try:
        schema = check_schema(fmt.json_schema.schema)
        check_buildable(schema)
    except SchemaRefused as exc:
        raise _schema_refused(exc, "response_format.json_schema.schema", "the schema") from exc
    return JsonOutput(schema)


def chat_messages(messages: Sequence[RequestMessage]) -> list[ChatMessage]:
    """The conversation, calls and their results included; each `tool` message must answer a
    call of an earlier assistant message."""
    out: list[ChatMessage] = []
    calls: dict[str, str] = {}  # id → name
    for i, message in enumerate(messages):
        chat = _chat_message(i, message, calls)
        for call in chat.tool_calls:
            calls[call.id] = call.name
        out.append(chat)
    return out


def _chat_message(index: int, message: RequestMessage, calls: dict[str, str]) -> ChatMessage:
    where = f"{messages_param(index)}"
    carries_calls = bool(message.tool_calls) or message.function_call is not None
    if message.content is None:
        if not (message.role == "assistant" and carries_calls):
            raise OpenAIError(400, f"{where}.content is required", param=f"{where}.content")
        text = ""
    elif isinstance(message.content, str):
        text = message.content
    else:
        texts = []
        for j, part in enumerate(message.content):
            if part.type != "text":
                refused = f"content of type {part.type[:40]!r} is not supported: the model reads text only"
                raise OpenAIError(400, f"{where}.content[{j}]: {refused}", param=f"{where}.content[{j}].type")
            if part.text is None:
                raise OpenAIError(400, f"{where}.content[{j}].text is required", param=f"{where}.content[{j}].text")
            texts.append(part.text)
        text = "\n".join(texts)
    if carries_calls and message.role != "assistant":
        field = "tool_calls" if message.tool_calls else "function_call"
        raise OpenAIError(400, f"{where}.{field}: only assistant messages carry calls", param=f"{where}.{field}")
    if message.role == "assistant" and carries_calls:
        made = []
        for j, call in enumerate(message.tool_calls or []):
            why = check_name(call.function.name)
            if why is not None:
                param = f"{where}.tool_calls[{j}].function.name"
                raise OpenAIError(400, f"{param} {why}", param=param)
            made.append(ToolCall(call.id, call.function.name, call.function.arguments))
        if message.function_call is not None:  # legacy: one call, answered by the next `function` message
            call = message.function_call
            made.append(ToolCall(f"{LEGACY_CALL_ID}{index}", call.name, call.arguments))
        return ChatMessage("assistant", text, tool_calls=tuple(made))
    if message.role == "tool":
        if message.tool_call_id is None:
            raise OpenAIError(400, f"{where}.tool_call_id is required", param=f"{where}.tool_call_id")
        if message.tool_call_id not in calls:
            raise OpenAIError(
                400,
                f"{where}.tool_call_id {message.tool_call_id[:64]!r} answers no call of an earlier assistant message",
                param=f"{where}.tool_call_id",
            )
        return ChatMessage("tool", text, tool_call_id=message.tool_call_id, name=calls[message.tool_call_id])
    if message.role == "function":  # legacy: the result of the last function_call
        legacy_ids = [call_id for call_id in calls if call_id.startswith(LEGACY_CALL_ID)]
        if not legacy_ids or message.name is None or calls[legacy_ids[-1]] != message.name:
            raise OpenAIError(
                400, f"{where}: a function message must follow the function_call it answers", param=f"{where}.name"
            )
        return ChatMessage("tool", text, tool_call_id=legacy_ids[-1], name=message.name)
    # `developer` is OpenAI's newer name for the system role.
    return ChatMessage("system" if message.role == "developer" else message.role, text)  # type: ignore[arg-type]


def messages_param(index: int) -> str:
    return f"messages[{index}]"


async def _streamed(
    request: Request,
    completions: ChatCompletions,
    wanted: CompletionRequest,
    answer: _Answer,
    timeout: float,
    stages: Sequence[tuple[InferenceQueue, float]],
    include_usage: bool,
    legacy: bool = False,
) -> Stream:
    async def work(emit: Callable[[str | ToolCallDelta | Completion], None]) -> None:
        deadline = current_deadline.get()
        completion = await completions.complete(
            wanted, on_text=emit, on_tool_call=emit, cancel=deadline.cancel if deadline is not None else None
        )
        emit(completion)  # the last item: also what a reply with no text at all sends

    # Raises before anything is sent (503, 400, 504…): an ordinary HTTP error.
    items: AsyncIterator[str | ToolCallDelta | Completion] = await open_stream(request, timeout, stages, work)
    return Stream(
        _events(items, answer, include_usage, legacy),
        headers=SSE_HEADERS,
    )


def _call_delta(item: ToolCallDelta, legacy: bool) -> ChunkDelta:
    """A call's fragment: the first of each call has its id and name (and empty arguments)."""
    function = ChunkFunction(name=item.name, arguments=item.arguments)
    if legacy:
        return ChunkDelta(function_call=function)
    first = item.id is not None
    return ChunkDelta(
        tool_calls=[
            ChunkToolCall(index=item.index, id=item.id, type="function" if first else None, function=function)
        ]
    )


async def _events(
    items: AsyncIterator[str | ToolCallDelta | Completion], answer: _Answer, include_usage: bool, legacy: bool = False
) -> AsyncIterator[bytes]:
    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        return _event(
            ChatCompletionChunk(
                id=answer.id,
                object="chat.completion.chunk",
                created=answer.created,
                model=answer.model,
                choices=choices,
                usage=usage,
            )
        )

    yield chunk([ChunkChoice(index=0, delta=ChunkDelta(role="assistant", content=""))])
    try:
        async for item in items:
            if isinstance(item, str):
                yield chunk([ChunkChoice(index=0, delta=ChunkDelta(content=item))])
            elif isinstance(item, ToolCallDelta):
                if legacy and item.index > 0:
                    continue  # the legacy API has one call
                yield chunk([ChunkChoice(index=0, delta=_call_delta(item, legacy))])
            else:
                yield chunk([ChunkChoice(index=0, delta=ChunkDelta(), finish_reason=_finish(item, legacy))])
                if include_usage:
                    yield chunk([], _usage(item))
    except Exception as exc:  # the stream has begun: the error goes in it, in OpenAI's shape
        yield _event(_stream_error(exc))
        return
    yield b"data: [DONE]\n\n"


def _stream_error(exc: Exception) -> dict:
    if isinstance(exc, HTTPException):  # 504 (time budget spent), 499 (client gone)
        return openai_error_body(exc.status_code, exc.detail)
    if isinstance(exc, EngineFailure):  # already logged with its cause
        return openai_error_body(500, str(exc))
    log.error("a streamed chat completion failed", exc_info=exc)
    return openai_error_body(500, "Internal server error")


def _event(payload: object) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def _usage(completion: Completion) -> Usage:
    return Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
