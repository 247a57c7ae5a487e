"""Generated speech in the conversation database, for small deployments whose replicas share a
database but no disk (`LEA_AUDIO_STORE=database`).

The sibling of the shared directory (`audio_store.TtsAudioStore`), with the same states: a reply's
audio is written as it is encoded, as chunks of a `partial` entry, which becomes `complete` or
`failed` in one update; any replica serves it, also while another is still writing it (`follow`).
Every chunk is its own row, so appending costs the same at the end of a long reply as at its
start, and a reader fetches only the chunks it has not seen.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lea_local.store.database import outage_is_unavailable
from lea_local.tts.audio_store import (
    AUDIO_NAME,
    REPLY_AUDIO_NAME,
    AudioState,
    FollowedStep,
    StoredAudio,
    TtsAudioStore,
    follow_audio,
)

metadata = sa.MetaData()
# The tables of migration 0004 (lea_local/store/migrations/versions/0004_tts_audio.py).
audio_table = sa.Table(
    "tts_audio",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("beats", sa.Integer, nullable=False),
    sa.Column("touched_at", sa.Float, nullable=False),
    sa.Index("ix_tts_audio_touched_at", "touched_at"),
)
chunk_table = sa.Table(
    "tts_audio_chunks",
    metadata,
    sa.Column("name", sa.String(64), sa.ForeignKey("tts_audio.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# Not yet public: a sentence's audio between `stage` and `commit`.
_STAGED = "staged"


class DatabasePartialAudio:
    """The writing side of a `partial` entry (`audio_store.PartialAudio`'s sibling): the encoder's
    output appended as it comes (from any thread), then published, marked failed, or discarded."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._engine = engine
        self._lock = threading.Lock()
        self._seq = 0
        self._closed = False
        self.size = 0
        self.write_error: Exception | None = None
        with engine.begin() as db:
            db.execute(audio_table.insert().values(name=name, state="partial", size=0, beats=0, touched_at=time.time()))

    def write(self, data: bytes) -> None:
        """Append one chunk. A failure is kept (`write_error`: the audio cannot be published)
        rather than raised into the pump that drains the encoder."""
        with self._lock:
            if self._closed or self.write_error is not None or not data:
                return
            try:
                with self._engine.begin() as db:
                    db.execute(chunk_table.insert().values(name=self.name, seq=self._seq, data=data))
                    db.execute(
                        audio_table.update()
                        .where(audio_table.c.name == self.name)
                        .values(size=audio_table.c.size + len(data), touched_at=time.time())
                    )
                self._seq += 1
                self.size += len(data)
            except sa.exc.SQLAlchemyError as exc:
                self.write_error = exc

    def finish_writing(self, head: bytes = b"") -> None:
        """No more bytes: overwrite the first bytes with `head` (a WAV header whose sizes are now
        known). Raises OSError when a write failed."""
        with self._lock:
            self._closed = True
            if self.write_error is not None:
                raise OSError(f"the audio could not be stored: {self.write_error}")
            if not head:
                return
            try:
                with self._engine.begin() as db:
                    _overwrite_head(db, self.name, head)
            except sa.exc.SQLAlchemyError as exc:
                raise OSError(f"the audio could not be stored: {exc}") from exc

    def heartbeat(self) -> bool:
        """A sign of life for readers elsewhere; False when the entry is gone (erased)."""
        try:
            with self._engine.begin() as db:
                touched = db.execute(
                    audio_table.update()
                    .where(audio_table.c.name == self.name)
                    .values(beats=audio_table.c.beats + 1, touched_at=time.time())
                )
            return touched.rowcount > 0
        except sa.exc.SQLAlchemyError:
            return True  # the database is unreachable, not the audio erased: readers see the stall

    def publish(self) -> bool:
        """Make the complete audio public; False when it was erased meanwhile."""
        self._closed = True
        with self._engine.begin() as db:
            done = db.execute(
                audio_table.update()
                .where(audio_table.c.name == self.name, audio_table.c.state == "partial")
                .values(state="complete", touched_at=time.time())
            )
        return done.rowcount > 0

    def fail(self) -> None:
        """Readers elsewhere stop at once with an error; the bytes go."""
        self._closed = True
        try:
            with self._engine.begin() as db:
                db.execute(chunk_table.delete().where(chunk_table.c.name == self.name))
                db.execute(
                    audio_table.update()
                    .where(audio_table.c.name == self.name)
                    .values(state="failed", size=0, touched_at=time.time())
                )
        except sa.exc.SQLAlchemyError:
            pass  # the sweep removes it once expired

    def discard(self) -> None:
        self._closed = True
        try:
            with self._engine.begin() as db:
                _delete_entries(db, [self.name])
        except sa.exc.SQLAlchemyError:
            pass


@dataclass(frozen=True)
class _Staged:
    name: str


class DatabaseAudioStore:
    """The `AudioStore` in the conversation database. Blocking, except `follow`."""

    def __init__(self, engine: Engine, ttl_seconds: float) -> None:
        self.engine = engine
        self.ttl_seconds = ttl_seconds
        self.directory = f"{engine.url.get_backend_name()} database"
        """Where the audio lives, as log messages name it."""

    def is_usable(self) -> bool:
        return True  # an unreachable database fails the job (and the GET, 503) instead

    def new_name(self, extension: str) -> str:
        return f"{secrets.token_urlsafe(24)}.{extension}"

    sentence_name = staticmethod(TtsAudioStore.sentence_name)

    def open_partial(self, name: str) -> DatabasePartialAudio:
        try:
            return DatabasePartialAudio(self.engine, name)
        except sa.exc.SQLAlchemyError as exc:
            raise OSError(f"the audio could not be stored: {exc}") from exc

    def stage(self, name: str, data: bytes) -> _Staged:
        """Store the audio, not yet public; `commit` makes it public."""
        self._insert(name, data, _STAGED)
        return _Staged(name)

    def commit(self, staged: _Staged, name: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                audio_table.update()
                .where(audio_table.c.name == name, audio_table.c.state == _STAGED)
                .values(state="complete", touched_at=time.time())
            )

    def discard_staged(self, staged: _Staged) -> None:
        self.delete([staged.name])

    def write(self, name: str, data: bytes) -> None:
        self._insert(name, data, "complete")

    def _insert(self, name: str, data: bytes, state: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                audio_table.insert().values(name=name, state=state, size=len(data), beats=0, touched_at=time.time())
            )
            db.execute(chunk_table.insert().values(name=name, seq=0, data=data))

    @outage_is_unavailable
    def read(self, name: str) -> StoredAudio | None:
        """The complete audio of a public name, or None (malformed, unknown, unfinished or expired)."""
        if not AUDIO_NAME.fullmatch(name):
            return None
        with self.engine.connect() as db:
            entry = db.execute(
                sa.select(audio_table.c.state, audio_table.c.size, audio_table.c.touched_at).where(
                    audio_table.c.name == name
                )
            ).first()
            if entry is None or entry.state != "complete" or not self._fresh(entry.touched_at):
                return None
            data = b"".join(
                db.execute(
                    sa.select(chunk_table.c.data).where(chunk_table.c.name == name).order_by(chunk_table.c.seq)
                ).scalars()
            )
        tag = hashlib.blake2b(f"{name}:{entry.size}:{entry.touched_at}".encode(), digest_size=12).hexdigest()
        return StoredAudio(data=data, modified=entry.touched_at, etag=f'"{tag}"')

    @outage_is_unavailable
    def state(self, name: str) -> AudioState | None:
        if not AUDIO_NAME.fullmatch(name):
            return None
        with self.engine.connect() as db:
            entry = db.execute(
                sa.select(audio_table.c.state, audio_table.c.touched_at).where(audio_table.c.name == name)
            ).first()
        if entry is None or entry.state == _STAGED or not self._fresh(entry.touched_at):
            return None
        return AudioState(entry.state)

    def _fresh(self, touched_at: float) -> bool:
        return time.time() - touched_at <= self.ttl_seconds

    def follow(self, name: str, stall_timeout: float) -> AsyncIterator[bytes]:
        """Every byte of audio another replica is writing, as its chunks come, then the rest
        (`follow_audio`; a sign of life: a new chunk or a heartbeat)."""
        return follow_audio(functools.partial(self._follow_step, name), stall_timeout)

    @outage_is_unavailable
    def _follow_step(self, name: str, next_seq: int) -> FollowedStep:
        """The chunks from `next_seq` on (a chunk number), where the audio stands, and its
        (size, heartbeats)."""
        with self.engine.connect() as db:
            # The state first: a chunk written after it is read next time, never missed.
            entry = db.execute(
                sa.select(audio_table.c.state, audio_table.c.size, audio_table.c.beats).where(
                    audio_table.c.name == name
                )
            ).first()
            if entry is None or entry.state == _STAGED:
                return b"", next_seq, None, None
            chunks = list(
                db.execute(
                    sa.select(chunk_table.c.data)
                    .where(chunk_table.c.name == name, chunk_table.c.seq >= next_seq)
                    .order_by(chunk_table.c.seq)
                ).scalars()
            )
        seen = (entry.size, entry.beats)
        if entry.state == "failed":
            return b"", next_seq, AudioState.FAILED, seen
        state = AudioState.COMPLETE if entry.state == "complete" else AudioState.PARTIAL
        return b"".join(chunks), next_seq + len(chunks), state, seen

    @outage_is_unavailable
    def delete(self, names: list[str]) -> int:
        """Delete these entries, each reply's sentence entries with it; returns entries deleted."""
        wanted = [name for name in names if AUDIO_NAME.fullmatch(name)]
        if not wanted:
            return 0
        with self.engine.begin() as db:
            return _delete_entries(db, wanted)

    @outage_is_unavailable
    def sweep(self) -> int:
        """Delete entries untouched for longer than the TTL (a killed replica's partial entries
        included: a live one's heartbeat keeps its own fresh); returns how many."""
        limit = time.time() - self.ttl_seconds
        with self.engine.begin() as db:
            expired = list(db.execute(sa.select(audio_table.c.name).where(audio_table.c.touched_at < limit)).scalars())
            if expired:
                db.execute(chunk_table.delete().where(chunk_table.c.name.in_(expired)))
                db.execute(audio_table.delete().where(audio_table.c.name.in_(expired)))
        return len(expired)


def _delete_entries(db: Connection, names: list[str]) -> int:
    sentence_patterns = [f"{m.group(1)}-%.{m.group(2)}" for name in names if (m := REPLY_AUDIO_NAME.fullmatch(name))]
    condition = audio_table.c.name.in_(names)
    for pattern in sentence_patterns:  # the name's characters hold no LIKE wildcard but "_"
        condition = condition | audio_table.c.name.like(pattern.replace("_", r"\_"), escape="\\")
    doomed = list(db.execute(sa.select(audio_table.c.name).where(condition)).scalars())
    if doomed:
        db.execute(chunk_table.delete().where(chunk_table.c.name.in_(doomed)))
        db.execute(audio_table.delete().where(audio_table.c.name.in_(doomed)))
    return len(doomed)


def _overwrite_head(db: Connection, name: str, head: bytes) -> None:
    """Replace the first len(head) bytes of an entry's chunks, the rest unchanged."""
    offset = 0
    rows = db.execute(
        sa.select(chunk_table.c.seq, chunk_table.c.data).where(chunk_table.c.name == name).order_by(chunk_table.c.seq)
    )
    for seq, data in rows.all():
        if offset >= len(head):
            break
        part = head[offset : offset + len(data)]
        db.execute(
            chunk_table.update()
            .where(chunk_table.c.name == name, chunk_table.c.seq == seq)
            .values(data=part + bytes(data[len(part) :]))
        )
        offset += len(data)
