"""Guild settings carry a change counter, so every process can ask the database for the
settings changed since the last it saw (bot.guild_settings keeps its cache fresh that way).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column(
        "guild_settings",
        # the legacy SQLite tables are STRICT: INTEGER there (64-bit all the same)
        sa.Column(
            "version",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            server_default="0",
        ),
    )
    op.create_index("guild_settings_version", "guild_settings", ["version"])


def downgrade() -> None:
    raise NotImplementedError("the bot's migrations only go forward")
