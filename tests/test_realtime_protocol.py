"""/v1/realtime's protocol on the real server: the handshake (keys, dialects), the session's
configuration in both dialects, bad events answered with an `error` that names them (the socket
stays open), conversation items, and a text response. The official `openai` SDK speaks GA; a raw
`websockets` client speaks beta, as ImmoAssist does."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from openai import AsyncOpenAI

from tests.conftest import db_rows
from tests.realtime_client import (
    ask_text,
    beta_headers,
    beta_session,
    create_item,
    events_until,
    next_event,
    of_type,
    realtime_prompts,
    refused_handshake,
    respond,
    say_text,
    send,
    text_of,
    update_session,
    user_text,
)
from tests.server import API_KEY
from tests.waiting import wait_for


def sdk(server, key: str = API_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_wrong_key_is_a_401_at_the_handshake(server, header):
    value = "Bearer not-the-key-0000000000" if header == "Authorization" else "not-the-key-0000000000"
    response = asyncio.run(refused_handshake(server, headers={header: value}))
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "invalid_api_key"


def test_no_key_is_a_401_and_either_header_opens_a_session(server):
    async def run() -> list[str]:
        assert (await refused_handshake(server)).status_code == 401
        kinds = []
        for header in ("Authorization", "X-API-Key"):
            async with beta_session(server, header=header) as (_, created):
                kinds.append(created["type"])
        return kinds

    assert asyncio.run(run()) == ["session.created", "session.created"]


def test_the_sdk_with_a_wrong_key_is_refused(server):
    async def attempt() -> None:
        async with sdk(server, "not-the-key-0000000000").realtime.connect(model="gpt-realtime") as connection:
            await connection.recv()

    with pytest.raises(Exception) as refused:
        asyncio.run(attempt())
    assert "401" in str(refused.value)


def test_a_plain_get_is_told_to_upgrade(server):
    r = httpx.get(f"{server.url}/v1/realtime", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 426
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_ga_session_through_the_official_sdk(server):
    async def run():
        async with sdk(server).realtime.connect(model="gpt-realtime") as connection:
            created = await connection.recv()
            await connection.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Réponds en une phrase.",
                    "output_modalities": ["text"],
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcmu"},
                            "turn_detection": None,
                            "transcription": {"model": "whisper-1", "language": "fr"},
                        },
                        "output": {"format": {"type": "audio/pcma"}, "voice": "shimmer"},
                    },
                }
            )
            updated = await connection.recv()
            return created, updated

    created, updated = asyncio.run(run())
    assert created.type == "session.created"
    session = created.session.model_dump()
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"]["language"] == "fr"
    assert updated.type == "session.updated"
    after = updated.session.model_dump()
    assert after["instructions"] == "Réponds en une phrase."
    assert after["output_modalities"] == ["text"]
    assert after["audio"]["input"]["format"]["type"] == "audio/pcmu"
    assert after["audio"]["input"]["turn_detection"] is None
    assert after["audio"]["output"]["format"]["type"] == "audio/pcma"
    assert after["audio"]["output"]["voice"] == "shimmer"


def test_beta_session_is_flat_and_takes_immoassists_update(server):
    async def run():
        async with beta_session(server) as (ws, created):
            await send(
                ws,
                {
                    "event_id": "evt_1",
                    "type": "session.update",
                    "session": {
                        "modalities": ["text", "audio"],
                        "voice": "shimmer",
                        "input_audio_format": "pcm16",
                        "output_audio_format": "g711_ulaw",
                        "input_audio_noise_reduction": {"type": "near_field"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.6,
                            "prefix_padding_ms": 300,
                            "silence_duration_ms": 1200,
                        },
                        "tools": [{"type": "function", "name": "get_draft", "description": "", "parameters": {}}],
                        "tool_choice": "auto",
                        "parallel_tool_calls": False,
                        "temperature": 0.7,
                        "input_audio_transcription": {"model": "whisper-1", "language": "fr"},
                    },
                },
            )
            return created, await next_event(ws)

    created, updated = asyncio.run(run())
    session = created["session"]
    assert session["object"] == "realtime.session"
    assert session["modalities"] == ["text", "audio"]
    assert session["input_audio_format"] == "pcm16" and session["output_audio_format"] == "pcm16"
    assert session["turn_detection"]["type"] == "server_vad"
    assert updated["type"] == "session.updated"
    after = updated["session"]
    assert after["output_audio_format"] == "g711_ulaw"
    assert after["turn_detection"]["threshold"] == 0.6
    assert after["turn_detection"]["silence_duration_ms"] == 1200
    assert after["turn_detection"]["create_response"] is True
    assert after["temperature"] == 0.7
    assert after["tools"][0]["name"] == "get_draft"
    assert session["parallel_tool_calls"] is True and after["parallel_tool_calls"] is False
    assert after["input_audio_noise_reduction"] == {"type": "near_field"}


BAD_EVENTS = [
    ("not json", None, "invalid_json", None),
    (json.dumps([1, 2]), None, "invalid_event", None),
    (json.dumps({"event_id": "e1", "type": "conversation.frobnicate"}), "e1", "invalid_value", "type"),
    (json.dumps({"event_id": "e2"}), "e2", "missing_required_parameter", "type"),
    (
        json.dumps({"event_id": "e3", "type": "session.update", "session": {"turn_detection": {"threshold": 7}}}),
        "e3",
        "invalid_value",
        "session.turn_detection.threshold",
    ),
    (
        json.dumps({"event_id": "e4", "type": "session.update", "session": {"input_audio_format": "mp3"}}),
        "e4",
        "invalid_value",
        "session.input_audio_format",
    ),
    (
        json.dumps({"event_id": "e5", "type": "input_audio_buffer.append", "audio": "***"}),
        "e5",
        "invalid_audio",
        "audio",
    ),
    (
        json.dumps({"event_id": "e6", "type": "input_audio_buffer.append", "audio": "AAAA"}),
        "e6",
        "invalid_audio",
        "audio",
    ),
    (
        json.dumps({"event_id": "e7", "type": "input_audio_buffer.commit"}),
        "e7",
        "input_audio_buffer_commit_empty",
        None,
    ),
    (json.dumps({"event_id": "e8", "type": "response.cancel"}), "e8", "response_cancel_not_active", None),
    (
        json.dumps({"event_id": "e9", "type": "conversation.item.delete", "item_id": "nope"}),
        "e9",
        "item_not_found",
        "item_id",
    ),
    (
        json.dumps(
            {
                "event_id": "e10",
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_image"}]},
            }
        ),
        "e10",
        "invalid_value",
        "item.content[0].type",
    ),
    (
        json.dumps({"event_id": "e11", "type": "response.create", "response": {"modalities": ["video"]}}),
        "e11",
        "invalid_value",
        "response.modalities",
    ),
]


def test_bad_events_get_an_error_naming_them_and_the_session_goes_on(server):
    async def run():
        answers = []
        async with beta_session(server) as (ws, _):
            for raw, *_ in BAD_EVENTS:
                await ws.send(raw)
                answers.append(await next_event(ws))
            # Still open and serving: a valid event is answered as usual.
            await send(ws, {"type": "session.update", "session": {"instructions": "encore là"}})
            answers.append(await next_event(ws))
        return answers

    answers = asyncio.run(run())
    for (raw, event_id, code, param), answer in zip(BAD_EVENTS, answers, strict=False):
        assert answer["type"] == "error", (raw, answer)
        assert answer["error"]["event_id"] == event_id, (raw, answer)
        assert answer["error"]["code"] == code, (raw, answer)
        assert answer["error"]["param"] == param, (raw, answer)
        assert answer["error"]["message"]
    assert answers[-1]["type"] == "session.updated"
    assert answers[-1]["session"]["instructions"] == "encore là"


def test_items_are_created_and_deleted_and_answered_in_text(server):
    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, turn_detection=None)
            [created] = await create_item(ws, user_text("Oublie ceci.", id="item_gone"))  # its one event: the next
            await send(ws, {"type": "conversation.item.delete", "item_id": "item_gone"})
            deleted = await next_event(ws)
            events = await ask_text(ws, "Bonjour, qui es-tu ?", modalities=["text"])
            return created, deleted, events

    created, deleted, events = asyncio.run(run())
    assert created["type"] == "conversation.item.created"
    assert created["item"]["id"] == "item_gone" and created["item"]["content"][0]["text"] == "Oublie ceci."
    assert deleted == {**deleted, "type": "conversation.item.deleted", "item_id": "item_gone"}
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    assert kinds.index("response.output_item.added") < kinds.index("response.content_part.added")
    assert kinds.index("response.content_part.added") < kinds.index("response.text.delta")
    assert "response.audio.delta" not in kinds
    text = text_of(events)
    assert text.strip()
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["role"] == "assistant"
    assert done["output"][0]["content"][0] == {"type": "text", "text": text}
    assert done["usage"]["output_tokens"] > 0 and done["usage"]["input_tokens"] > 0
    assert next(e for e in events if e["type"] == "response.text.done")["text"] == text


def test_a_second_response_while_one_runs_is_an_error_and_cancel_ends_it(server):
    async def run():
        async with beta_session(server) as (ws, _):
            await say_text(ws, "Décris une maison.")
            await send(ws, {"type": "response.create"})
            await send(ws, {"event_id": "again", "type": "response.create"})
            await send(ws, {"type": "response.cancel"})
            return await events_until(ws, of_type("response.done"))

    events = asyncio.run(run())
    error = next(e for e in events if e["type"] == "error")
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert error["error"]["event_id"] == "again"
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "client_cancelled"


def closed(server, session: str) -> bool:
    """Whether the server is done with this session (its turns stored: logged after)."""
    return any(e.get("event") == "realtime.close" and e.get("session") == session for e in server.log_events())


def test_a_session_is_a_stored_conversation_the_text_routes_continue(server):
    session_id = f"rt-{uuid.uuid4()}"

    async def turn(text: str) -> tuple[str, list[dict]]:
        async with beta_session(server, query=f"model=gpt-realtime&session_id={session_id}") as (ws, created):
            return created["session"]["id"], await ask_text(ws, text, modalities=["text"])

    first, events = asyncio.run(turn("Je cherche un condo à Laval."))
    # The session's turns are stored before it ends (its close is logged after).
    wait_for(lambda: closed(server, first), "the session closed", while_possible=lambda: server.process.poll() is None)
    reply = events[-1]["response"]["output"][0]["content"][0]["text"]
    conversations = [c for c in db_rows(server.data_dir)["conversations"] if c[1] == session_id]
    assert len(conversations) == 1
    conversation_id = conversations[0][0]
    messages = [m for m in db_rows(server.data_dir)["messages"] if m[1] == conversation_id]
    assert [(m[2], m[3]) for m in messages] == [("user", "Je cherche un condo à Laval."), ("assistant", reply.strip())]

    # The text route continues it…
    with server.client() as client:
        r = server.chat(client, "Quel budget faut-il prévoir ?", session_id=session_id)
    assert r.status_code == 200, r.text
    assert r.json()["conversation_id"] == conversation_id
    # …and a new realtime session with the same session_id starts from all of it.
    second, _ = asyncio.run(turn("Merci, et pour Longueuil ?"))
    wait_for(lambda: closed(server, second), "the session closed", while_possible=lambda: server.process.poll() is None)
    prompts = realtime_prompts(server)
    assert "Je cherche un condo à Laval." in prompts[-1] and "Quel budget faut-il prévoir ?" in prompts[-1]
    messages = [m for m in db_rows(server.data_dir)["messages"] if m[1] == conversation_id]
    assert [m[2] for m in messages] == ["user", "assistant"] * 3
    # Erasure covers it like any conversation.
    with server.client() as client:
        r = client.post("/api/external/agent/erase", json={"session_id": session_id}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.text
    assert not [c for c in db_rows(server.data_dir)["conversations"] if c[1] == session_id]


def test_a_bad_session_id_is_refused_at_the_handshake(server):
    attempt = refused_handshake(server, headers=beta_headers(), query="model=x&session_id=" + "a" * 200)
    assert asyncio.run(attempt).status_code == 400


TOOLS = [
    {
        "type": "function",
        "name": "get_draft",
        "description": "Le brouillon de promesse d'achat en cours",
        "parameters": {},
    },
    {
        "type": "function",
        "name": "search_listings",
        "description": "Cherche des propriétés à vendre",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "max_price": {"type": "integer"}},
            "required": ["city", "max_price"],
        },
    },
]


@pytest.mark.slow
def test_a_tool_round_trip(server):
    """Léa calls a tool mid-conversation (its arguments streamed, then valid against the
    schema); the client answers with the call's output and asks again; Léa answers from it."""

    async def run():
        async with beta_session(server) as (ws, _):
            await update_session(ws, tools=TOOLS, tool_choice="auto", turn_detection=None)
            called = await ask_text(
                ws,
                "Trouve-moi une maison à Laval sous 500 000 $.",
                modalities=["text"],
                tool_choice={"type": "function", "name": "search_listings"},
            )
            call = called[-1]["response"]["output"][-1]
            results = {"résultats": [{"adresse": "12 rue des Érables, Laval", "prix": 475000}]}
            output = json.dumps(results, ensure_ascii=False)
            await create_item(ws, {"type": "function_call_output", "call_id": call["call_id"], "output": output})
            answered = await respond(ws, modalities=["text"], tool_choice="none")
            return called, answered

    called, answered = asyncio.run(run())
    kinds = [e["type"] for e in called]
    added = next(
        e for e in called if e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call"
    )
    assert added["item"]["name"] == "search_listings"
    done = next(e for e in called if e["type"] == "response.function_call_arguments.done")
    assert kinds.index("response.function_call_arguments.delta") < kinds.index("response.function_call_arguments.done")
    streamed = text_of(called, "response.function_call_arguments.delta")
    assert streamed == done["arguments"]
    arguments = json.loads(done["arguments"])
    assert isinstance(arguments["city"], str) and isinstance(arguments["max_price"], int)
    assert done["name"] == "search_listings" and done["call_id"] == added["item"]["call_id"]
    response = called[-1]["response"]
    assert response["status"] == "completed"
    call = response["output"][-1]
    assert (
        call["type"] == "function_call"
        and call["call_id"] == done["call_id"]
        and call["arguments"] == done["arguments"]
    )
    # The second answer is text, written with the tool's output in its prompt.
    assert answered[-1]["response"]["status"] == "completed"
    assert answered[-1]["response"]["output"][0]["type"] == "message"
    assert text_of(answered).strip()
    prompts = realtime_prompts(server)
    assert any("12 rue des Érables" in m for m in prompts[-1])


def test_a_tool_the_server_cannot_enforce_is_an_error(server):
    async def run():
        async with beta_session(server) as (ws, _):
            bad = {"type": "function", "name": "bad name!", "parameters": {}}
            await send(ws, {"event_id": "t1", "type": "session.update", "session": {"tools": [bad]}})
            first = await next_event(ws)
            await send(
                ws,
                {
                    "event_id": "t2",
                    "type": "session.update",
                    "session": {"tool_choice": {"type": "function", "name": "nope"}},
                },
            )
            return first, await next_event(ws)

    first, second = asyncio.run(run())
    assert first["error"]["event_id"] == "t1" and first["error"]["param"] == "session.tools[0].name"
    assert second["error"]["event_id"] == "t2" and second["error"]["param"] == "tool_choice"


def test_an_out_of_band_response_with_its_own_instructions(server):
    """`conversation: "none"`: an answer that stays out of the conversation (a classification,
    a summary), written under the response's own instructions; its metadata comes back."""

    async def run():
        async with beta_session(server) as (ws, _):
            events = await ask_text(
                ws,
                "Je veux vendre mon duplex.",
                conversation="none",
                modalities=["text"],
                instructions="Classe la demande : vente, achat ou location. Un seul mot.",
                metadata={"purpose": "intent"},
            )
            answer = events[-1]["response"]["output"][0]
            await send(ws, {"event_id": "where", "type": "conversation.item.retrieve", "item_id": answer["id"]})
            events.append(await next_event(ws))
            return events

    events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert "conversation.item.created" not in kinds  # the answer is not added to the conversation
    done = events[-2]["response"]
    assert done["status"] == "completed"
    assert done["conversation_id"] is None
    assert done["metadata"] == {"purpose": "intent"}
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "item_not_found"
    prompts = realtime_prompts(server)
    assert prompts[-1][0] == "Classe la demande : vente, achat ou location. Un seul mot."
    assert prompts[-1][-1] == "Je veux vendre mon duplex."


def test_tool_choice_and_parallel_calls_reach_the_engine():
    """What a session's tools become for the chat engine (no server needed)."""
    from lea_local.llm.base import ToolUse
    from lea_local.pipeline.realtime.config import ConfigError, tool_use

    assert tool_use([], "auto") is None and tool_use(TOOLS, "none") is None
    auto = tool_use(TOOLS, "auto")
    assert isinstance(auto, ToolUse) and auto.mode == "auto" and auto.parallel
    assert [t.name for t in auto.tools] == ["get_draft", "search_listings"]
    assert auto.tools[0].parameters == {"type": "object", "properties": {}}  # ImmoAssist's `{}`
    assert tool_use(TOOLS, "required", parallel=False).parallel is False
    named = tool_use(TOOLS, {"type": "function", "name": "get_draft"})
    assert named.mode == "named" and named.name == "get_draft" and not named.parallel
    with pytest.raises(ConfigError):
        tool_use([], "required")


def test_a_call_cut_off_by_a_cancel_stays_out_of_the_prompt():
    from lea_local.pipeline.realtime.items import Item

    whole = Item("item_1", "function_call", call_id="call_1", name="get_draft", arguments="{}")
    cut = Item("item_2", "function_call", call_id="call_2", name="search", arguments='{"ci', status="incomplete")
    assert whole.chat_message().tool_calls[0].arguments == "{}"
    assert cut.chat_message() is None
