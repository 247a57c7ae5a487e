"""POST /v1/chat/completions: OpenAI's chat completions on the local LLM, streamed (server-sent
events) or not. Stateless: the caller sends the whole conversation, nothing is stored. Same LLM
queue, admission, time budget and cancellation as the agent's text turn."""

from __future__ import annotations

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
    RequestMessage,
    ResponseMessage,
    Usage,
)
from lea_local.api.streaming import SSE_HEADERS, event_stream_operation, open_stream
from lea_local.llm.base import ChatMessage, PromptRejected
from lea_local.pipeline.completions import ChatCompletions, Completion, CompletionRequest
from lea_local.pipeline.errors import ContextLengthExceeded, EngineFailure
from lea_local.runtime.inference_queue import InferenceQueue, current_deadline
from lea_local.services import Services
from lea_local.settings import Settings

log = logging.getLogger(__name__)

_MSGSPEC_PATH = re.compile(r"(?s)^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$")
_MISSING_FIELD = re.compile(r"missing required field `(?P<field>[^`]+)`")


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
    try:
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            return await _streamed(request, completions, wanted, answer, timeout, stages, include_usage)  # type: ignore[return-value]
        async with request_deadline(request, timeout, stages) as deadline:
            completion = await completions.complete(wanted, cancel=deadline.cancel)
    except ContextLengthExceeded as exc:
        raise OpenAIError(400, str(exc), param="messages", code="context_length_exceeded") from exc
    except PromptRejected as exc:
        raise OpenAIError(400, str(exc), param="messages") from exc
    return ChatCompletion(
        id=answer.id,
        object="chat.completion",
        created=answer.created,
        model=answer.model,
        choices=[
            Choice(
                index=0,
                message=ResponseMessage(role="assistant", content=completion.text),
                finish_reason=completion.finish_reason,
            )
        ],
        usage=_usage(completion),
    )


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
    # Tools and JSON modes are refused rather than ignored: the client would wait for tool calls
    # or parse the reply as JSON, and get prose.
    tool_fields = (
        (data.tools, data.tool_choice, "tools", "tool_choice"),
        (data.functions, data.function_call, "functions", "function_call"),
    )
    for tools, choice, name, choice_name in tool_fields:
        if tools and choice != "none":
            raise OpenAIError(400, f"{name} are not supported: the local model does not call tools", param=name)
        if choice not in (None, "none", "auto"):
            raise OpenAIError(400, f"{choice_name}: the local model does not call tools", param=choice_name)
    if data.response_format is not None and data.response_format.type != "text":
        raise OpenAIError(
            400,
            f"response_format {data.response_format.type[:40]!r} is not supported: only 'text'",
            param="response_format",
        )
    stop = [data.stop] if isinstance(data.stop, str) else list(data.stop or [])
    return CompletionRequest(
        messages=[_chat_message(i, message) for i, message in enumerate(data.messages)],
        max_tokens=min(
            data.max_completion_tokens or data.max_tokens or settings.llm_max_reply_tokens,
            settings.llm_max_completion_tokens,
        ),
        temperature=settings.llm_temperature if data.temperature is None else data.temperature,
        top_p=data.top_p,
        stop=stop,
        seed=data.seed,
    )


def _chat_message(index: int, message: RequestMessage) -> ChatMessage:
    where = f"messages[{index}]"
    if message.role in ("tool", "function"):
        message_text = f"{where}: role '{message.role}' is not supported: the local model does not call tools"
        raise OpenAIError(400, message_text, param=f"{where}.role")
    if message.tool_calls:
        raise OpenAIError(400, f"{where}: tool calls are not supported", param=f"{where}.tool_calls")
    if isinstance(message.content, str):
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
    # `developer` is OpenAI's newer name for the system role.
    return ChatMessage("system" if message.role == "developer" else message.role, text)


async def _streamed(
    request: Request,
    completions: ChatCompletions,
    wanted: CompletionRequest,
    answer: _Answer,
    timeout: float,
    stages: Sequence[tuple[InferenceQueue, float]],
    include_usage: bool,
) -> Stream:
    async def work(emit: Callable[[str | Completion], None]) -> None:
        deadline = current_deadline.get()
        completion = await completions.complete(
            wanted, on_text=emit, cancel=deadline.cancel if deadline is not None else None
        )
        emit(completion)  # the last item: also what a reply with no text at all sends

    # Raises before anything is sent (503, 400, 504…): an ordinary HTTP error.
    items: AsyncIterator[str | Completion] = await open_stream(request, timeout, stages, work)
    return Stream(
        _events(items, answer, include_usage),
        headers=SSE_HEADERS,
    )


async def _events(items: AsyncIterator[str | Completion], answer: _Answer, include_usage: bool) -> AsyncIterator[bytes]:
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
            else:
                yield chunk([ChunkChoice(index=0, delta=ChunkDelta(), finish_reason=item.finish_reason)])
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
