"""The schema as the bot's own SQL migrations left it (SQLite user_version 3, PostgreSQL
schema_migrations 3): databases made by those versions are stamped here.

Revision ID: 0001
"""

revision = "0001"
down_revision = None


def upgrade() -> None:
    """Nothing to do: a fresh database is created whole from bot.storage._schema."""


def downgrade() -> None:
    raise NotImplementedError("the bot's migrations only go forward")
