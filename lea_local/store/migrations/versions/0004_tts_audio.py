"""Generated speech in the database, for replicas that share a database but no disk
(`LEA_AUDIO_STORE=database`; lea_local/tts/database_audio_store.py). Empty otherwise.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tts_audio",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("beats", sa.Integer, nullable=False),
        sa.Column("touched_at", sa.Float, nullable=False),
    )
    op.create_index("ix_tts_audio_touched_at", "tts_audio", ["touched_at"])
    op.create_table(
        "tts_audio_chunks",
        sa.Column("name", sa.String(64), sa.ForeignKey("tts_audio.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tts_audio_chunks")
    op.drop_index("ix_tts_audio_touched_at", "tts_audio")
    op.drop_table("tts_audio")
