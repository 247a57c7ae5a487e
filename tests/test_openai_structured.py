"""Structured output on POST /v1/chat/completions through the official `openai` SDK: the reply is
one JSON object (`json_object`), one valid against a schema (`json_schema`), and the SDK's
`parse()` with a Pydantic model, streamed or not, on the tiny model: the grammar, not the
model, makes it JSON."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Annotated, Any, Literal

import httpx
import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, Field

from tests.server import API_KEY
from tests.test_openai_chat import PATH, async_client, events_named, sync_client

ASK = [
    {"role": "system", "content": "Réponds uniquement par un objet JSON."},
    {"role": "user", "content": "Le 5554 rue Saint-Denis est vendu 550 000 $ par Marie Tremblay."},
]
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 5, "max_tokens": 200}
SALE = {
    "type": "object",
    "properties": {
        "address": {"type": "string"},
        "price": {"type": "number"},
        "sellers": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "kind": {"type": "string", "enum": ["vente", "achat"]},
        "notes": {"type": ["string", "null"]},
    },
    "required": ["address", "price", "sellers", "kind", "notes"],
    "additionalProperties": False,
}


def test_json_object_reply_is_one_json_object_streamed_or_not(server):
    client = sync_client(server)
    whole = client.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, response_format={"type": "json_object"}, **GREEDY
    )
    [choice] = whole.choices
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content or ""), dict)
    streamed = client.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, response_format={"type": "json_object"}, stream=True, **GREEDY
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == choice.message.content


def test_json_schema_reply_validates_against_the_schema(server):
    completion = sync_client(server).chat.completions.create(
        model="gpt-4o-mini",
        messages=ASK,
        response_format={"type": "json_schema", "json_schema": {"name": "sale", "schema": SALE, "strict": True}},
        **GREEDY,
    )
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    jsonschema_rs.validate(SALE, json.loads(choice.message.content or ""))


@pytest.mark.slow
def test_json_schema_holds_at_any_temperature(server):
    # Sampling at temperature 1.5, where the tiny model writes nonsense: still valid JSON.
    client = sync_client(server)
    for seed in (1, 2, 3):
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            response_format={"type": "json_schema", "json_schema": {"name": "sale", "schema": SALE}},
            temperature=1.5,
            seed=seed,
            max_tokens=300,
        )
        if completion.choices[0].finish_reason == "stop":
            jsonschema_rs.validate(SALE, json.loads(completion.choices[0].message.content or ""))


class Party(BaseModel):
    name: str
    role: Literal["acheteur", "vendeur"]


class Sale(BaseModel):
    address: str
    price: float
    parties: Annotated[list[Party], Field(max_length=2)]
    """Bounded: the tiny model, free to, adds parties until max_tokens."""
    inspection: bool


def test_sdk_parse_with_a_pydantic_model(server):
    completion = sync_client(server).chat.completions.parse(
        model="gpt-4o-mini", messages=ASK, response_format=Sale, temperature=0, seed=5, max_tokens=300
    )
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Sale)


def test_async_sdk_parse_and_streamed_json_schema(server):
    async def scenario() -> None:
        client = async_client(server)
        parsed = await client.chat.completions.parse(
            model="gpt-4o-mini", messages=ASK, response_format=Sale, temperature=0, seed=5, max_tokens=300
        )
        assert isinstance(parsed.choices[0].message.parsed, Sale)
        async with client.chat.completions.stream(
            model="gpt-4o-mini", messages=ASK, response_format=Sale, temperature=0, seed=5, max_tokens=300
        ) as stream:
            final = await stream.get_final_completion()
        assert final.choices[0].message.parsed == parsed.choices[0].message.parsed
        await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("response_format", "param", "says"),
    [
        ({"type": "xml"}, "response_format.type", "json_schema"),
        ({"type": "json_schema"}, "response_format.json_schema", "required"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": SALE}}, "response_format.json_schema.name", "a-zA-Z"),
        (
            {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "array", "items": {}}}},
            "response_format.json_schema.schema",
            "object",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}},
            },
            "response_format.json_schema.schema",
            "'not'",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object", "properties": {"a": {"$ref": "https://x/y"}}}},
            },
            "response_format.json_schema.schema",
            "$ref",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "object", "properties": {"a": {"type": "date"}}}},
            },
            "response_format.json_schema.schema",
            "date",
        ),
    ],
)
def test_bad_response_format_is_400_naming_the_param(server, response_format, param, says):
    request_id = uuid.uuid4().hex
    body = {"model": "gpt-4o-mini", "messages": ASK, "max_tokens": 8, "response_format": response_format}
    r = httpx.post(
        server.url + PATH, json=body, headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": request_id}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert says in error["message"], error
    assert events_named(server, "llm.prompt", request_id) == []


def test_json_output_with_tools_is_refused(server):
    with pytest.raises(openai.BadRequestError) as refused:
        sync_client(server).chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            response_format={"type": "json_object"},
            tools=[{"type": "function", "function": {"name": "f"}}],
        )
    assert refused.value.param == "response_format"
