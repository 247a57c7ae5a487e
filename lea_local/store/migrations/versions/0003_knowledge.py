"""The knowledge base: documents, their passages, and the full-text index over the passages.

SQLite: an FTS5 table (title, section, body) holding the analysed terms of each passage (see
lea_local/knowledge/french.py), its rowid the passage's id; a trigger drops a passage's entry
with the passage, so a cascade from its document leaves nothing behind.
PostgreSQL: a tsvector column on the passages (to_tsvector('french', …), title and section
weighted above the text) and a GIN index on it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_documents",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("file_name", sa.String(255), nullable=False, unique=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("passages", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "knowledge_passages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "document_id",
            sa.Integer(),
            sa.ForeignKey("knowledge_documents.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("section", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_knowledge_passages_document", "knowledge_passages", ["document_id", "ordinal"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE knowledge_passages ADD COLUMN search_vector tsvector NOT NULL DEFAULT ''::tsvector")
        op.execute("CREATE INDEX ix_knowledge_passages_search ON knowledge_passages USING gin (search_vector)")
    else:
        op.execute("CREATE VIRTUAL TABLE knowledge_passages_fts USING fts5(title, section, body, tokenize='unicode61')")
        op.execute(
            "CREATE TRIGGER knowledge_passages_fts_delete AFTER DELETE ON knowledge_passages "
            "BEGIN DELETE FROM knowledge_passages_fts WHERE rowid = old.id; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TRIGGER IF EXISTS knowledge_passages_fts_delete")
        op.execute("DROP TABLE IF EXISTS knowledge_passages_fts")
    op.drop_table("knowledge_passages")
    op.drop_table("knowledge_documents")
