"""The conversation database's schema, created and upgraded by Alembic when the store opens.

Revisions live in `lea_local/store/migrations/versions/`. A database made before migrations
existed (its tables but no `alembic_version`) is stamped at the first revision, which is that
schema, then upgraded like any other: nothing is recreated, nothing is lost.

Every process upgrades the database as it opens it, so replicas started together race to do
it. On PostgreSQL the whole upgrade is one transaction (DDL included) under an advisory lock:
the first replica upgrades, the others wait for it, then find the database at the newest
revision. On SQLite the upgrade's `BEGIN IMMEDIATE` plays that part.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from lea_local.store.database import sqlite_pragmas

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"
"""The schema lea-local created before it had migrations."""

# Prefixed like the session locks' keys (lea_local/store/session_locks.py), so never one of them.
_UPGRADE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('lea-local schema upgrade', 0))"


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration, without an alembic.ini: the revisions ship inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _transactional_sqlite(engine: Engine) -> Engine:
    """An engine whose transactions cover DDL too. Python's sqlite3 commits before every
    CREATE/ALTER on its own; SQLAlchemy's documented recipe (BEGIN emitted by us) makes a whole
    upgrade one transaction, so a crash halfway leaves the previous schema whole."""
    migrating = create_engine(engine.url, poolclass=NullPool)

    @event.listens_for(migrating, "connect")
    def _connect(dbapi_connection, record) -> None:
        sqlite_pragmas(dbapi_connection, record)
        dbapi_connection.isolation_level = None

    @event.listens_for(migrating, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrating


def upgrade_schema(engine: Engine) -> str | None:
    """Bring the database to the newest revision (create it when empty); returns that revision."""
    separate = engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")
    migrating = _transactional_sqlite(engine) if separate else engine
    try:
        with migrating.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(_UPGRADE_LOCK)  # released when the transaction ends
            config = alembic_config(connection)
            tables = set(inspect(connection).get_table_names())
            if "alembic_version" not in tables and "conversations" in tables:
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if separate:
            migrating.dispose()
