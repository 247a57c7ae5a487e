"""JSON Schema → llama.cpp grammar (lea_local/llm/grammar.py): what is refused and why, and that
what the grammar lets the real model sample always parses and validates, whatever the
temperature."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest

from lea_local.llm.base import ChatMessage, JsonOutput, ToolSpec, ToolUse
from lea_local.llm.grammar import (
    MAX_DEPTH,
    MAX_REPETITION,
    SchemaRefused,
    check_buildable,
    check_schema,
    json_grammar,
    schema_valid,
)
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine
from lea_local.tools.immoassist_tools import TOOLS


def obj(**properties: Any) -> dict:
    return {"type": "object", "properties": properties}


@pytest.mark.parametrize(
    ("schema", "keyword", "path"),
    [
        (obj(n={"type": "integer", "minimum": 0}), "minimum", "properties.n.minimum"),
        (obj(n={"type": "number", "multipleOf": 5}), "multipleOf", "properties.n.multipleOf"),
        (obj(s={"not": {"type": "string"}}), "not", "properties.s.not"),
        (obj(s={"if": {}, "then": {}}), "if", "properties.s.if"),
        ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties", "patternProperties"),
        (obj(a={"allOf": [obj(x={"type": "string"})]}), "allOf", "properties.a.allOf"),
        (obj(a={"type": "array", "uniqueItems": True}), "uniqueItems", "properties.a.uniqueItems"),
        (obj(a={"type": "array", "contains": {}}), "contains", "properties.a.contains"),
        ({"type": "object", "minProperties": 1}, "minProperties", "minProperties"),
    ],
)
def test_keywords_the_grammar_cannot_enforce_are_named(schema, keyword, path):
    with pytest.raises(SchemaRefused) as refused:
        check_schema(schema)
    assert f"'{keyword}'" in str(refused.value) and refused.value.path == path


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "array"}, "object"),
        ("object", "JSON Schema object"),
        (obj(s={"type": "string", "maxLength": MAX_REPETITION + 1}), "maxLength"),
        (obj(a={"type": "array", "minItems": -1}), "minItems"),
        (obj(a={"type": "date"}), "unknown type"),
        (obj(a={"$ref": "https://example.com/schema"}), "local references"),
        (obj(a={"$ref": "#/$defs/missing"}), "points to nothing"),
        ({**obj(a={"type": "string"}), "required": ["b"]}, "'b'"),
        (obj(a={"type": "string", "pattern": "[a-z]+"}), "anchored"),
        (obj(a={"enum": []}), "enum"),
        (obj(a=False), "allows nothing"),
    ],
)
def test_malformed_schemas_are_refused_saying_why(schema, says):
    with pytest.raises(SchemaRefused) as refused:
        check_schema(schema)
    assert says in str(refused.value)


def test_nesting_is_limited():
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_DEPTH):
        schema = obj(a=schema)
    check_schema(schema)
    with pytest.raises(SchemaRefused, match="deeper"):
        check_schema(obj(a=schema))


def test_type_lists_keep_each_types_keywords():
    schema = check_schema(obj(tags={"type": ["array", "null"], "items": {"type": "integer"}, "maxItems": 2}))
    tags = schema["properties"]["tags"]
    assert tags == {
        "anyOf": [
            {"items": {"type": "integer"}, "maxItems": 2, "type": "array"},
            {"items": {"type": "integer"}, "maxItems": 2, "type": "null"},
        ]
    }


def test_immoassist_tools_and_pydantic_style_schemas_build():
    for tool in TOOLS:
        check_buildable(check_schema(tool["function"]["parameters"]))
    nested = {
        "$defs": {"Party": {**obj(name={"type": "string"}), "required": ["name"], "additionalProperties": False}},
        **obj(parties={"type": "array", "items": {"$ref": "#/$defs/Party"}}, when={"type": "string", "format": "date"}),
    }
    assert "root ::=" in json_grammar(check_schema(nested))


def test_schema_valid_agrees_with_a_json_schema_validator():
    schema = check_schema(TOOLS[2]["function"]["parameters"])
    good = {"property_address": "5554 rue Saint-Denis", "sellers": ["A"], "buyers": ["B"], "offered_price": 550000,
            "transaction_type": "vente"}
    bad = [{**good, "transaction_type": "location"}, {k: v for k, v in good.items() if k != "buyers"},
           {**good, "offered_price": "550 000 $"}, {**good, "sellers": "A"}]
    validator = jsonschema_rs.validator_for(schema)
    for instance in [good, *bad]:
        assert schema_valid(instance, schema) == validator.is_valid(instance)


def bounded(schema: dict) -> dict:
    """create_pa with its strings and lists bounded: at temperature 2 the tiny model would
    otherwise write one string until max_tokens (valid, but never finished)."""
    properties = {}
    for name, sub in schema["properties"].items():
        extra = {"maxLength": 24} if sub["type"] == "string" else {"maxItems": 2} if sub["type"] == "array" else {}
        properties[name] = {**sub, **extra}
    return {**schema, "properties": properties}


SCHEMAS = [
    bounded(TOOLS[3]["function"]["parameters"]),  # create_pa: 21 fields, 18 required
    {
        **obj(
            kind={"enum": ["vente", "achat"]},
            price={"type": ["number", "null"]},
            rooms={"type": "integer"},
            notes={"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
            code={"type": "string", "pattern": "^[A-Z][0-9][A-Z] [0-9][A-Z][0-9]$"},
            when={"type": "string", "format": "date"},
            extra={"anyOf": [{"type": "boolean"}, obj(x={"type": "number"})]},
        ),
        "required": ["kind", "price", "rooms", "notes", "code", "when", "extra"],
        "additionalProperties": False,
    },
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_whatever_the_tiny_model_samples_is_valid(tiny_llm_path, index):
    engine = LlamaCppChatEngine(tiny_llm_path, context_size=2048)
    schema = check_schema(SCHEMAS[index])
    validator = jsonschema_rs.validator_for(SCHEMAS[index])
    messages = [ChatMessage("user", "Promesse d'achat pour le 5554 rue Saint-Denis, 550 000 $.")]
    finished = 0
    for seed, temperature in [(1, 0.0), (2, 1.0), (3, 1.5), (4, 2.0)]:
        reply = engine.generate(
            messages, max_tokens=700, temperature=temperature, seed=seed, json_output=JsonOutput(schema)
        )
        if reply.finish_reason == "length":
            continue  # cut by max_tokens: unfinished, never returned as a call
        finished += 1
        validator.validate(json.loads(reply.text))
    assert finished >= 2


def test_the_tiny_models_call_grammar_is_one_llama_cpp_parses(tiny_llm_path):
    engine = LlamaCppChatEngine(tiny_llm_path, context_size=512)
    tools = tuple(
        ToolSpec(t["function"]["name"], parameters=check_schema(t["function"]["parameters"])) for t in TOOLS
    )
    for mode, name in [("auto", None), ("required", None), ("named", "create_pa")]:
        gbnf = engine.build_grammar(ToolUse(tools, mode, name=name), None)  # type: ignore[arg-type]
        assert "root ::=" in gbnf and "tool_call" in gbnf


@pytest.mark.slow
def test_grammar_first_sampling_picks_what_the_full_check_picks(tiny_llm_path):
    # Greedy: the grammar-first sampler's choices are exactly those of llama-cpp-python's own
    # (the whole vocabulary checked at every token), with far fewer full checks.
    from llama_cpp import Llama, LlamaGrammar

    from lea_local.llm import grammar_sampler

    gbnf = json_grammar(check_schema(SCHEMAS[1]))
    prompt = "<|im_start|>user\nDonne la fiche de la maison en JSON.<|im_end|>\n<|im_start|>assistant\n"
    texts = []
    for install in (False, True):
        llama = Llama(str(tiny_llm_path), n_ctx=1024, verbose=False)
        if install:
            grammar_sampler.install(llama)
        out = llama.create_completion(
            prompt, max_tokens=200, temperature=0.0, grammar=LlamaGrammar.from_string(gbnf, verbose=False)
        )
        texts.append(out["choices"][0]["text"])
        if install:
            sampler = llama._sampler
            assert isinstance(sampler, grammar_sampler.GrammarFirstSampler)
            assert sampler.full_checks < out["usage"]["completion_tokens"] / 2
    assert texts[0] == texts[1]
    jsonschema_rs.validate(SCHEMAS[1], json.loads(texts[1]))
