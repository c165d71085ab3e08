"""A process's liveness is a PostgreSQL session lock (the bot's SQL migration 0005 there):
``job_owners.lock_key`` names it. Rows without one are judged by their heartbeat.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("job_owners", sa.Column("lock_key", sa.Integer()))


def downgrade() -> None:
    raise NotImplementedError("the bot's migrations only go forward")
