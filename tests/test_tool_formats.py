"""Each model family's tool format (lea_local/llm/tool_formats.py): which family a chat template
is, how the conversation's calls and results are rendered for it, how its call syntax is read
as it streams, and how the free phase of tool_choice "auto" finds a call's opener. The
templates here are condensed from the families' own (the constructs that matter kept)."""

from __future__ import annotations

import json

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from lea_local.llm.base import ChatMessage, ToolCall, ToolSpec
from lea_local.llm.tool_formats import (
    FORMATS,
    CallScanner,
    TriggerWatch,
    format_of,
    openai_tools,
    parse_calls,
    template_messages,
)

QWEN = """{%- if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}
# Tools
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>
For each function call, return <tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}{%- for message in messages %}{%- if message.role == "user" or (message.role == "assistant" and not message.tool_calls) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == "assistant" %}<|im_start|>assistant{% for tool_call in message.tool_calls %}{% set tool_call = tool_call.function %}
<tool_call>
{"name": "{{ tool_call.name }}", "arguments": {{ tool_call.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}{%- endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

MISTRAL = """{%- set user_messages = messages | selectattr("role", "equalto", "user") | list %}{{ bos_token }}
{%- for message in messages %}{%- if message.role == "user" %}{%- if tools is not none and tools is defined and message == user_messages[-1] %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]{{ message.content }}[/INST]
{%- elif message.tool_calls is defined and message.tool_calls %}[TOOL_CALLS][{% for tool_call in message.tool_calls %}{% set out = tool_call.function | tojson %}{{ out[:-1] }}{% if not tool_call.id is defined or tool_call.id | length != 9 %}{{ raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}{% endif %}, "id": "{{ tool_call.id }}"}{% if not loop.last %}, {% endif %}{% endfor %}]{{ eos_token }}
{%- elif message.role == "assistant" %}{{ message.content }}{{ eos_token }}
{%- elif message.role == "tool" %}{% if message.tool_call_id | length != 9 %}{{ raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}{% endif %}[TOOL_RESULTS]{"content": {{ message.content }}, "call_id": "{{ message.tool_call_id }}"}[/TOOL_RESULTS]
{%- elif message.role != "system" %}{{ raise_exception("Only user and assistant roles are supported!") }}{% endif %}{%- endfor %}"""

LLAMA = """{{- bos_token }}{%- if not tools is defined %}{%- set tools = none %}{%- endif %}<|start_header_id|>system<|end_header_id|>

{% if tools is not none %}Environment: ipython
{% endif %}<|eot_id|>{%- if tools is not none %}<|start_header_id|>user<|end_header_id|>

Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.{% for t in tools %}{{ t | tojson(indent=4) }}{% endfor %}{{ messages[0]['content'] }}<|eot_id|>{% set messages = messages[1:] %}{% endif %}
{%- for message in messages %}{%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}<|start_header_id|>{{ message.role }}<|end_header_id|>

{{ message.content }}<|eot_id|>{%- elif 'tool_calls' in message %}{%- set tool_call = message.tool_calls[0].function %}<|start_header_id|>assistant<|end_header_id|>

{"name": "{{ tool_call.name }}", "parameters": {{ tool_call.arguments | tojson }}}<|eot_id|>{%- else %}<|start_header_id|>ipython<|end_header_id|>

{{ message.content }}<|eot_id|>{%- endif %}{%- endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>

{% endif %}<|python_tag|>"""

SMOLLM = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GEOCODE = ToolSpec(
    "geocode_address",
    "Trouve l'adresse",
    {"type": "object", "properties": {"partial_address": {"type": "string"}}, "required": ["partial_address"]},
)
CONVERSATION = [
    ChatMessage("system", "Tu es Léa."),
    ChatMessage("user", "Le 5554 rue Saint-Denis."),
    ChatMessage(
        "assistant",
        "",
        tool_calls=(ToolCall("call_0123456789abcdef", "geocode_address", '{"partial_address": "5554 rue Saint-Denis"}'),),
    ),
    ChatMessage("tool", '{"address": "5554 rue Saint-Denis, Montréal"}', tool_call_id="call_0123456789abcdef"),
    ChatMessage("user", "Merci."),
]


def render(template: str, messages: list[ChatMessage], tools: list[ToolSpec] | None) -> str:
    fmt = format_of(template)
    formatter = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")
    shown = openai_tools(tools) if tools and fmt.template_knows_tools else None
    return formatter(messages=template_messages(messages, fmt, tools), tools=shown).prompt  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "family"),
    [(QWEN, "hermes"), (MISTRAL, "mistral"), (LLAMA, "llama3"), (SMOLLM, "generic")],
)
def test_the_family_is_read_from_the_template(template, family):
    assert format_of(template).family == family


def test_qwen_renders_tools_calls_and_results_in_its_own_syntax():
    prompt = render(QWEN, CONVERSATION, [GEOCODE])
    assert '"name": "geocode_address"' in prompt and "<tools>" in prompt
    assert '<tool_call>\n{"name": "geocode_address", "arguments": {"partial_address": "5554 rue Saint-Denis"}}' in prompt
    assert "<tool_response>\n{\"address\"" in prompt


def test_mistral_gets_nine_character_call_ids_consistently():
    prompt = render(MISTRAL, CONVERSATION, [GEOCODE])  # its template raises on any other id
    assert "[AVAILABLE_TOOLS]" in prompt and "[TOOL_CALLS][" in prompt
    call_id = FORMATS["mistral"].call_id("call_0123456789abcdef")
    assert len(call_id) == 9 and call_id.isalnum()
    assert f'"id": "{call_id}"' in prompt and f'"call_id": "{call_id}"' in prompt
    assert FORMATS["mistral"].call_id("abcDEF123") == "abcDEF123"  # already its kind: kept


def test_llama_renders_calls_with_parameters():
    prompt = render(LLAMA, CONVERSATION[1:], [GEOCODE])
    assert "Environment: ipython" in prompt
    assert '{"name": "geocode_address", "parameters": {"partial_address": "5554 rue Saint-Denis"}}' in prompt
    assert "<|start_header_id|>ipython<|end_header_id|>" in prompt


def test_generic_format_writes_an_instruction_and_the_calls_as_text():
    prompt = render(SMOLLM, CONVERSATION, [GEOCODE])
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nTu es Léa.") and "<tools>" in system
    assert json.dumps(openai_tools([GEOCODE])[0], ensure_ascii=False) in system
    assert "<tool_call>" in system  # how to call
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "geocode_address"' in prompt
    assert "<|im_start|>user\n<tool_response>\n" in prompt
    # Without tools (tool_choice "none"), the same conversation renders with no instruction.
    assert "<tools>" not in render(SMOLLM, CONVERSATION, None)


BODIES = {
    "hermes": '{"name": "a", "arguments": {"x": "}{\\"", "y": [1, {"z": null}]}}\n</tool_call>\n<tool_call>\n'
    '{"name": "b", "arguments": {}}\n</tool_call>',
    "generic": '{ "name": "a", "arguments": { "x": "}{\\"", "y": [1, {"z": null}] } }\n</tool_call>\n<tool_call>\n'
    '{"name": "b", "arguments": { } }\n</tool_call>',
    "mistral": '[{"name": "a", "arguments": {"x": "}{\\"", "y": [1, {"z": null}]}}, {"name": "b", "arguments": {}}]',
    "llama3": '{"name": "a", "parameters": {"x": "}{\\"", "y": [1, {"z": null}]}}',
}


@pytest.mark.parametrize("family", list(BODIES))
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_calls_stream_name_first_then_arguments_as_written(family, size):
    fmt = FORMATS[family]  # type: ignore[index]
    body = BODIES[family]
    scanner = CallScanner(fmt)
    events = [e for i in range(0, len(body), size) for e in scanner.feed(body[i : i + size])]
    names = [(e.index, e.name) for e in events if e.name is not None]
    joined: dict[int, str] = {}
    for e in events:
        joined[e.index] = joined.get(e.index, "") + e.arguments
    expected = parse_calls(body, fmt)
    assert [name for _, name in names] == [name for name, _ in expected] == (["a"] if family == "llama3" else ["a", "b"])
    assert [joined[i] for i in sorted(joined)] == [arguments for _, arguments in expected]
    first = expected[0][1]
    assert json.loads(first) == {"x": '}{"', "y": [1, {"z": None}]}
    assert first in body  # exactly the text generated
    # A call's name comes before any piece of its arguments.
    assert events.index(next(e for e in events if e.index == 0 and e.name)) == 0


def feed_all(watch: TriggerWatch, pieces: list[str]) -> bool:
    return any([watch.feed(piece) for piece in pieces])


def test_auto_free_phase_stops_at_the_opener_and_holds_back_its_beginning():
    sent: list[str] = []
    watch = TriggerWatch(FORMATS["hermes"], sent.append)
    assert feed_all(watch, ["Je ", "cherche <to", "ol_call>", "\n{"]) and watch.triggered
    assert "".join(sent) == watch.finish() == "Je cherche "
    # The beginning of an opener that turns out not to be one is text after all.
    sent.clear()
    watch = TriggerWatch(FORMATS["generic"], sent.append)
    assert not feed_all(watch, ["a <tool", "box> b"])
    assert watch.finish() == "".join(sent) == "a <toolbox> b"
    # Blanks before a call are not content.
    watch = TriggerWatch(FORMATS["hermes"], None)
    assert feed_all(watch, ["\n", " <tool_call>"]) and watch.finish() == ""


def test_llama_call_is_recognised_only_at_the_start():
    watch = TriggerWatch(FORMATS["llama3"], None)
    assert feed_all(watch, ["  ", '{"name"']) and watch.finish() == ""
    watch = TriggerWatch(FORMATS["llama3"], None)
    assert not feed_all(watch, ["Voici ", "{x}"]) and watch.finish() == "Voici {x}"


def test_a_control_token_opener_is_reported_without_text():
    watch = TriggerWatch(FORMATS["mistral"], None)
    assert not watch.feed("Bien.")
    assert watch.feed("") and watch.triggered and watch.finish() == "Bien."


@pytest.mark.parametrize(
    ("family", "pieces"),
    [
        ("hermes", ["```", "json\n{"]),
        ("hermes", ["{{", '"name"']),
        ("hermes", [" ", '{"name": "a"']),
        ("generic", ['{"', "name"]),
        ("mistral", ["[{", '"name"']),
    ],
)
def test_a_reply_that_begins_like_a_call_is_one(family, pieces):
    # How models also write calls (Qwen's fenced or doubled-brace JSON): constrained from there.
    sent: list[str] = []
    watch = TriggerWatch(FORMATS[family], sent.append)
    assert feed_all(watch, pieces) and watch.finish() == "" and sent == []


def test_a_reply_that_only_looks_like_an_opener_at_first_is_text():
    sent: list[str] = []
    watch = TriggerWatch(FORMATS["hermes"], sent.append)
    assert not feed_all(watch, ["`", "``python\nprint(1)"])
    assert watch.finish() == "".join(sent) == "```python\nprint(1)"
    # Later in a reply, only the family's own opener starts a call.
    watch = TriggerWatch(FORMATS["hermes"], None)
    assert not feed_all(watch, ["Voici : ", '{"name": "x"}'])
