"""A realtime session's memory against the store, on the real server over a real websocket: a
truncation after the turn was stored cuts the stored reply too; an erasure while a session is
open ends it, and nothing of it comes back (told by the erasure route, or found at its next write
when the erasure happened where it could not be told); without barge-in, a turn heard while Léa
answers is answered once she is done. And the store's side of it, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from websockets.exceptions import ConnectionClosed

from lea_local.store.conversations import ConversationNotFound, ConversationStore, TurnRecord
from lea_local.store.database import utcnow
from tests.audio import CLIP
from tests.conftest import db_query, db_rows
from tests.realtime_client import (
    ask_text,
    beta_session,
    events_until,
    next_event,
    of_type,
    pcm,
    say_text,
    send,
    silence_pcm,
    start_response,
    stream_audio,
    update_session,
)
from tests.server import API_KEY
from tests.waiting import wait_for, wait_for_async

LONG_ANSWER = "Décris en détail une belle maison de campagne avec jardin."


def logged(server, event: str, session: str, **fields) -> bool:
    return any(
        e.get("event") == event and e.get("session") == session and all(e.get(k) == v for k, v in fields.items())
        for e in server.log_events()
    )


def running(server) -> bool:
    return server.process.poll() is None


async def stored(server, session: str) -> None:
    """Until the session's last answered turn is in the store (logged once written)."""
    await wait_for_async(
        lambda: logged(server, "realtime.stored", session, stored=True),
        "the turn stored",
        while_possible=lambda: running(server),
    )


def wait_closed(server, session: str) -> None:
    """Until the server is done with the session: its writes to the store are over."""
    wait_for(
        lambda: logged(server, "realtime.close", session), "the session closed", while_possible=lambda: running(server)
    )


def session_messages(server, session_id: str) -> list[tuple[str, str]]:
    return [
        (role, content)
        for role, content in db_query(
            server,
            "SELECT m.role, m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.session_id = :session ORDER BY m.id",
            session=session_id,
        )
    ]


async def until_closed(ws) -> tuple[list[dict], ConnectionClosed]:
    events = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            events.append(await next_event(ws))
    return events, closed.value


# --- truncation -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_truncation_after_the_turn_was_stored_cuts_the_stored_reply(store_server):
    """The broker stops Léa's playback after `response.done` (the turn is stored by then) and
    truncates her answer where it stopped: the stored reply becomes what was heard."""
    server = store_server
    session_id = f"rt-{uuid.uuid4()}"

    async def run():
        async with beta_session(server, query=f"model=x&session_id={session_id}") as (ws, created):
            session = created["session"]["id"]
            done = (await ask_text(ws, LONG_ANSWER))[-1]["response"]  # spoken: the session's default
            await stored(server, session)
            whole = session_messages(server, session_id)
            answer = done["output"][0]
            await send(
                ws,
                {"type": "conversation.item.truncate", "item_id": answer["id"], "content_index": 0, "audio_end_ms": 1},
            )
            await events_until(ws, of_type("conversation.item.truncated"))
            await send(ws, {"type": "conversation.item.retrieve", "item_id": answer["id"]})
            kept = (await events_until(ws, of_type("conversation.item.retrieved")))[-1]["item"]
            return session, answer, whole, kept

    session, answer, whole, kept = asyncio.run(run())
    wait_closed(server, session)
    spoken = answer["content"][0]["transcript"].strip()
    heard = kept["content"][0]["transcript"].strip()
    assert heard and len(heard) < len(spoken) and spoken.startswith(heard), (heard, spoken)
    assert whole == [("user", LONG_ANSWER), ("assistant", spoken)]  # stored whole first…
    assert session_messages(server, session_id) == [("user", LONG_ANSWER), ("assistant", heard)]  # …then cut


# --- erasure --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("by", ["session_id", "user_id"])
def test_an_erasure_ends_the_open_session_and_nothing_of_it_comes_back(store_server, by):
    """A turn stored, a second one under way, then the session's (or its user's) erasure: the
    session says so and closes; neither turn is in the store afterwards, nor written back."""
    server = store_server
    session_id, user_id = f"rt-{uuid.uuid4()}", f"broker-{uuid.uuid4()}"

    def erase() -> int:
        with server.client() as client:
            body = {"session_id": session_id} if by == "session_id" else {"user_id": user_id}
            return client.post("/api/external/agent/erase", json=body, headers={"X-API-Key": API_KEY}).status_code

    async def run():
        async with beta_session(server, query=f"model=x&session_id={session_id}&user_id={user_id}") as (ws, created):
            session = created["session"]["id"]
            await ask_text(ws, "Je cherche un condo à Laval.", modalities=["text"])
            await stored(server, session)
            assert [role for role, _ in session_messages(server, session_id)] == ["user", "assistant"]
            await say_text(ws, LONG_ANSWER)
            await start_response(ws, modalities=["text"])
            await events_until(ws, of_type("response.text.delta"))
            status = await asyncio.to_thread(erase)
            events, closed = await until_closed(ws)
            return session, status, events, closed

    session, status, events, closed = asyncio.run(run())
    assert status == 200
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["conversation_erased"], events
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    wait_closed(server, session)
    assert session_messages(server, session_id) == []
    assert not [c for c in db_rows(server)["conversations"] if c[1] == session_id]


@pytest.mark.slow
def test_an_erasure_the_session_was_not_told_of_ends_it_at_its_next_write(store_server):
    """The conversation erased where the session could not be told (here: straight in the
    database, as another replica's erasure would be): its next turn is not stored, the session
    ends, and the erased turn does not come back."""
    server = store_server
    session_id = f"rt-{uuid.uuid4()}"

    async def run():
        async with beta_session(server, query=f"model=x&session_id={session_id}") as (ws, created):
            session = created["session"]["id"]
            await ask_text(ws, "Je cherche un condo à Laval.", modalities=["text"])
            await stored(server, session)
            mine = "SELECT id FROM conversations WHERE session_id = :session"
            db_query(server, f"DELETE FROM messages WHERE conversation_id IN ({mine})", session=session_id)
            db_query(server, "DELETE FROM conversations WHERE session_id = :session", session=session_id)
            await say_text(ws, "Et à Longueuil ?")
            await start_response(ws, modalities=["text"])
            events, closed = await until_closed(ws)
            return session, events, closed

    session, events, closed = asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert "response.done" in kinds  # the turn was answered…
    error = events[kinds.index("error")]["error"]
    assert error["code"] == "conversation_erased" and kinds.index("error") > kinds.index("response.done")
    assert closed.rcvd is not None and closed.rcvd.code == 1008  # …then the session ended
    wait_closed(server, session)
    assert session_messages(server, session_id) == []


# --- a turn heard while Léa answers, without barge-in -----------------------------------------


@pytest.mark.slow
def test_without_barge_in_a_turn_heard_while_lea_answers_is_answered_next(make_server):
    """`interrupt_response` false: the broker speaks over Léa's answer, which goes on; his turn
    is heard meanwhile, and answered as soon as her answer ends (here: the client cancels it)."""
    # At temperature 0 her answer is the same every run, and long enough that his turn is heard
    # before it ends, on a slow machine as on a fast one (both engines slow alike).
    lea = make_server({"LEA_LOG_CONTENT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "512", "LEA_LLM_TEMPERATURE": "0"})
    speech = pcm(CLIP) + silence_pcm(1.5)

    async def run():
        async with beta_session(lea) as (ws, _):
            await update_session(
                ws,
                turn_detection={"type": "server_vad", "interrupt_response": False},
                input_audio_transcription={"model": "whisper-1", "language": "fr"},
            )
            await say_text(ws, LONG_ANSWER)
            await start_response(ws)
            events = await events_until(ws, of_type("response.audio_transcript.delta"))
            first = next(e for e in events if e["type"] == "response.created")["response"]["id"]
            await stream_audio(ws, speech)  # the broker talks over her
            await events_until(ws, of_type("conversation.item.input_audio_transcription.completed"), events)
            # Her answer would go on for long: stopped here (if it has not ended on its own).
            await send(ws, {"type": "response.cancel", "response_id": first})
            await events_until(ws, lambda e: e["type"] == "response.done" and e["response"]["id"] != first, events)
            return first, events

    first, events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    heard = events[kinds.index("conversation.item.input_audio_transcription.completed")]
    dones = [i for i, e in enumerate(events) if e["type"] == "response.done"]
    first_done, second_done = events[dones[0]]["response"], events[dones[-1]]["response"]
    assert first_done["id"] == first
    # Her answer was not cut by his speech (no barge-in), and his turn was heard while it ran.
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(heard["type"]) < dones[0]
    assert first_done["status_details"] is None or first_done["status_details"].get("reason") != "turn_detected"
    # His turn gets its own answer, after hers.
    created = [i for i, e in enumerate(events) if e["type"] == "response.created"]
    assert len(created) == 2 and dones[0] < created[1] < dones[-1]
    assert second_done["status"] == "completed"
    prompts = [e["prompt"] for e in lea.log_events() if e.get("event") == "llm.prompt" and e.get("api") == "realtime"]
    assert heard["transcript"].strip() in prompts[1][-1]  # the second prompt: his turn, last


# --- the store ------------------------------------------------------------------------------


def _turn(session: str, conversation: int | None, user: str, reply: str, **fields) -> TurnRecord:
    return TurnRecord(session, conversation, user, utcnow(), reply, utcnow(), "m", 1, 1, **fields)


def test_the_store_rewrites_a_reply_and_refuses_a_turn_built_on_erased_messages(engine):
    store = ConversationStore(engine)
    first = store.record_turn_messages(_turn("s", None, "Bonjour.", "Bonjour, je suis Léa. Que cherchez-vous ?"))
    store.replace_reply("s", first.reply_id, "Bonjour, je suis Léa.")
    history = store.context_for("s", first.conversation_id).history
    assert [(m.id, m.content) for m in history] == [
        (first.user_message_id, "Bonjour."),
        (first.reply_id, "Bonjour, je suis Léa."),
    ]
    with pytest.raises(ConversationNotFound):  # another session's reply
        store.replace_reply("other", first.reply_id, "")
    with pytest.raises(ConversationNotFound):  # a user message is not a reply
        store.replace_reply("s", first.user_message_id, "")

    # Another user's turn in the same conversation, then that user's erasure: a writer that
    # holds those messages stores nothing more; one that does not goes on.
    other = store.record_turn_messages(_turn("s", first.conversation_id, "Moi aussi.", "D'accord.", user_id="u2"))
    store.erase(user_id="u2")
    held = (first.user_message_id, first.reply_id, other.user_message_id, other.reply_id)
    with pytest.raises(ConversationNotFound):
        store.record_turn(_turn("s", first.conversation_id, "Et ensuite ?", "Voici.", held_messages=held))
    with pytest.raises(ConversationNotFound):
        store.replace_reply("s", other.reply_id, "")
    assert [m.content for m in store.context_for("s", first.conversation_id).history] == [
        "Bonjour.",
        "Bonjour, je suis Léa.",
    ]
    later = store.record_turn_messages(
        _turn("s", first.conversation_id, "Et ensuite ?", "Voici.", held_messages=held[:2])
    )
    assert later.conversation_id == first.conversation_id
    assert store.counts() == (1, 4)
