"""The knowledge base's sentence-encoder vectors (lea_local/knowledge/dense.py): a few rows per
passage (the whole, then its two-sentence windows), each with the encoder that made it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_vectors",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "passage_id",
            sa.Integer(),
            sa.ForeignKey("knowledge_passages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("encoder", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_knowledge_vectors_passage", "knowledge_vectors", ["passage_id", "encoder", "position"])


def downgrade() -> None:
    op.drop_index("ix_knowledge_vectors_passage", "knowledge_vectors")
    op.drop_table("knowledge_vectors")
