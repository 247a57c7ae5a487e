"""Who may touch a session now: turns of one session run one after the other, and an erasure
waits for the turns under way of the sessions (or the user) it erases.

Two implementations of one small interface, chosen by the conversation database
(`ConversationStore.session_locks`):

- `InProcessSessionLocks`: asyncio locks in this process. Enough when one process serves the
  database (SQLite, the default).
- `PostgresSessionLocks`: PostgreSQL advisory locks, so that replicas sharing one database
  serialise each session's turns among themselves, and an erasure on one replica waits for a turn
  running on another. The in-process locks stay in front as a first, cheap layer: turns of a
  session queued on one replica wait in memory, and only the one under way holds a connection.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import psycopg

from lea_local.store.database import StoreUnavailable

log = logging.getLogger(__name__)

SessionsOfUser = Callable[[str], Awaitable[Iterable[str]]]
"""Reads, from the database, the sessions where a user has a stored turn."""


class SessionLocks(Protocol):
    def turn(self, session_id: str, user_id: str | None) -> AbstractAsyncContextManager[None]:
        """Held for a whole turn of `session_id`, spoken by `user_id` (None: anonymous)."""
        ...

    def settled(
        self,
        session_ids: Iterable[str],
        user_id: str | None,
        sessions_of_user: SessionsOfUser,
        wait_seconds: float,
    ) -> AbstractAsyncContextManager[None]:
        """For an erasure: entered once no turn of these sessions, nor any turn of `user_id`
        nor of a session where that user has a turn, is under way; their next turns wait until
        it is left. TimeoutError (nothing held) when that takes longer than `wait_seconds`."""
        ...

    async def confirm(self, session_id: str) -> None:
        """Called inside `turn`, just before the turn is stored: StoreUnavailable when the
        session's hold was lost meanwhile (the turn must then store nothing)."""
        ...


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it. A holder or waiter
    may carry a tag (the user whose turn it is), so that the keys a user is busy with can be
    found (`keys_tagged`)."""

    def __init__(self) -> None:
        self._locks: dict[str, _KeyedLock] = {}

    @asynccontextmanager
    async def hold(self, key: str, tag: str | None = None) -> AsyncIterator[None]:
        entry = self._locks.setdefault(key, _KeyedLock())
        entry.users += 1
        if tag is not None:
            entry.tags[tag] += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if tag is not None:
                entry.tags[tag] -= 1
                if not entry.tags[tag]:
                    del entry.tags[tag]
            if not entry.users:
                del self._locks[key]

    def keys_tagged(self, tag: str) -> set[str]:
        """Keys whose lock is held or awaited under this tag."""
        return {key for key, entry in self._locks.items() if tag in entry.tags}


@dataclass
class _KeyedLock:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0
    tags: Counter[str] = field(default_factory=Counter)


class InProcessSessionLocks:
    """Session locks for a database that one process serves."""

    def __init__(self) -> None:
        self.local = KeyedLocks()

    def turn(self, session_id: str, user_id: str | None) -> AbstractAsyncContextManager[None]:
        return self.local.hold(session_id, user_id)

    @asynccontextmanager
    async def settled(
        self,
        session_ids: Iterable[str],
        user_id: str | None,
        sessions_of_user: SessionsOfUser,
        wait_seconds: float,
    ) -> AsyncIterator[None]:
        # Turns of the user running or waiting here, in sessions the database does not know yet.
        keys = set(session_ids) | (self.local.keys_tagged(user_id) if user_id is not None else set())
        async with AsyncExitStack() as held:
            with anyio.fail_after(wait_seconds):
                for key in sorted(keys):  # one order for every erasure: two never deadlock
                    await held.enter_async_context(self.local.hold(key))
            yield

    async def confirm(self, session_id: str) -> None:
        """Nothing takes an in-process lock away."""


# Advisory lock keys: 64-bit hashes of a prefixed text, so that a session and a user with the
# same id (or the schema upgrade's lock) never share a key. A collision of two different keys
# would only make them wait for each other.
_SESSION_KEY = "SELECT pg_advisory_lock(hashtextextended('lea-local session:' || %s, 0))"
_USER_SHARED_KEY = "SELECT pg_advisory_lock_shared(hashtextextended('lea-local user:' || %s, 0))"
_USER_KEY = "SELECT pg_advisory_lock(hashtextextended('lea-local user:' || %s, 0))"


class PostgresSessionLocks:
    """Session locks shared by every process on one PostgreSQL database: session-level
    advisory locks, each on a connection of its own held for the turn (or the erasure). Closing
    that connection releases them, also when the process dies.

    A user's in-flight sessions are found through the database by a second advisory lock, keyed
    by the user: each turn of a user holds it shared, and a user's erasure takes it exclusively.
    That waits for every turn of that user under way on any replica, and keeps their next turns
    waiting (PostgreSQL queues a shared request behind a waiting exclusive one); those turns have
    then stored what they will store, so the user's sessions are read from the database. Nothing
    to clean up after a crash, unlike a table of turns in flight. Lock order: a turn takes its
    user's lock before its session's, an erasure too, and erasures take sessions in sorted
    order, so no two of them wait for each other in a cycle.

    A turn still waiting on this replica for an earlier turn of its session (in memory) is not
    seen by another replica's erasure: it runs after that erasure, like a turn sent after it.

    A database restart during a turn closes its connection, and its locks go with it: another
    replica may then take the session and read a history without this turn. `confirm`, just
    before the turn is stored, finds the connection gone, and the turn fails (503) storing
    nothing, rather than being stored beside a turn that did not see it."""

    def __init__(self, conninfo: str, connect_timeout: float) -> None:
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.local = KeyedLocks()
        # The connection holding each session under way here (one at most: `local` queues the rest).
        self._holding: dict[str, psycopg.AsyncConnection] = {}

    @asynccontextmanager
    async def turn(self, session_id: str, user_id: str | None) -> AsyncIterator[None]:
        async with self.local.hold(session_id, user_id):
            statements = ([(_USER_SHARED_KEY, user_id)] if user_id is not None else []) + [(_SESSION_KEY, session_id)]
            async with self._locked(statements) as connection:
                self._holding[session_id] = connection
                try:
                    yield
                finally:
                    del self._holding[session_id]

    async def confirm(self, session_id: str) -> None:
        connection = self._holding.get(session_id)
        if connection is None:
            return
        try:
            # A session-level lock lives exactly as long as its connection.
            await connection.execute("SELECT 1")
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc) from exc

    @asynccontextmanager
    async def settled(
        self,
        session_ids: Iterable[str],
        user_id: str | None,
        sessions_of_user: SessionsOfUser,
        wait_seconds: float,
    ) -> AsyncIterator[None]:
        # The wait is bounded by PostgreSQL (lock_timeout), not by cancelling the client: a
        # cancelled wait could leave the server waiting for a client that has gone.
        deadline = time.monotonic() + wait_seconds
        sessions = set(session_ids)
        async with self._connection() as connection:

            async def lock(statement: str, key: str) -> None:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    raise TimeoutError
                await connection.execute("SELECT set_config('lock_timeout', %s, false)", (f"{remaining_ms}ms",))
                await connection.execute(statement, (key,))

            try:
                if user_id is not None:
                    await lock(_USER_KEY, user_id)
                    sessions |= set(await sessions_of_user(user_id))
                for session_id in sorted(sessions):
                    await lock(_SESSION_KEY, session_id)
            except psycopg.errors.LockNotAvailable:
                raise TimeoutError from None
            except psycopg.OperationalError as exc:
                raise _unavailable(exc) from exc
            yield

    @asynccontextmanager
    async def _locked(self, statements: list[tuple[str, str]]) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._connection() as connection:
            try:
                for statement, key in statements:
                    await connection.execute(statement, (key,))
            except psycopg.OperationalError as exc:
                raise _unavailable(exc) from exc
            yield connection

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection of its own, closed on the way out (which releases its locks), also when
        the wait for a lock is cancelled: psycopg then cancels the statement on the server, and
        a lock granted meanwhile goes with the connection."""
        try:
            connection = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )
        except psycopg.OperationalError as exc:
            raise _unavailable(exc) from exc
        try:
            yield connection
        finally:
            with anyio.CancelScope(shield=True):
                await connection.close()


def _unavailable(exc: Exception) -> StoreUnavailable:
    # psycopg's first line names the host and the failure, never the password.
    log.warning("the conversation database is unreachable: %s", (str(exc).strip().splitlines() or [""])[0])
    return StoreUnavailable()
