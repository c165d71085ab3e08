"""Delivery is recorded before the result is posted (the bot's SQL migration 0004 on both
databases): an open job with ``delivering_at`` is decided from its channel after a crash.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

from bot.storage._schema import Timestamp

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("delivering_at", Timestamp()))


def downgrade() -> None:
    raise NotImplementedError("the bot's migrations only go forward")
