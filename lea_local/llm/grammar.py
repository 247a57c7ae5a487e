"""JSON Schema → llama.cpp grammar (GBNF), for tool calls and JSON output that always parse and
validate, whatever the model.

The conversion is llama.cpp's own (`json-schema-to-grammar.py`, vendored by llama-cpp-python as
`llama_cpp.llama_grammar.SchemaConverter`). Before it runs, `check_schema` refuses what it would
silently not enforce (a keyword it does not know: the output could then break the schema) and
what would make grammar building or sampling slow: schemas past `MAX_SCHEMA_CHARS` in all,
nesting past `MAX_DEPTH`, repetition bounds past `MAX_REPETITION`, grammars past
`MAX_GRAMMAR_CHARS`. Each refusal names the keyword and where it is (`SchemaRefused.path`)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Limits: one request cannot make grammar building or sampling take minutes.
MAX_TOOLS = 128
MAX_SCHEMA_CHARS = 65_536
"""All of a request's schemas (tools' parameters and response_format), as compact JSON."""
MAX_DEPTH = 10
"""Nested objects and arrays in one schema."""
MAX_REPETITION = 256
"""minItems, maxItems, minLength, maxLength: each bound unrolls into that many grammar terms."""
MAX_GRAMMAR_CHARS = 262_144
"""The GBNF text built from a request's schemas."""
MAX_ENUM = 512
"""Values of one enum."""

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
# Keywords the converter turns into grammar rules.
ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "minLength",
        "maxLength",
    }
)
# Keywords that describe without constraining (and `strict`, which some clients put in the schema).
ANNOTATIONS = frozenset(
    {
        "description",
        "title",
        "default",
        "examples",
        "example",
        "$comment",
        "$schema",
        "$id",
        "deprecated",
        "readOnly",
        "writeOnly",
        "strict",
        "nullable",
    }
)
_REPETITION_KEYWORDS = ("minItems", "maxItems", "minLength", "maxLength")
# A JSON string's character: the converter's own also lets raw control characters through,
# which strict JSON parsers refuse.
_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


class SchemaRefused(ValueError):
    """A schema this server cannot enforce: `str()` says why, `path` where (a JSON pointer-like
    path inside the schema, "" for its root)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def check_name(name: object) -> str | None:
    """Why `name` is not a valid function name, or None."""
    if not isinstance(name, str) or not NAME.match(name):
        return "must match ^[a-zA-Z0-9_-]{1,64}$"
    return None


def check_schema(schema: object, *, root_object: bool = True) -> dict[str, Any]:
    """The schema normalised for the converter (type lists into anyOf), or SchemaRefused naming
    the keyword it cannot enforce. `root_object`: the schema must describe a JSON object (tool
    parameters, response_format)."""
    if not isinstance(schema, dict):
        raise SchemaRefused("must be a JSON Schema object")
    if root_object:
        kind = schema.get("type")
        if kind is None and "properties" not in schema:
            raise SchemaRefused('must describe an object: {"type": "object", "properties": {…}}', "type")
        if kind is not None and kind != "object":
            raise SchemaRefused(f"the root must be of type 'object', not {json.dumps(kind)[:40]}", "type")
    if len(json.dumps(schema, separators=(",", ":"))) > MAX_SCHEMA_CHARS:
        raise SchemaRefused(f"is larger than {MAX_SCHEMA_CHARS} characters")
    normalised = copy.deepcopy(schema)
    _check(normalised, normalised, "", 0)
    return _normalise(normalised)


def _check(node: Any, root: dict, path: str, depth: int) -> None:
    if isinstance(node, bool):
        if node is False:
            raise SchemaRefused("the schema `false` allows nothing", path)
        return
    if not isinstance(node, dict):
        raise SchemaRefused("a (sub)schema must be an object", path)
    if depth > MAX_DEPTH:
        raise SchemaRefused(f"nests deeper than {MAX_DEPTH} levels", path)
    for key in node:
        if key not in ENFORCED and key not in ANNOTATIONS:
            raise SchemaRefused(f"keyword {key!r} is not supported (its constraint cannot be enforced)", _at(path, key))
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
    for one in kinds:
        if not isinstance(one, str) or one not in TYPES:
            raise SchemaRefused(f"unknown type {json.dumps(one)[:40]}", _at(path, "type"))
    for key in _REPETITION_KEYWORDS:
        if key in node:
            bound = node[key]
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 0:
                raise SchemaRefused(f"{key} must be a non-negative integer", _at(path, key))
            if bound > MAX_REPETITION:
                raise SchemaRefused(f"{key} above {MAX_REPETITION} is not supported", _at(path, key))
    if "enum" in node:
        if not isinstance(node["enum"], list) or not node["enum"]:
            raise SchemaRefused("enum must be a non-empty array", _at(path, "enum"))
        if len(node["enum"]) > MAX_ENUM:
            raise SchemaRefused(f"enum has more than {MAX_ENUM} values", _at(path, "enum"))
    if "pattern" in node and not isinstance(node["pattern"], str):
        raise SchemaRefused("pattern must be a string", _at(path, "pattern"))
    if "pattern" in node:
        _check_pattern(node["pattern"], _at(path, "pattern"))
    if "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise SchemaRefused("only local references (#/$defs/…) are supported", _at(path, "$ref"))
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise SchemaRefused(f"reference {ref[:100]!r} points to nothing", _at(path, "$ref"))
            target = target[part]
    properties = node.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise SchemaRefused("properties must be an object", _at(path, "properties"))
        for name, sub in properties.items():
            _check(sub, root, _at(path, f"properties.{name}"), depth + 1)
    required = node.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaRefused("required must be an array of property names", _at(path, "required"))
        unknown = [r for r in required if r not in (properties or {})]
        if unknown:
            message = f"required names {unknown[0]!r}, which properties does not define"
            raise SchemaRefused(message, _at(path, "required"))
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        _check(additional, root, _at(path, "additionalProperties"), depth + 1)
    elif additional is not None and not isinstance(additional, bool):
        raise SchemaRefused("additionalProperties must be a boolean or a schema", _at(path, "additionalProperties"))
    items = node.get("items")
    if isinstance(items, list):
        raise SchemaRefused("items as an array is not supported: use prefixItems", _at(path, "items"))
    if items is not None:
        _check(items, root, _at(path, "items"), depth + 1)
    if "prefixItems" in node:
        if not isinstance(node["prefixItems"], list):
            raise SchemaRefused("prefixItems must be an array of schemas", _at(path, "prefixItems"))
        for i, sub in enumerate(node["prefixItems"]):
            _check(sub, root, _at(path, f"prefixItems[{i}]"), depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in node:
            if not isinstance(node[key], list) or not node[key]:
                raise SchemaRefused(f"{key} must be a non-empty array of schemas", _at(path, key))
            for i, sub in enumerate(node[key]):
                _check(sub, root, _at(path, f"{key}[{i}]"), depth + 1)
    for key in ("$defs", "definitions"):
        if key in node:
            if not isinstance(node[key], dict):
                raise SchemaRefused(f"{key} must be an object", _at(path, key))
            for name, sub in node[key].items():
                _check(sub, root, _at(path, f"{key}.{name}"), depth + 1)


def _check_pattern(pattern: str, path: str) -> None:
    if len(pattern) > 512:
        raise SchemaRefused("pattern longer than 512 characters", path)
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise SchemaRefused("pattern must be anchored (^…$): the grammar matches whole strings", path)
    if re.search(r"\{\s*\d{4,}", pattern):
        raise SchemaRefused(f"pattern repetition above {MAX_REPETITION} is not supported", path)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SchemaRefused(f"pattern is not a regular expression: {exc}", path) from exc


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _normalise(node: Any) -> Any:
    """Type lists (`["string", "null"]`) into anyOf of one type each, so that the converter keeps
    each type's own keywords (it would otherwise drop them); `true` into the empty schema."""
    if node is True:
        return {}
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    literal = ("enum", "const", "default", "examples")
    out = {key: (value if key in literal else _normalise(value)) for key, value in node.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _normalise(sub) for name, sub in node["properties"].items()}
    kind = out.get("type")
    if isinstance(kind, list):
        rest = {key: value for key, value in out.items() if key != "type"}
        if len(kind) == 1:
            return {**rest, "type": kind[0]}
        return {"anyOf": [{**rest, "type": one} for one in kind]}
    return out


class GrammarBuilder:
    """One grammar's rules from several schemas (llama.cpp's converter), under one root."""

    def __init__(self) -> None:
        from llama_cpp.llama_grammar import SchemaConverter

        self._converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def resolved(self, schema: Mapping[str, Any], url: str) -> dict[str, Any]:
        """A copy of `schema` whose local references (#/$defs/…) are resolved against its own root."""
        try:
            return self._converter.resolve_refs(copy.deepcopy(dict(schema)), url)
        except (AssertionError, KeyError, ValueError, TypeError) as exc:
            raise SchemaRefused(f"the grammar cannot be built from this schema: {exc}"[:300]) from exc

    def schema_rule(
        self, schema: Mapping[str, Any], name: str, prop_order: Sequence[str] = (), *, resolve: bool = True
    ) -> str:
        """The rule that matches JSON valid against `schema` (already checked), named after `name`."""
        converter = self._converter
        converter._prop_order = {key: i for i, key in enumerate(prop_order)}
        schema = self.resolved(schema, name) if resolve else dict(schema)
        try:
            return converter.visit(schema, name)
        except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
            raise SchemaRefused(f"the grammar cannot be built from this schema: {exc}"[:300]) from exc

    def literal(self, text: str) -> str:
        return self._converter._format_literal(text)

    def grammar(self, root: str) -> str:
        rules = dict(self._converter._rules)
        rules["root"] = root
        if "char" in rules:
            rules["char"] = _CHAR_RULE
        text = "\n".join(f"{name} ::= {rule}" for name, rule in sorted(rules.items()))
        if len(text) > MAX_GRAMMAR_CHARS:
            raise SchemaRefused(f"the schemas make a grammar larger than {MAX_GRAMMAR_CHARS} characters")
        return text


def check_buildable(schema: Mapping[str, Any]) -> None:
    """SchemaRefused when llama.cpp's converter cannot make a grammar of this (checked) schema."""
    builder = GrammarBuilder()
    builder.grammar(builder.schema_rule(schema, "check"))


def json_grammar(schema: Mapping[str, Any] | None) -> str:
    """Any JSON object (`schema` None), or one valid against `schema` (checked)."""
    builder = GrammarBuilder()
    rule = builder.schema_rule(schema if schema is not None else {"type": "object"}, "json")
    return builder.grammar(rule)


def call_object_rules(
    builder: GrammarBuilder, tools: Iterable[tuple[str, Mapping[str, Any]]], arguments_key: str = "arguments"
) -> str:
    """A rule matching one call `{"name": "<tool>", "<arguments_key>": <its parameters>}` of any
    of `tools` (name, parameters schema), name first."""
    alternatives = []
    for i, (name, parameters) in enumerate(tools):
        schema = {
            "type": "object",
            "properties": {"name": {"const": name}, arguments_key: builder.resolved(parameters, f"tool{i}")},
            "required": ["name", arguments_key],
        }
        alternatives.append(builder.schema_rule(schema, f"call{i}", ("name", arguments_key), resolve=False))
    return "(" + " | ".join(alternatives) + ")"


def schema_valid(instance: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `instance` validates against a checked schema (the keywords `check_schema` lets
    through; formats are not asserted). For tests and the evaluation; the grammar guarantees it."""
    return _valid(instance, dict(schema), dict(schema))


def _valid(instance: Any, node: Any, root: dict) -> bool:  # noqa: C901 — one branch per keyword
    if node is True or node == {}:
        return True
    if node is False or not isinstance(node, dict):
        return False
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        if not _valid(instance, target, root):
            return False
    kind = node.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(instance, one) for one in kinds):
            return False
    if "const" in node and not _json_equal(instance, node["const"]):
        return False
    if "enum" in node and not any(_json_equal(instance, v) for v in node["enum"]):
        return False
    for key in ("anyOf", "oneOf"):
        if key in node:
            matches = sum(_valid(instance, sub, root) for sub in node[key])
            if matches == 0 or (key == "oneOf" and matches > 1):
                return False
    if isinstance(instance, str):
        if len(instance) < node.get("minLength", 0) or len(instance) > node.get("maxLength", len(instance)):
            return False
        if "pattern" in node and not re.search(node["pattern"], instance):
            return False
    if isinstance(instance, list):
        if len(instance) < node.get("minItems", 0) or len(instance) > node.get("maxItems", len(instance)):
            return False
        prefix = node.get("prefixItems", [])
        for i, item in enumerate(instance):
            sub = prefix[i] if i < len(prefix) else node.get("items", True)
            if not _valid(item, sub, root):
                return False
    if isinstance(instance, dict):
        properties = node.get("properties", {})
        if any(name not in instance for name in node.get("required", [])):
            return False
        additional = node.get("additionalProperties", True)
        for name, value in instance.items():
            if name in properties:
                if not _valid(value, properties[name], root):
                    return False
            elif additional is False or (isinstance(additional, dict) and not _valid(value, additional, root)):
                return False
    return True


def _is_type(instance: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(instance, int) and not isinstance(instance, bool) or (
            isinstance(instance, float) and instance.is_integer()
        )
    if kind == "number":
        return isinstance(instance, int | float) and not isinstance(instance, bool)
    return {
        "string": str,
        "boolean": bool,
        "null": type(None),
        "object": dict,
        "array": list,
    }[kind] is type(instance)


def _json_equal(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
