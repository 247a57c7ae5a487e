"""Function calling on POST /v1/chat/completions through the official `openai` SDK (sync, async,
streamed), against the real server on the tiny model (SmolLM2-135M, whose template knows no
tools: the generic format). Its calls follow the tools' schemas because sampling is constrained
by a grammar, not because the model is good: ImmoAssist's own tools are among them."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import jsonschema_rs
import openai
import pytest

from lea_local.tools.immoassist_tools import CREATE_PA, GEOCODE_ADDRESS, TOOLS
from tests.server import API_KEY
from tests.test_openai_chat import PATH, async_client, events_named, sync_client

SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ADDRESS = [
    {"role": "system", "content": "Tu es Léa, l'assistante des courtiers immobiliers."},
    {"role": "user", "content": "Le 5554 rue Saint-Denis, offre à 550 000 $."},
]
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 7, "max_tokens": 400}
# One call per reply: the tiny model, free to add more, writes a second that runs to max_tokens.
ONE = {"parallel_tool_calls": False}
GEOCODE = {"type": "function", "function": {"name": "geocode_address"}}


def assert_valid_calls(calls: Any, tools: list[dict] = TOOLS) -> None:
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in tools}
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in schemas
        arguments = json.loads(call.function.arguments)
        jsonschema_rs.validate(schemas[call.function.name], arguments)


def example_calls(*streets: str) -> list[dict]:
    """A conversation in which the assistant answered each address with a call: even the tiny
    model then calls on its own (tool_choice "auto")."""
    messages: list[dict] = [{"role": "system", "content": "You call tools."}]
    for i, street in enumerate(streets):
        messages.append({"role": "user", "content": f"Find {street}."})
        arguments = json.dumps({"partial_address": street})
        call = {"id": f"call_{i}", "type": "function", "function": {"name": "geocode_address", "arguments": arguments}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    return messages


@pytest.mark.slow
def test_required_makes_a_call_valid_against_its_schema(server):
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice="required", **ONE, **GREEDY
    )
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert_valid_calls([call])
    assert completion.usage is not None and completion.usage.completion_tokens > 0


PROMISE = (
    "Promesse d'achat. Acheteur: 12 rue Laval, Montréal, 514-555-0101, jean@example.com. Vendeur: 5554 rue "
    "Saint-Denis, Montréal, 514-555-0202, marie@example.com. Immeuble: 5554 rue Saint-Denis, condo de 2 chambres. "
    "Prix 550000. Acompte 10000 le 2026-04-01. Financement 440000 en 10 jours. Acte le 2026-06-30. Inspection oui. "
    "Documents oui. Inclusions: frigo, poêle. Délai d'acceptation 2026-03-20 17:00."
)


@pytest.mark.slow
def test_named_function_is_called_with_every_required_field(server):
    # ImmoAssist's promise to purchase: 21 fields, 18 of them required.
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o",
        messages=[ADDRESS[0], {"role": "user", "content": PROMISE}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "create_pa"}},
        temperature=0,
        seed=3,
        max_tokens=900,
    )
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "create_pa"
    assert_valid_calls([call])
    assert set(CREATE_PA["function"]["parameters"]["required"]) <= set(json.loads(call.function.arguments))


@pytest.mark.slow
def test_auto_answers_in_text_when_the_model_writes_text(server):
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello."}],
        tools=[GEOCODE_ADDRESS],
        tool_choice="auto",
        temperature=0,
        seed=11,
        max_tokens=16,
    )
    [choice] = completion.choices
    assert choice.message.tool_calls is None
    assert choice.message.content and "<tool_call>" not in choice.message.content
    assert choice.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_auto_call_is_constrained_once_the_model_starts_it(server):
    # The model writes the call's opener on its own; from there the grammar holds it.
    messages = [*example_calls("12 Main Street", "3 Oak Road"), {"role": "user", "content": "Find 40 Elm Street."}]
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o", messages=messages, tools=[GEOCODE_ADDRESS], temperature=0, seed=1, max_tokens=60
    )
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    assert_valid_calls(choice.message.tool_calls, [GEOCODE_ADDRESS])


def test_none_never_calls(server):
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice="none", temperature=0, seed=7, max_tokens=24
    )
    [choice] = completion.choices
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_parallel_calls_are_each_complete_and_valid(server):
    # Free to write several calls, the tiny model writes a second one whose string never ends:
    # only complete calls are answered, streamed or not.
    client = sync_client(server)
    options: dict[str, Any] = {"tools": TOOLS, "tool_choice": "required", "temperature": 0, "seed": 7, "max_tokens": 200}
    whole = client.chat.completions.create(model="gpt-4o", messages=ADDRESS, **options)
    [choice] = whole.choices
    assert_valid_calls(choice.message.tool_calls)
    assert choice.finish_reason in ("tool_calls", "length")
    calls, finish = reassembled(list(client.chat.completions.create(model="gpt-4o", messages=ADDRESS, stream=True, **options)))
    assert finish == choice.finish_reason
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in choice.message.tool_calls
    ]


def reassembled(chunks: list[Any]) -> tuple[list[dict], str | None]:
    """The calls rebuilt from streamed fragments by `index`, as ImmoAssist's Léa does it."""
    calls: dict[int, dict] = {}
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for fragment in choice.delta.tool_calls or []:
            if fragment.index not in calls:
                assert fragment.id and fragment.type == "function" and fragment.function.name
                calls[fragment.index] = {"id": fragment.id, "name": fragment.function.name, "arguments": ""}
            else:
                assert fragment.id is None and fragment.function.name is None
            calls[fragment.index]["arguments"] += fragment.function.arguments or ""
        finish = choice.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


def test_streamed_fragments_reassemble_to_the_non_streamed_calls(server):
    client = sync_client(server)
    whole = client.chat.completions.create(
        model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice="required", **ONE, **GREEDY
    )
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=ADDRESS,
            tools=TOOLS,
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
            **ONE,
            **GREEDY,
        )
    )
    calls, finish = reassembled(chunks)
    assert finish == "tool_calls"
    expected = [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert [(c["name"], c["arguments"]) for c in calls] == expected
    # Arguments come in pieces, not in one fragment at the end.
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls) > len(calls) + 1
    assert chunks[-1].usage == whole.usage
    # The SDK's own accumulation gives the same calls.
    with client.chat.completions.stream(
        model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice="required", **ONE, **GREEDY
    ) as stream:
        final = stream.get_final_completion()
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == expected


def test_async_client_streams_the_same_call(server):
    async def scenario() -> None:
        client = async_client(server)
        whole = await client.chat.completions.create(
            model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice=GEOCODE, **GREEDY
        )
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice=GEOCODE, stream=True, **GREEDY
        )
        calls, finish = reassembled([chunk async for chunk in stream])
        [call] = whole.choices[0].message.tool_calls
        assert finish == "tool_calls"
        assert [(c["name"], c["arguments"]) for c in calls] == [("geocode_address", call.function.arguments)]
        await client.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_round_trip_call_then_tool_result_then_text(server):
    client = sync_client(server)
    messages: list[Any] = list(ADDRESS)
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS, tool_choice=GEOCODE, **GREEDY)
    [call] = first.choices[0].message.tool_calls
    # As ImmoAssist does: the assistant message with its calls, then each call's result.
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    result = {"address": "5554 rue Saint-Denis, Montréal, QC H2J 2L5"}
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result, ensure_ascii=False)})
    second = client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=TOOLS, tool_choice="none", temperature=0, seed=7, max_tokens=24
    )
    [choice] = second.choices
    assert choice.message.content and choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length")
    # The call and its result are in the prompt the model read.
    without = client.chat.completions.create(
        model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=1
    )
    assert second.usage is not None and without.usage is not None
    assert second.usage.prompt_tokens > without.usage.prompt_tokens + 20


def test_legacy_functions_answer_with_function_call(server):
    client = sync_client(server)
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=ADDRESS,
        functions=[GEOCODE_ADDRESS["function"]],
        function_call={"name": "geocode_address"},
        **GREEDY,
    )
    [choice] = completion.choices
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    call = choice.message.function_call
    assert call is not None and call.name == "geocode_address"
    jsonschema_rs.validate(GEOCODE_ADDRESS["function"]["parameters"], json.loads(call.arguments))
    streamed = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=ADDRESS,
            functions=[GEOCODE_ADDRESS["function"]],
            function_call={"name": "geocode_address"},
            stream=True,
            **GREEDY,
        )
    )
    fragments = [c.choices[0].delta.function_call for c in streamed if c.choices and c.choices[0].delta.function_call]
    assert fragments[0].name == "geocode_address" and all(f.name is None for f in fragments[1:])
    assert "".join(f.arguments or "" for f in fragments) == call.arguments
    assert streamed[-1].choices[0].finish_reason == "function_call"
    # Its result goes back as a `function` message.
    answered = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            *ADDRESS,
            {"role": "assistant", "content": None, "function_call": {"name": call.name, "arguments": call.arguments}},
            {"role": "function", "name": "geocode_address", "content": '{"address": "5554 rue Saint-Denis"}'},
        ],
        temperature=0,
        max_tokens=12,
    )
    assert answered.choices[0].message.content


def test_hang_up_during_a_constrained_call_stops_the_generation(server):
    # At least 200 strings: a call far longer than the test waits for.
    notes = {
        "type": "function",
        "function": {
            "name": "take_notes",
            "parameters": {
                "type": "object",
                "properties": {"notes": {"type": "array", "items": {"type": "string"}, "minItems": 200}},
                "required": ["notes"],
            },
        },
    }
    request_id = uuid.uuid4().hex
    body = {
        "model": "gpt-4o",
        "messages": ADDRESS,
        "tools": [notes],
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 1000,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": request_id}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        with client.stream("POST", PATH, json=body, headers=headers) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            while "tool_calls" not in next(lines):
                pass
        # Hung up mid-call. The next request runs once the abandoned one has stopped.
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o", messages=ADDRESS, tools=TOOLS, tool_choice=GEOCODE, **GREEDY
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    [cancelled] = events_named(server, "llm.cancelled", request_id)
    assert cancelled["completion_tokens"] < 1000


def tool(name: str = "f", parameters: Any = None) -> dict:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


OBJECT = {"type": "object", "properties": {"x": {"type": "string"}}}
DEEP: dict[str, Any] = {"type": "string"}
for _ in range(12):
    DEEP = {"type": "object", "properties": {"a": DEEP}}
CALLED = [
    {"role": "user", "content": "hi"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    },
]


@pytest.mark.parametrize(
    ("change", "param", "says"),
    [
        ({"tools": [tool(parameters={"type": "string"})]}, "tools[0].function.parameters", "object"),
        ({"tools": [tool(parameters=["not", "a", "schema"])]}, "tools[0].function.parameters", "JSON Schema"),
        ({"tools": [tool(name="bad name!")]}, "tools[0].function.name", "a-zA-Z0-9_-"),
        ({"tools": [tool(name="x" * 65)]}, "tools[0].function.name", "{1,64}"),
        ({"tools": [tool(f"f{i}", OBJECT) for i in range(129)]}, "tools", "128"),
        ({"tools": [tool()], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice", "'g'"),
        ({"tool_choice": "required"}, "tool_choice", "no tools"),
        (
            {"tools": [tool(parameters={"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}})]},
            "tools[0].function.parameters",
            "minimum",
        ),
        (
            {"tools": [tool(parameters={"type": "object", "properties": {"s": {"type": "string", "maxLength": 10**6}}})]},
            "tools[0].function.parameters",
            "maxLength",
        ),
        ({"tools": [tool(parameters=DEEP)]}, "tools[0].function.parameters", "deeper"),
        (
            {"tools": [tool(parameters={"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 200} for i in range(400)}})]},
            "tools[0].function.parameters",
            "larger",
        ),
        ({"tools": [tool(), tool()]}, "tools[1].function.name", "twice"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "function"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "nope"}]},
            "messages[1].tool_call_id",
            "nope",
        ),
        ({"messages": [*CALLED, {"role": "tool", "content": "42"}]}, "messages[2].tool_call_id", "required"),
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": CALLED[1]["tool_calls"]}]}, "messages[0].tool_calls", "assistant"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "required"),
        ({"functions": [{"name": "f"}], "tools": [tool()]}, "functions", "not both"),
    ],
)
def test_bad_tool_input_is_400_naming_the_param_and_generates_nothing(server, change, param, says):
    body = {"model": "gpt-4o-mini", "messages": ADDRESS, "max_tokens": 8, **change}
    request_id = uuid.uuid4().hex
    r = httpx.post(
        server.url + PATH,
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": request_id},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert says in error["message"], error
    assert events_named(server, "llm.prompt", request_id) == []


def test_bad_tool_input_through_the_sdk_is_a_bad_request_error(server):
    with pytest.raises(openai.BadRequestError) as refused:
        sync_client(server).chat.completions.create(
            model="gpt-4o",
            messages=ADDRESS,
            tools=[tool(parameters={"type": "object", "properties": {"n": {"type": "number", "multipleOf": 5}}})],
            stream=True,
        )
    assert refused.value.status_code == 400 and refused.value.param == "tools[0].function.parameters"
    assert "multipleOf" in refused.value.message


def test_the_agent_endpoint_is_unchanged_by_tools(server):
    # The agent's text turn still answers plain text (its engine path is the one without tools).
    with server.client() as client:
        r = server.chat(client, "Bonjour", user_id="tools-test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["response"] and "tool_calls" not in body


# --- remote engines: tools and JSON output pass through -----------------------------------------
@pytest.mark.slow
def test_tools_pass_through_a_remote_engine(server, make_server):
    # A lea-local whose LLM is another lea-local (the shared server): the call is made and
    # constrained there, and streamed back through both.
    front = make_server({"LEA_LLM_URL": f"{server.url}/v1", "LEA_LLM_API_KEY": API_KEY, "LEA_LLM_CONTEXT_SIZE": "4096"})
    options: dict[str, Any] = {"tools": TOOLS, "tool_choice": GEOCODE, **GREEDY}
    direct = sync_client(server).chat.completions.create(model="gpt-4o", messages=ADDRESS, **options)
    through = sync_client(front).chat.completions.create(model="gpt-4o", messages=ADDRESS, **options)
    [call] = through.choices[0].message.tool_calls
    assert through.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, call.function.arguments) == (
        "geocode_address",
        direct.choices[0].message.tool_calls[0].function.arguments,
    )
    calls, finish = reassembled(
        list(sync_client(front).chat.completions.create(model="gpt-4o", messages=ADDRESS, stream=True, **options))
    )
    assert finish == "tool_calls" and [(c["name"], c["arguments"]) for c in calls] == [
        ("geocode_address", call.function.arguments)
    ]
    # The round trip's history (a call, its result) goes through too.
    answered = sync_client(front).chat.completions.create(
        model="gpt-4o",
        messages=[
            *ADDRESS,
            through.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"address": "5554 rue Saint-Denis"}'},
        ],
        temperature=0,
        max_tokens=8,
    )
    assert answered.choices[0].message.content
    parsed = sync_client(front).chat.completions.create(
        model="gpt-4o", messages=ADDRESS, response_format={"type": "json_object"}, temperature=0, max_tokens=100
    )
    assert isinstance(json.loads(parsed.choices[0].message.content or ""), dict)


def test_remote_request_carries_the_tools_and_reads_the_streamed_calls():
    from lea_local.llm.base import ChatMessage, JsonOutput, ToolCall, ToolCallDelta, ToolSpec, ToolUse
    from lea_local.llm.remote_engine import RemoteChatEngine
    from tests.test_remote_engines import fake_server, sse

    seen: list[tuple[str, dict]] = []
    fragments = [
        {"index": 0, "id": "call_x", "type": "function", "function": {"name": "geocode_address", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"partial_address": '}},
        {"index": 0, "function": {"arguments": '"5554 rue Saint-Denis"}'}},
        # A server that sends a whole call in one fragment.
        {"index": 1, "id": "call_y", "function": {"name": "get_draft", "arguments": "{}"}},
    ]
    routes = {
        ("GET", "/v1/models"): {"data": [{"id": "qwen"}]},
        ("POST", "/v1/chat/completions"): lambda body: sse(
            *[{"choices": [{"index": 0, "delta": {"tool_calls": [f]}, "finish_reason": None}]} for f in fragments],
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ),
    }
    engine = RemoteChatEngine("http://llm:9000", context_size=4096, transport=fake_server(routes, seen))
    geocode = ToolSpec("geocode_address", "g", {"type": "object", "properties": {}})
    history = [
        ChatMessage("user", "Bonjour"),
        ChatMessage("assistant", "", tool_calls=(ToolCall("call_a", "geocode_address", "{}"),)),
        ChatMessage("tool", "ok", tool_call_id="call_a", name="geocode_address"),
    ]
    deltas: list[ToolCallDelta] = []
    reply = engine.generate(
        history,
        max_tokens=64,
        temperature=0,
        tools=ToolUse((geocode,), "named", name="geocode_address", parallel=False),
        on_tool_call=deltas.append,
    )
    sent = seen[-1][1]
    assert sent["tools"][0]["function"]["name"] == "geocode_address"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "geocode_address"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_a" and sent["messages"][1]["content"] is None
    assert sent["messages"][2] == {"role": "tool", "content": "ok", "tool_call_id": "call_a"}
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls == (
        ToolCall("call_x", "geocode_address", '{"partial_address": "5554 rue Saint-Denis"}'),
        ToolCall("call_y", "get_draft", "{}"),
    )
    assert [(d.index, d.id, d.name) for d in deltas if d.name] == [(0, "call_x", "geocode_address"), (1, "call_y", "get_draft")]
    engine.generate([ChatMessage("user", "x")], max_tokens=8, temperature=0, json_output=JsonOutput({"type": "object"}))
    assert seen[-1][1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": True},
    }


def test_a_remote_server_refusing_tools_is_a_400_naming_tools():
    from lea_local.llm.base import ChatMessage, FeatureRefused, ToolSpec, ToolUse
    from lea_local.llm.remote_engine import RemoteChatEngine
    from tests.test_remote_engines import fake_server

    refusal = {"error": {"message": "tools param requires --jinja flag", "type": "not_supported_error"}}
    routes = {
        ("GET", "/v1/models"): {"data": [{"id": "m"}]},
        ("POST", "/v1/chat/completions"): lambda body: httpx.Response(400 if "tools" in body else 500, json=refusal),
    }
    engine = RemoteChatEngine("http://llm:9000", context_size=4096, transport=fake_server(routes, []))
    tools = ToolUse((ToolSpec("f", "", {"type": "object", "properties": {}}),), "auto")
    with pytest.raises(FeatureRefused) as refused:
        engine.generate([ChatMessage("user", "x")], max_tokens=8, temperature=0, tools=tools)
    assert refused.value.param == "tools" and "--jinja" in str(refused.value)


def test_an_engine_refusing_tools_answers_400_streamed_or_not(tmp_path):
    from litestar.testing import TestClient

    from lea_local.api.app import create_app
    from lea_local.llm.base import ChatReply, FeatureRefused
    from lea_local.pipeline.turns import ChatTurns
    from lea_local.runtime.inference_queue import InferenceQueue
    from lea_local.services import Services
    from lea_local.settings import Settings
    from lea_local.store.conversations import ConversationStore
    from tests.fixtures.engines import LocalStandInEngine

    class RefusingEngine(LocalStandInEngine):
        """A remote engine whose server refuses tools (as RemoteChatEngine reports it)."""

        model_name = "refusing"

        def count_prompt_tokens(self, messages):
            return 10

        def generate(self, messages, *, max_tokens, tools=None, **kwargs):
            if tools is not None:
                raise FeatureRefused("the LLM server refuses tools (answered 400)", "tools")
            return ChatReply("ok", 1, 1, "stop")

    settings = Settings(_env_file=None, api_keys=API_KEY, data_dir=tmp_path)
    store = ConversationStore.from_url(settings.effective_database_url)

    def build(_: Settings) -> Services:
        engine = RefusingEngine()
        queue = InferenceQueue("language model", max_waiting=4)
        turns = ChatTurns(engine=engine, store=store, llm_queue=queue, system_prompt="s", max_reply_tokens=64, temperature=0)
        return Services(settings=settings, store=store, chat_engine=engine, llm_queue=queue, turns=turns)

    with TestClient(create_app(settings, build=build), raise_server_exceptions=False) as client:
        while client.get("/ready").status_code != 200:
            pass
        for stream in (False, True):
            body = {"model": "gpt-4o", "messages": ADDRESS, "tools": [GEOCODE_ADDRESS], "stream": stream}
            r = client.post(PATH, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "tools" and "refuses tools" in r.json()["error"]["message"]
