"""The bot's tables, written once for SQLite and PostgreSQL (SQLAlchemy Core).

A fresh database is created from these definitions and stamped with the newest
Alembic revision; existing databases reach the same shape through the
revisions in ``bot/storage/alembic/versions``. Where the two databases store a
value differently (timestamps, id lists), a column type below hides it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from bot.storage.records import JobStatus, LedgerKind

__all__ = ["OPEN", "api_calls", "api_slots", "guilds", "jobs", "ledger", "metadata", "utc_day"]


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO-8601 (``2024-05-01T12:34:56.123456+00:00``): text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class Timestamp(TypeDecorator[datetime]):
    """A UTC instant: timestamptz on PostgreSQL, fixed-width ISO text on SQLite."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return iso(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value)


def _no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL: it keeps a visible stand-in instead."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class Note(TypeDecorator[str]):
    """Free text (notes, errors)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        return _no_nul(value) if dialect.name == "postgresql" else value


class Choice(TypeDecorator[StrEnum]):
    """One value of a string enum (a job's status, a ledger entry's kind), stored as text."""

    impl = Text
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_result_value(self, value: Any, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)


class ListOf(TypeDecorator[tuple[Any, ...]]):
    """A list of ids or words: an array on PostgreSQL, JSON text on SQLite."""

    impl = Text
    cache_ok = True

    def __init__(self, item: type[BigInteger] | type[Text]) -> None:
        super().__init__()
        self.item = item

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(self.item()))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: tuple[Any, ...] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return None if value is None else [_no_nul(item) for item in value]
        return json.dumps(list(value), ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = json.loads(value)
        return tuple(value or ())


class utc_day(FunctionElement[date]):  # noqa: N801 - reads as a SQL function
    """The UTC calendar day of a Timestamp column, as a date on either database."""

    type = Date()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"


@compiles(utc_day, "postgresql")
def _utc_day_pg(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC')::date"


Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: an alias of the rowid
Owner = Text()  # the name of the process running a job
OPEN = ("queued", "running")
_OPEN_SQL = "status IN ('queued', 'running')"

metadata = MetaData()

guilds = Table(
    "guilds",
    metadata,
    Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
    Column("balance", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    CheckConstraint("guild_id > 0"),
    CheckConstraint("balance >= 0"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, Identity(always=True), primary_key=True),
    Column("guild_id", BigInteger, ForeignKey("guilds.guild_id"), nullable=False),
    Column("channel_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("params", JSON, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("units_per_image", BigInteger, nullable=False),
    Column("images_total", BigInteger, nullable=False),
    Column("images_delivered", BigInteger, nullable=False, server_default="0"),
    Column("status", Choice(JobStatus), nullable=False, server_default="queued"),
    Column("message_id", BigInteger),
    Column("error", Note),
    Column("parent_job_id", BigInteger, ForeignKey("jobs.id")),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),
    Column("owner", Owner),
    # when the bot began posting the result (NULL: not yet): recovery asks the channel
    Column("delivering_at", Timestamp),
    CheckConstraint("channel_id > 0 AND user_id > 0 AND cost > 0"),
    CheckConstraint("units_per_image > 0 AND images_total > 0"),
    CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'refunded')"),
    CheckConstraint("cost = units_per_image * images_total"),
    CheckConstraint("json_valid(params) AND json_type(params) = 'object'").ddl_if("sqlite"),
    CheckConstraint("json_typeof(params) = 'object'").ddl_if("postgresql"),
    CheckConstraint("images_delivered BETWEEN 0 AND images_total"),
    # open jobs have no finish time, settled jobs always have one
    CheckConstraint(f"({_OPEN_SQL}) = (finished_at IS NULL)"),
    CheckConstraint("status <> 'succeeded' OR images_delivered > 0"),
    CheckConstraint("status <> 'refunded' OR images_delivered = 0"),
    sqlite_autoincrement=True,  # ids are never reused: the ledger refers to them
)
Index("jobs_guild_user_time", jobs.c.guild_id, jobs.c.user_id, jobs.c.created_at)
# open jobs only: recovery, the active-jobs view and the per-member limit
Index(
    "jobs_open_member",
    jobs.c.guild_id,
    jobs.c.user_id,
    sqlite_where=text(_OPEN_SQL),
    postgresql_where=text(_OPEN_SQL),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Id, Identity(always=True), primary_key=True),
    Column("guild_id", BigInteger, ForeignKey("guilds.guild_id"), nullable=False),
    Column("user_id", BigInteger),
    Column("job_id", BigInteger, ForeignKey("jobs.id")),
    Column("delta", BigInteger, nullable=False),
    Column("kind", Choice(LedgerKind), nullable=False),
    Column("actor_id", BigInteger),
    Column("note", Note),
    Column("balance_after", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    CheckConstraint("balance_after >= 0"),
    # what each kind of entry may look like
    CheckConstraint(
        "CASE kind WHEN 'grant' THEN delta >= 0 AND job_id IS NULL"
        " WHEN 'set' THEN job_id IS NULL"
        " WHEN 'reserve' THEN delta < 0 AND job_id IS NOT NULL"
        " WHEN 'refund' THEN delta > 0 AND job_id IS NOT NULL"
        " WHEN 'commit' THEN delta = 0 AND job_id IS NOT NULL ELSE false END"
    ),
    sqlite_autoincrement=True,
)
Index("ledger_guild_time", ledger.c.guild_id, ledger.c.created_at)
# a job is reserved, committed and refunded at most once each
Index(
    "ledger_job_kind",
    ledger.c.job_id,
    ledger.c.kind,
    unique=True,
    sqlite_where=text("job_id IS NOT NULL"),
    postgresql_where=text("job_id IS NOT NULL"),
)

# The ledger is append-only: the database itself refuses changes.
_APPEND_ONLY = {
    "sqlite": [
        f"CREATE TRIGGER ledger_no_{verb} BEFORE {verb.upper()} ON ledger "
        "BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END"
        for verb in ("update", "delete")
    ],
    "postgresql": [
        "CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'ledger entries are append-only' "
        "USING ERRCODE = 'integrity_constraint_violation'; END; $$",
        "CREATE TRIGGER ledger_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger "
        "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()",
        "CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only()",
    ],
}


@event.listens_for(ledger, "after_create")
def _append_only(target: Table, connection: Any, **kw: Any) -> None:
    for statement in _APPEND_ONLY.get(connection.dialect.name, []):
        connection.exec_driver_sql(statement)


guild_settings = Table(
    "guild_settings",
    metadata,
    Column("guild_id", BigInteger, ForeignKey("guilds.guild_id"), primary_key=True),
    Column("daily_user_cap", BigInteger),
    Column("allowed_channel_ids", ListOf(BigInteger), nullable=False),
    Column("blocked_words", ListOf(Text), nullable=False),
    Column("low_balance_threshold", BigInteger),
    Column("notice_channel_id", BigInteger),
    Column("low_balance_notified", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", Timestamp, nullable=False),
    # every change takes the next number: other processes ask for what is newer than they saw
    Column("version", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("daily_user_cap >= 0 AND low_balance_threshold >= 0"),
    CheckConstraint("array_position(allowed_channel_ids, NULL) IS NULL").ddl_if("postgresql"),
)
Index("guild_settings_version", guild_settings.c.version)

app_state = Table(
    "app_state",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

job_owners = Table(
    "job_owners",
    metadata,
    Column("owner", Owner, primary_key=True),
    Column("started_at", Timestamp, nullable=False),
    Column("heartbeat_at", Timestamp, nullable=False),
    # PostgreSQL: the key of the owner's liveness lock (see _pg_locks.py)
    Column("lock_key", Integer, CheckConstraint("lock_key >= 0")),
)

api_slots = Table(
    "api_slots",
    metadata,
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("owner", Owner),
    Column("expires_at", Timestamp),
    # a slot is free (both NULL) or held until a given time
    CheckConstraint("(owner IS NULL) = (expires_at IS NULL)"),
)

api_calls = Table(
    "api_calls",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("key", Text, nullable=False),
    Column("at", Timestamp, nullable=False),
)
Index("api_calls_key_at", api_calls.c.key, api_calls.c.at)

rate_holds = Table(
    "rate_holds",
    metadata,
    Column("key", Text, primary_key=True),
    # the API answered 429: no call under this key starts before this time
    Column("until", Timestamp, nullable=False),
)

# SQLite keeps timestamps as text: only the fixed-width UTC form may go in.
for _table in metadata.tables.values():
    for _column in _table.columns:
        if isinstance(_column.type, Timestamp):
            _like = f"{_column.name} LIKE '____-__-__T__:__:__.______+00:00'"
            _table.append_constraint(CheckConstraint(_like).ddl_if("sqlite"))
