"""The database every store shares: its engine, SQLite's pragmas, and what counts as an outage.

`create_database_engine` opens the conversation database (SQLite file by default, PostgreSQL for
replicas); the conversation store, the knowledge base and the database audio store all work in
it. A failure of the connection or the server (not of a statement) is an outage: methods wrapped
in `outage_is_unavailable` raise StoreUnavailable then (the API answers 503), and the next call
reconnects by itself.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

# Seconds to wait for a connection to a database server (PostgreSQL) before answering 503,
# unless the URL sets its own `connect_timeout`.
CONNECT_TIMEOUT_SECONDS = 5

P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailable(Exception):
    """The conversation database cannot be reached (down, restarting, unreachable): the caller
    answers 503 with `Retry-After`; nothing of the turn was stored."""

    retry_after = 5

    def __init__(self) -> None:
        super().__init__("the conversation database is unavailable; try again in a few seconds")


def is_outage(exc: sa_exc.SQLAlchemyError) -> bool:
    """A failure of the connection or the server, not of the statement."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    # OperationalError: refused, reset or timed-out connections, a server shutting down, a locked
    # SQLite file; TimeoutError: no pooled connection came free in time.
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError))


def outage_is_unavailable(method: Callable[P, R]) -> Callable[P, R]:
    """Decorates a store's method: an outage while it runs raises StoreUnavailable (logged)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sa_exc.SQLAlchemyError as exc:
            if not is_outage(exc):
                raise
            # The driver's message only: SQLAlchemy's own would quote the statement's parameters.
            cause = getattr(exc, "orig", None) or exc
            log.warning("the conversation database is unreachable: %s", str(cause).strip().split("\n")[0])
            raise StoreUnavailable() from exc

    return wrapper


def utcnow() -> datetime:
    """Now, as the stores stamp their rows (aware, UTC)."""
    return datetime.now(UTC)


def sqlite_pragmas(dbapi_connection, _record) -> None:
    """Set on every new SQLite connection (a `connect` event listener)."""
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer. synchronous=FULL: a committed turn survives a crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    # Deleted rows are overwritten with zeros, not just unlinked: erased text leaves the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def create_database_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
        event.listen(engine, "connect", sqlite_pragmas)
        return engine
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    # pool_pre_ping: connections left from before a database restart are replaced, not used.
    # hide_parameters: an error never carries message texts into the logs.
    return create_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args)
