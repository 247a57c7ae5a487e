"""Who spoke each turn: user_id and user_email on the user's message.

Before this revision only the conversation kept a user (the first one seen). Turns stored before
it are attributed to that user, as erasure by user treated them until now.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("user_id", sa.String(256), nullable=True))
        batch.add_column(sa.Column("user_email", sa.String(320), nullable=True))
        batch.create_index("ix_messages_user_id", ["user_id"])
    op.execute(
        """
        UPDATE messages
        SET user_id = (SELECT c.user_id FROM conversations c WHERE c.id = messages.conversation_id),
            user_email = (SELECT c.user_email FROM conversations c WHERE c.id = messages.conversation_id)
        WHERE role = 'user' AND user_id IS NULL
          AND (SELECT c.user_id FROM conversations c WHERE c.id = messages.conversation_id) IS NOT NULL
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_user_id")
        batch.drop_column("user_email")
        batch.drop_column("user_id")
