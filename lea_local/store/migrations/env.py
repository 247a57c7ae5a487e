"""Alembic's entry point: migrations run on the connection `upgrade_schema` hands over, inside
its transaction (no alembic.ini, no URL of its own)."""

from alembic import context

from lea_local.store.conversations import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite's ALTER TABLE is limited: batch operations copy the table when they must.
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
