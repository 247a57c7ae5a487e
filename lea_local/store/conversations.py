"""Durable conversation memory, in any database SQLAlchemy reaches (SQLite file by default).

A turn (the user's message and Léa's reply) is written in one transaction: after a crash the
database holds whole turns or nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[str | None] = mapped_column(String(256), index=True)
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
    audio_seconds: Mapped[float | None] = mapped_column()
    """For a spoken user message: the recording's duration."""
    audio_file: Mapped[str | None] = mapped_column(String(64))
    """For a spoken reply: its file name in the TTS audio store (erased with the conversation)."""


@dataclass(frozen=True)
class Erased:
    conversations: int
    messages: int
    audio_files: list[str]


class ConversationNotFound(Exception):
    """No such conversation for this session (or at all): the caller answers 404."""


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: str
    created_at: datetime


@dataclass(frozen=True)
class ConversationContext:
    """Where a turn goes: an existing conversation (with its history) or a new one."""

    session_id: str
    conversation_id: int | None
    history: tuple[StoredMessage, ...]


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


def utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer. synchronous=FULL: a committed turn survives a crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_database_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class ConversationStore:
    """Blocking API: call it from a worker thread, not the event loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> ConversationStore:
        return cls(create_database_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def session_of(self, conversation_id: int) -> str:
        """The session a conversation belongs to (ConversationNotFound if none)."""
        with self._sessions() as db:
            row = db.get(ConversationRow, conversation_id)
            if row is None:
                raise ConversationNotFound(f"conversation {conversation_id} not found")
            return row.session_id

    def context_for(self, session_id: str, conversation_id: int | None) -> ConversationContext:
        """The conversation a turn continues, with its history oldest first.

        - `conversation_id` given: it must exist and belong to `session_id`, else
          ConversationNotFound (another session's conversation looks exactly like a missing one);
        - otherwise the session's most recent conversation, or a new one (id None until stored).
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
            messages = db.scalars(
                select(MessageRow).where(MessageRow.conversation_id == row.id).order_by(MessageRow.id)
            ).all()
            history = tuple(StoredMessage(m.role, m.content, m.created_at) for m in messages)
            return ConversationContext(session_id, row.id, history)

    def record_turn(self, turn: TurnRecord) -> int:
        """Store both messages of a turn in one transaction; returns the conversation id
        (created here for a new conversation)."""
        with self._sessions.begin() as db:
            if turn.conversation_id is None:
                conversation = ConversationRow(
                    session_id=turn.session_id,
                    user_id=turn.user_id,
                    user_email=turn.user_email,
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
                conversation.updated_at = turn.reply_at
                if turn.user_id and not conversation.user_id:
                    conversation.user_id = turn.user_id
                if turn.user_email and not conversation.user_email:
                    conversation.user_email = turn.user_email
            db.add_all(
                [
                    MessageRow(
                        conversation_id=conversation.id,
                        role="user",
                        content=turn.user_message,
                        created_at=turn.user_at,
                        audio_seconds=turn.audio_seconds,
                    ),
                    MessageRow(
                        conversation_id=conversation.id,
                        role="assistant",
                        content=turn.reply,
                        created_at=turn.reply_at,
                        model=turn.model,
                        prompt_tokens=turn.prompt_tokens,
                        completion_tokens=turn.completion_tokens,
                        audio_file=turn.audio_file,
                    ),
                ]
            )
            return conversation.id

    def counts(self) -> tuple[int, int]:
        """(conversations, messages) stored."""
        with self._sessions() as db:
            return (
                db.scalar(select(func.count()).select_from(ConversationRow)) or 0,
                db.scalar(select(func.count()).select_from(MessageRow)) or 0,
            )

    def erase(
        self, *, session_id: str | None = None, user_id: str | None = None, older_than: datetime | None = None
    ) -> Erased:
        """Delete every conversation of a session, of a user, or last updated before a date,
        with its messages, in one transaction. Returns what was erased, audio names included
        (the caller deletes those files)."""
        conditions = []
        if session_id is not None:
            conditions.append(ConversationRow.session_id == session_id)
        if user_id is not None:
            conditions.append(ConversationRow.user_id == user_id)
        if older_than is not None:
            conditions.append(ConversationRow.updated_at < older_than)
        if not conditions:
            raise ValueError("erase needs a session_id, a user_id or a date")
        with self._sessions.begin() as db:
            ids = list(db.scalars(select(ConversationRow.id).where(or_(*conditions))))
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
