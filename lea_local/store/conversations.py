"""Durable conversation memory, in any database SQLAlchemy reaches (SQLite file by default).

A turn (the user's message and Léa's reply) is written in one transaction: after a crash the
database holds whole turns or nothing of them. Who spoke is recorded per turn, on the user's
message, so that erasing a user removes exactly their turns. The schema is created and upgraded
by Alembic migrations (`lea_local/store/migrations/`) when the store opens.

On PostgreSQL (`postgresql+psycopg://…`) several lea-local processes share one store: the
session locks (`session_locks`) then live in the database too. A database that cannot be
reached raises StoreUnavailable (`database.outage_is_unavailable`; the API answers 503) as soon as
the connection is refused or times out, and the next call reconnects by itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column, sessionmaker

from lea_local.runtime import startup
from lea_local.store.database import CONNECT_TIMEOUT_SECONDS, create_database_engine, is_outage, outage_is_unavailable
from lea_local.store.schema import upgrade_schema

if TYPE_CHECKING:
    from lea_local.store.session_locks import SessionLocks

log = logging.getLogger(__name__)

# Messages read per query when the newest history is loaded backwards.
HISTORY_PAGE = 32


class Base(DeclarativeBase):
    pass


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[str | None] = mapped_column(String(256), index=True)
    """Who spoke first with a user id (both fields from that one turn); per-turn speakers are on
    the messages."""
    user_email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_order", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str | None] = mapped_column(String(256))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    audio_seconds: Mapped[float | None] = mapped_column(Float)
    """For a spoken user message: the recording's duration."""
    audio_file: Mapped[str | None] = mapped_column(String(64))
    """For a spoken reply: its file name in the TTS audio store (erased with the conversation)."""
    user_id: Mapped[str | None] = mapped_column(String(256), index=True)
    """On a user message: who spoke this turn (None for an anonymous turn)."""
    user_email: Mapped[str | None] = mapped_column(String(320))


@dataclass(frozen=True)
class Erased:
    conversations: int
    messages: int
    audio_files: list[str]

    def __add__(self, other: Erased) -> Erased:
        return Erased(
            self.conversations + other.conversations,
            self.messages + other.messages,
            self.audio_files + other.audio_files,
        )


class ConversationNotFound(Exception):
    """No such conversation for this session (or at all): the caller answers 404."""


class DatabaseUnreachable(RuntimeError):
    """At start-up: the conversation database could not be reached within the wait."""


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str
    created_at: datetime
    id: int = 0


@dataclass(frozen=True)
class ConversationContext:
    """Where a turn goes: an existing conversation (with its newest history) or a new one."""

    session_id: str
    conversation_id: int | None
    history: tuple[StoredMessage, ...]
    """The newest messages, oldest first: all of them, or (see `history_complete`) enough of
    the newest to fill the character bound `context_for` was given."""
    history_complete: bool = True
    """Whether `history` starts at the conversation's first message (else `older_messages`
    reads further back)."""


@dataclass(frozen=True)
class TurnRecord:
    session_id: str
    conversation_id: int | None
    user_message: str
    user_at: datetime
    reply: str
    reply_at: datetime
    model: str
    prompt_tokens: int
    completion_tokens: int
    user_id: str | None = None
    user_email: str | None = None
    audio_seconds: float | None = None
    audio_file: str | None = None
    held_messages: tuple[int, ...] = ()
    """Stored messages of this conversation that the writer holds in memory and built the turn
    on (a live realtime session's history): if one of them is gone (erased meanwhile, possibly
    by another replica), nothing is stored and ConversationNotFound is raised."""


@dataclass(frozen=True)
class StoredTurn:
    """Where a turn went: its conversation and the ids of its two messages."""

    conversation_id: int
    user_message_id: int
    reply_id: int


def _stored(rows) -> list[StoredMessage]:
    return [StoredMessage(role, content, created_at, id) for id, role, content, created_at in rows]


class ConversationStore:
    """Blocking API: call it from a worker thread, not the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        upgrade_schema(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, wait_seconds: float = 0.0) -> ConversationStore:
        """The store at `url`, its schema upgraded. A database server that cannot be reached yet
        (PostgreSQL still starting, or restarting) is waited for up to `wait_seconds`, then
        DatabaseUnreachable: replicas may start before their database."""
        engine = create_database_engine(url)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return cls(engine)
            except sa_exc.SQLAlchemyError as exc:
                if not is_outage(exc):
                    engine.dispose()
                    raise
                # The driver's first line names the host and the failure, never the password.
                reason = str(getattr(exc, "orig", None) or exc).strip().split("\n")[0]
                shown = engine.url.render_as_string(hide_password=True)
                if time.monotonic() >= deadline:
                    engine.dispose()
                    raise DatabaseUnreachable(
                        f"the conversation database {shown} cannot be reached (waited {wait_seconds:g} s): {reason}"
                    ) from None
                log.warning("waiting for the conversation database %s: %s", shown, reason)
                try:
                    startup.pause(1.0, "the conversation database")  # at once on SIGTERM
                except startup.StartupStopped:
                    engine.dispose()
                    raise

    def close(self) -> None:
        self.engine.dispose()

    def session_locks(self) -> SessionLocks:
        """The session locks that fit this database: in the database when several processes
        may share it (PostgreSQL), in this process otherwise."""
        from lea_local.store.session_locks import InProcessSessionLocks, PostgresSessionLocks

        if self.engine.dialect.name != "postgresql":
            return InProcessSessionLocks()
        url = self.engine.url
        timeout = float(url.query.get("connect_timeout", CONNECT_TIMEOUT_SECONDS))  # type: ignore[arg-type]
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return PostgresSessionLocks(conninfo, timeout)

    @outage_is_unavailable
    def session_of(self, conversation_id: int) -> str:
        """The session a conversation belongs to (ConversationNotFound if none)."""
        with self._sessions() as db:
            row = db.get(ConversationRow, conversation_id)
            if row is None:
                raise ConversationNotFound(f"conversation {conversation_id} not found")
            return row.session_id

    @outage_is_unavailable
    def context_for(
        self, session_id: str, conversation_id: int | None, history_chars: int | None = None
    ) -> ConversationContext:
        """The conversation a turn continues, with its history oldest first.

        - `conversation_id` given: it must exist and belong to `session_id`, else
          ConversationNotFound (another session's conversation looks exactly like a missing one);
        - otherwise the session's most recent conversation, or a new one (id None until stored).

        `history_chars`: read only the newest messages, until their texts hold at least this
        many characters (None: the whole history). The cost of a turn then no longer grows with
        the length of its conversation.
        """
        with self._sessions() as db:
            if conversation_id is not None:
                row = db.get(ConversationRow, conversation_id)
                if row is None or row.session_id != session_id:
                    raise ConversationNotFound(f"conversation {conversation_id} not found for this session")
            else:
                row = db.scalars(
                    select(ConversationRow)
                    .where(ConversationRow.session_id == session_id)
                    .order_by(ConversationRow.updated_at.desc(), ConversationRow.id.desc())
                    .limit(1)
                ).first()
                if row is None:
                    return ConversationContext(session_id, None, ())
            if history_chars is None:
                rows = db.execute(
                    select(MessageRow.id, MessageRow.role, MessageRow.content, MessageRow.created_at)
                    .where(MessageRow.conversation_id == row.id)
                    .order_by(MessageRow.id)
                ).all()
                return ConversationContext(session_id, row.id, tuple(_stored(rows)))
            history, complete = self._newest(db, row.id, None, history_chars)
            return ConversationContext(session_id, row.id, history, complete)

    @outage_is_unavailable
    def older_messages(
        self, conversation_id: int, before_id: int, min_chars: int
    ) -> tuple[tuple[StoredMessage, ...], bool]:
        """Messages older than `before_id`, newest first read, until their texts hold at least
        `min_chars` characters; returned oldest first, with whether the conversation's first
        message is among them."""
        with self._sessions() as db:
            return self._newest(db, conversation_id, before_id, min_chars)

    @staticmethod
    def _newest(
        db: Session, conversation_id: int, before_id: int | None, min_chars: int
    ) -> tuple[tuple[StoredMessage, ...], bool]:
        found: list[StoredMessage] = []
        chars = 0
        while True:
            query = select(MessageRow.id, MessageRow.role, MessageRow.content, MessageRow.created_at).where(
                MessageRow.conversation_id == conversation_id
            )
            if before_id is not None:
                query = query.where(MessageRow.id < before_id)
            page = _stored(db.execute(query.order_by(MessageRow.id.desc()).limit(HISTORY_PAGE)).all())
            for message in page:
                found.append(message)
                chars += len(message.content)
                if chars >= min_chars:
                    first = len(page) < HISTORY_PAGE and message is page[-1]
                    return tuple(reversed(found)), first
            if len(page) < HISTORY_PAGE:
                return tuple(reversed(found)), True
            before_id = page[-1].id

    def record_turn(self, turn: TurnRecord) -> int:
        """Store both messages of a turn in one transaction; returns the conversation id
        (created here for a new conversation)."""
        return self.record_turn_messages(turn).conversation_id

    @outage_is_unavailable
    def record_turn_messages(self, turn: TurnRecord) -> StoredTurn:
        """`record_turn`, returning the ids of the messages written too."""
        with self._sessions.begin() as db:
            if turn.conversation_id is None:
                conversation = ConversationRow(
                    session_id=turn.session_id,
                    user_id=turn.user_id,
                    user_email=turn.user_email if turn.user_id else None,
                    created_at=turn.user_at,
                    updated_at=turn.reply_at,
                )
                db.add(conversation)
                db.flush()
            else:
                conversation = db.get(ConversationRow, turn.conversation_id)
                if conversation is None or conversation.session_id != turn.session_id:
                    # Erased while the reply was being generated.
                    raise ConversationNotFound(f"conversation {turn.conversation_id} not found for this session")
                if turn.held_messages and self._missing(db, conversation.id, turn.held_messages):
                    raise ConversationNotFound(f"messages of conversation {turn.conversation_id} were erased")
                conversation.updated_at = turn.reply_at
                if turn.user_id and not conversation.user_id:
                    # Both from the same turn: never one user's id with another's e-mail.
                    conversation.user_id, conversation.user_email = turn.user_id, turn.user_email
            # The user message first: a turn's reply is the next message of its conversation.
            user = MessageRow(
                conversation_id=conversation.id,
                role="user",
                content=turn.user_message,
                created_at=turn.user_at,
                audio_seconds=turn.audio_seconds,
                user_id=turn.user_id,
                user_email=turn.user_email if turn.user_id else None,
            )
            db.add(user)
            db.flush()
            reply = MessageRow(
                conversation_id=conversation.id,
                role="assistant",
                content=turn.reply,
                created_at=turn.reply_at,
                model=turn.model,
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                audio_file=turn.audio_file,
            )
            db.add(reply)
            db.flush()
            return StoredTurn(conversation.id, user.id, reply.id)

    @staticmethod
    def _missing(db: Session, conversation_id: int, message_ids: tuple[int, ...]) -> bool:
        """Whether any of these messages is no longer in the conversation."""
        wanted = set(message_ids)
        found = 0
        ids = sorted(wanted)
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            found += (
                db.scalar(
                    select(func.count())
                    .select_from(MessageRow)
                    .where(MessageRow.conversation_id == conversation_id, MessageRow.id.in_(chunk))
                )
                or 0
            )
        return found < len(wanted)

    @outage_is_unavailable
    def replace_reply(self, session_id: str, message_id: int, reply: str) -> None:
        """Rewrite a stored reply of this session (a realtime answer cut to what the client
        played, `conversation.item.truncate` after the turn was stored). ConversationNotFound
        when that reply is gone (erased) or is not one of this session's replies."""
        with self._sessions.begin() as db:
            mine = select(ConversationRow.id).where(ConversationRow.session_id == session_id)
            changed = db.execute(
                update(MessageRow)
                .where(
                    MessageRow.id == message_id,
                    MessageRow.role == "assistant",
                    MessageRow.conversation_id.in_(mine),
                )
                .values(content=reply)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not changed:
                raise ConversationNotFound(f"reply {message_id} not found for this session")

    @outage_is_unavailable
    def counts(self) -> tuple[int, int]:
        """(conversations, messages) stored."""
        with self._sessions() as db:
            return (
                db.scalar(select(func.count()).select_from(ConversationRow)) or 0,
                db.scalar(select(func.count()).select_from(MessageRow)) or 0,
            )

    @outage_is_unavailable
    def expired_sessions(self, older_than: datetime) -> list[str]:
        """Sessions that have a conversation last updated before `older_than`."""
        with self._sessions() as db:
            return list(
                db.scalars(select(ConversationRow.session_id).where(ConversationRow.updated_at < older_than).distinct())
            )

    @outage_is_unavailable
    def sessions_of_user(self, user_id: str) -> list[str]:
        """Sessions with a conversation where this user spoke (or that names them)."""
        with self._sessions() as db:
            spoke = select(MessageRow.conversation_id).where(MessageRow.role == "user", MessageRow.user_id == user_id)
            return list(
                db.scalars(
                    select(ConversationRow.session_id)
                    .where(or_(ConversationRow.id.in_(spoke), ConversationRow.user_id == user_id))
                    .distinct()
                )
            )

    @outage_is_unavailable
    def erase(
        self, *, session_id: str | None = None, user_id: str | None = None, older_than: datetime | None = None
    ) -> Erased:
        """Erase, in one transaction, then flush the erased text out of the database files:

        - `session_id`: every conversation of that session (only those last updated before
          `older_than` when it is given too);
        - `older_than` alone: every conversation last updated before that date;
        - `user_id` (alone): every turn that user spoke (their message and Léa's reply to it),
          then the conversations left empty.

        Returns what was erased, audio names included (the caller deletes those files). Turns
        still running are the caller's business (`ChatTurns.turns_settled`)."""
        if user_id is not None:
            if session_id is not None or older_than is not None:
                raise ValueError("erase a user_id alone")
            with self._sessions.begin() as db:
                erased = self._erase_user(db, user_id)
        else:
            conditions = []
            if session_id is not None:
                conditions.append(ConversationRow.session_id == session_id)
            if older_than is not None:
                conditions.append(ConversationRow.updated_at < older_than)
            if not conditions:
                raise ValueError("erase needs a session_id, a user_id or a date")
            with self._sessions.begin() as db:
                ids = list(db.scalars(select(ConversationRow.id).where(and_(*conditions))))
                erased = self._erase_conversations(db, ids)
        if erased.messages or erased.conversations:
            self.checkpoint()
        return erased

    @staticmethod
    def _erase_conversations(db: Session, ids: list[int]) -> Erased:
        if not ids:
            return Erased(0, 0, [])
        audio = [
            name
            for name in db.scalars(
                select(MessageRow.audio_file).where(
                    MessageRow.conversation_id.in_(ids), MessageRow.audio_file.is_not(None)
                )
            )
            if name
        ]
        messages = db.execute(delete(MessageRow).where(MessageRow.conversation_id.in_(ids))).rowcount or 0
        conversations = db.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids))).rowcount or 0
        return Erased(conversations, messages, audio)

    @staticmethod
    def _erase_user(db: Session, user_id: str) -> Erased:
        spoken = list(
            db.execute(
                select(MessageRow.id, MessageRow.conversation_id, MessageRow.user_email).where(
                    MessageRow.role == "user", MessageRow.user_id == user_id
                )
            ).all()
        )
        emails = {email for _, _, email in spoken if email}
        touched = {conversation for _, conversation, _ in spoken}
        # Conversations that name this user (or one of their e-mails) as theirs are rewritten
        # below even if no turn of theirs remains in them.
        touched |= set(
            db.scalars(
                select(ConversationRow.id).where(
                    or_(ConversationRow.user_id == user_id, ConversationRow.user_email.in_(emails))
                )
            )
        )
        later = aliased(MessageRow)
        reply_of = (
            select(func.min(later.id))
            .where(later.conversation_id == MessageRow.conversation_id, later.id > MessageRow.id)
            .scalar_subquery()
        )
        audio: list[str] = []
        messages = 0
        spoken_ids = [message_id for message_id, _, _ in spoken]
        for chunk in (spoken_ids[i : i + 500] for i in range(0, len(spoken_ids), 500)):
            # A turn's reply is the next message of its conversation (record_turn writes it so).
            replies = [r for r in db.scalars(select(reply_of).where(MessageRow.id.in_(chunk))) if r is not None]
            turn_ids = chunk + list(
                db.scalars(select(MessageRow.id).where(MessageRow.id.in_(replies), MessageRow.role == "assistant"))
            )
            audio += [
                name
                for name in db.scalars(
                    select(MessageRow.audio_file).where(MessageRow.id.in_(turn_ids), MessageRow.audio_file.is_not(None))
                )
                if name
            ]
            messages += db.execute(delete(MessageRow).where(MessageRow.id.in_(turn_ids))).rowcount or 0
        conversations = 0
        for conversation_id in touched:
            remaining = db.execute(
                select(MessageRow.user_id, MessageRow.user_email)
                .where(MessageRow.conversation_id == conversation_id)
                .order_by(MessageRow.user_id.is_(None), MessageRow.id)
                .limit(1)
            ).first()
            if remaining is None:
                conversations += (
                    db.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id)).rowcount or 0
                )
            else:
                # The conversation's "first speaker" becomes the first one left (or nobody).
                db.execute(
                    update(ConversationRow)
                    .where(ConversationRow.id == conversation_id)
                    .values(user_id=remaining.user_id, user_email=remaining.user_email if remaining.user_id else None)
                )
        return Erased(conversations, messages, audio)

    def checkpoint(self, attempts: int = 20) -> bool:
        """SQLite: copy the write-ahead log into the database and truncate it to zero bytes, so
        that erased text does not live on in the `-wal` file. True when it was truncated (a
        reader in the middle of a query can delay it: retried for a moment)."""
        if self.engine.dialect.name != "sqlite":
            return True
        for attempt in range(attempts):
            connection = self.engine.raw_connection()
            try:
                busy = connection.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                connection.close()
            if not busy:
                return True
            time.sleep(0.05 * (attempt + 1))
        log.warning("the database's write-ahead log could not be truncated after an erasure (readers busy)")
        return False
