"""Which knowledge directory holds the files of the database's documents: replicas sharing a
PostgreSQL database must share that directory too (lea_local/knowledge/directory.py). One row.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_directory",
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("directory_id", sa.String(36), nullable=False),
        sa.Column("first_path", sa.Text(), nullable=False),
        sa.Column("first_host", sa.String(255), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("slot = 1", name="ck_knowledge_directory_one_row"),
    )


def downgrade() -> None:
    op.drop_table("knowledge_directory")
