"""A 429 from the API holds every process sharing the database, not only the one that heard it.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

from bot.storage._schema import Timestamp

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "rate_holds",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("until", Timestamp(), nullable=False),
        # SQLite keeps timestamps as text: only the fixed-width UTC form may go in.
        sa.CheckConstraint("until LIKE '____-__-__T__:__:__.______+00:00'").ddl_if("sqlite"),
    )


def downgrade() -> None:
    raise NotImplementedError("the bot's migrations only go forward")
