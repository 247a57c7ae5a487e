"""POST /v1/chat/completions and GET /v1/models through the official `openai` SDK (sync and
async), as ImmoAssist's integrated mode calls them, against the real server and model."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import httpx
import openai
import pytest
from litestar.testing import TestClient

from lea_local.api.app import create_app
from lea_local.llm.base import ChatReply
from lea_local.pipeline.completions import MAX_CHARS_PER_TOKEN
from lea_local.pipeline.turns import ChatTurns
from lea_local.runtime.inference_queue import InferenceQueue
from lea_local.services import Services
from lea_local.settings import Settings
from lea_local.store.conversations import ConversationStore
from tests.conftest import db_rows
from tests.fixtures.engines import LocalStandInEngine
from tests.server import API_KEY, LeaServer

PATH = "/v1/chat/completions"
# Short replies: the tiny model on a shared 2-core machine writes a few tokens a second.
HELLO = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Say hello."}]
GREEDY = {"temperature": 0, "seed": 11, "max_tokens": 16}


def sync_client(server: LeaServer, api_key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=120)


def async_client(server: LeaServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def local_llm(server: LeaServer) -> str:
    return httpx.get(server.url + "/ready", timeout=10).json()["models"]["llm"]


def events_named(server: LeaServer, event: str, request_id: str | None = None) -> list[dict]:
    return [
        e
        for e in server.log_events()
        if e.get("event") == event and (request_id is None or e.get("request_id") == request_id)
    ]


def test_model_list_has_the_local_llm_and_openai_names(server):
    client = sync_client(server)
    llm = local_llm(server)
    ids = {model.id for model in client.models.list()}
    assert {llm, "gpt-4o-mini", "gpt-4o", "whisper-1", "tts-1-hd"} <= ids
    assert client.models.retrieve("gpt-4o-mini").root == llm  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def tokens_generated(server: LeaServer) -> float:
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    return float(re.search(r"^lea_llm_tokens_generated_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]


def test_completion_names_the_local_model_and_its_usage_adds_up(server):
    stored, generated = db_rows(server.data_dir), tokens_generated(server)
    completion = sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=HELLO, **GREEDY)
    assert db_rows(server.data_dir) == stored  # stateless: the caller keeps the conversation
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == local_llm(server)
    [choice] = completion.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert tokens_generated(server) == generated + usage.completion_tokens


def test_reply_cut_by_max_tokens_finishes_with_length(server):
    client = sync_client(server)
    long_answer = [{"role": "user", "content": "Write a long story about a cat in Paris."}]
    for limit in ({"max_tokens": 3}, {"max_completion_tokens": 3}):
        completion = client.chat.completions.create(model="gpt-4o", messages=long_answer, temperature=0, **limit)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 3


def test_streamed_chunks_join_to_the_non_streamed_reply(server):
    client = sync_client(server)
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert {c.id for c in chunks} == {first.id} and first.id.startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {local_llm(server)}
    assert {c.created for c in chunks} == {first.created}
    assert all(c.choices[0].finish_reason is None for c in [first, *middle])
    assert "".join(c.choices[0].delta.content or "" for c in middle) == whole.choices[0].message.content
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish.choices[0].delta.content is None
    assert usage.choices == [] and usage.usage == whole.usage


def test_async_client_streams_the_same_reply_and_seeds_reproduce_sampling(server):
    async def scenario() -> None:
        client = async_client(server)
        whole = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **GREEDY)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True, **GREEDY)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert "".join(pieces) == whole.choices[0].message.content
        # Sampling (temperature > 0): the same seed gives the same reply.
        sampled = {"temperature": 1.0, "seed": 1234, "max_tokens": 12}
        first = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **sampled)
        again = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **sampled)
        assert first.choices[0].message.content == again.choices[0].message.content
        await client.close()

    asyncio.run(scenario())


def test_developer_role_and_text_parts_read_as_system_and_string(server):
    client = sync_client(server)
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **GREEDY)
    parts = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": HELLO[0]["content"]}]},
            {"role": "user", "content": [{"type": "text", "text": HELLO[1]["content"]}]},
        ],
        **GREEDY,
    )
    assert parts.usage == plain.usage
    assert parts.choices[0].message.content == plain.choices[0].message.content


def test_stop_string_ends_the_reply_before_it(server):
    client = sync_client(server)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, **GREEDY).choices[0].message.content
    assert reply is not None
    words = reply.split()
    assert len(words) >= 3, reply
    stop = " " + words[2]
    cut = reply[: reply.index(stop)]
    stopped = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stop=[stop, "\u2603"], **GREEDY)
    assert stopped.choices[0].message.content == cut
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stop=stop, stream=True, **GREEDY)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == cut


def test_n_other_than_one_is_refused_naming_n(server):
    with pytest.raises(openai.BadRequestError) as refused:
        sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=2, **GREEDY)
    assert refused.value.status_code == 400 and refused.value.param == "n"


def test_wrong_key_is_401_in_openai_shape(server):
    with pytest.raises(openai.AuthenticationError) as refused:
        sync_client(server, api_key="wrong-key-0123456789abcdef").chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, **GREEDY
        )
    assert refused.value.status_code == 401
    r = httpx.post(server.url + PATH, json={"model": "m", "messages": HELLO}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": "12"}, "max_tokens"),  # no coercion, as OpenAI
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": ""}, "stop"),
        ({"n": 3}, "n"),
        ({"model": None}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": None}]}, "messages[0].content"),
        (
            {"messages": [{"role": "assistant", "content": "ok", "tool_calls": [{"id": "c"}]}]},
            "messages[0].tool_calls[0].function",
        ),
        ({"max_tokens": 2**70}, "max_tokens"),
        ({"seed": -(2**64)}, "seed"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, "tools[0].function.parameters"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_invalid_request_is_400_naming_the_param_and_generates_nothing(server, change, param):
    body = {"model": "gpt-4o-mini", "messages": HELLO, **GREEDY, **change}
    request_id = uuid.uuid4().hex
    r = httpx.post(
        server.url + PATH, json=body, headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": request_id}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert events_named(server, "llm.prompt", request_id) == []


def test_malformed_json_is_400_in_openai_shape(server):
    r = httpx.post(
        server.url + PATH,
        content=b'{"model": "gpt-4o-mini", "messages": [',
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_openai_fields_are_ignored(server):
    extras = {"frequency_penalty": 0.5, "presence_penalty": 0.1, "user": "agent-42", "logit_bias": {}, "store": False}
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,
        tool_choice="none",
        response_format={"type": "text"},
        extra_body=extras,
        **GREEDY,
    )
    assert completion.choices[0].message.content


@pytest.mark.parametrize("size", ["tokens", "characters"])
def test_prompt_past_the_context_is_400_context_length_exceeded(server, size):
    # Past the window in tokens (tokenised), or so long in characters that it is refused unread.
    text = "word " * 5000 if size == "tokens" else "x" * (4096 * MAX_CHARS_PER_TOKEN + 1)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            sync_client(server).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}], stream=stream, max_tokens=8
            )
        assert refused.value.code == "context_length_exceeded" and refused.value.param == "messages"


def test_client_leaving_mid_stream_stops_the_generation(server):
    request_id = uuid.uuid4().hex
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Write a very long story about a cat in Paris."}],
        "temperature": 0,
        "max_tokens": 400,  # several minutes of generation here, unless it stops
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": request_id}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        with client.stream("POST", PATH, json=body, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            first = next(response.iter_lines())
            assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
        # Hung up. The next request runs on the same model once the abandoned one has stopped.
    completion = sync_client(server).chat.completions.create(model="gpt-4o-mini", messages=HELLO, **GREEDY)
    assert completion.choices[0].message.content
    [cancelled] = events_named(server, "llm.cancelled", request_id)
    assert cancelled["completion_tokens"] < 400


class FailingEngine(LocalStandInEngine):
    """Writes a first word, then fails as a GPU out of memory would (a real model cannot be
    made to fail on demand). Survives the warm-up's short generations."""

    model_name = "failing"

    def count_prompt_tokens(self, messages):
        return 10

    def generate(self, messages, *, max_tokens, on_text=None, **kwargs):
        if max_tokens <= 16:
            return ChatReply("ok", 1, 1, "stop")
        if on_text is not None:
            on_text("Bonjour")
        raise RuntimeError("CUDA error: out of memory")


def test_engine_failure_mid_stream_is_an_error_event(tmp_path):
    settings = Settings(_env_file=None, api_keys=API_KEY, data_dir=tmp_path)
    store = ConversationStore.from_url(settings.effective_database_url)

    def build(_: Settings) -> Services:
        engine = FailingEngine()
        queue = InferenceQueue("language model", max_waiting=4)
        turns = ChatTurns(
            engine=engine, store=store, llm_queue=queue, system_prompt="s", max_reply_tokens=64, temperature=0
        )
        return Services(settings=settings, store=store, chat_engine=engine, llm_queue=queue, turns=turns)

    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 64, "stream": True}
    with TestClient(create_app(settings, build=build), raise_server_exceptions=False) as client:
        while client.get("/ready").status_code != 200:
            pass
        r = client.post(PATH, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200  # the stream had begun
    events = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
    assert json.loads(events[0])["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "Bonjour"}
    error = json.loads(events[2])["error"]
    assert error["type"] == "server_error" and error["message"] == "The language model failed to process the request"
    assert "CUDA" not in r.text
    assert len(events) == 3  # no [DONE] after a failure
