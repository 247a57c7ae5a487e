"""Alembic migrations of the conversation database (run by `lea_local.store.schema`)."""
