"""Guild settings, small application state, and what processes sharing a database
coordinate through it: heartbeats, API-call slots and the request rate."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Final

from sqlalchemy import Update, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.storage._money import guild_balance, lock_guild, rearm_notice
from bot.storage._rows import SETTINGS_COLUMNS, Ops, scalar, settings_from_row, upsert
from bot.storage._schema import (
    api_calls,
    api_slots,
    app_state,
    guild_settings,
    job_owners,
    rate_holds,
)
from bot.storage.base import SettingsChanges
from bot.storage.records import GuildSettings

__all__ = ["SettingsOps"]

_MIN_WAIT: Final = 0.001
"""take_rate_token never returns a wait below this when it refuses (a clock tie)."""
WRITABLE_SETTINGS: Final = frozenset(GuildSettings.__dataclass_fields__) - {"guild_id", "version"}


RATE_LOCK_CLASS: Final = int.from_bytes(b"rate", "big")
SETTINGS_LOCK_CLASS: Final = int.from_bytes(b"sets", "big")


_NEWEST_VERSION: Final = select(func.coalesce(func.max(guild_settings.c.version), 0))


async def _next_version(conn: AsyncConnection) -> int:
    """The number of a settings change. PostgreSQL: one change at a time, so numbers follow
    commit order and a reader that saw number n saw every change before it (SQLite: the
    write lock already does that)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(SETTINGS_LOCK_CLASS, 0)))
    return int(await scalar(conn, _NEWEST_VERSION)) + 1


class SettingsOps(Ops):
    """Settings, state and coordination between processes."""

    async def _settings(self, conn: AsyncConnection, guild_id: int) -> GuildSettings:
        query = select(*SETTINGS_COLUMNS).where(guild_settings.c.guild_id == guild_id)
        row = (await conn.execute(query)).first()
        return GuildSettings(guild_id) if row is None else settings_from_row(row)

    async def get_settings(self, guild_id: int) -> GuildSettings:
        return await self._db.read(lambda conn: self._settings(conn, guild_id))

    async def settings_version(self) -> int:
        """The newest settings change's number (0: none yet)."""
        return int(await self._db.read(lambda conn: scalar(conn, _NEWEST_VERSION)))

    async def settings_changed_since(self, version: int, *, limit: int) -> list[GuildSettings]:
        """Up to ``limit`` guilds' settings changed after change number ``version``, in order."""
        s = guild_settings.c
        query = select(*SETTINGS_COLUMNS).where(s.version > version).order_by(s.version)
        return await self._all(query.limit(limit), settings_from_row)

    async def update_settings(
        self, guild_id: int, changes: SettingsChanges, *, default_credits: int
    ) -> GuildSettings:
        unknown = set(changes) - WRITABLE_SETTINGS
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")

        async def work(conn: AsyncConnection) -> GuildSettings:
            balance, _ = await lock_guild(conn, guild_id, default_credits, self._now)
            now = self._now()
            version = await _next_version(conn)
            # A new row gets the defaults for what is not given; a stored one keeps them.
            values = {
                **asdict(GuildSettings(guild_id)),
                **changes,
                "updated_at": now,
                "version": version,
            }
            insert = upsert(conn, guild_settings).values(**values)
            kept = {name: insert.excluded[name] for name in [*changes, "updated_at", "version"]}
            await conn.execute(insert.on_conflict_do_update(index_elements=["guild_id"], set_=kept))
            await rearm_notice(conn, guild_id, balance)
            return await self._settings(conn, guild_id)

        return await self._db.write(work)

    async def claim_low_balance_notice(self, guild_id: int) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            balance = await guild_balance(conn, guild_id)
            if balance is None:
                return False
            s = guild_settings.c
            claimed = await conn.execute(
                update(guild_settings)
                .where(
                    s.guild_id == guild_id,
                    s.low_balance_notified.is_(False),
                    s.low_balance_threshold > balance,
                )
                .values(low_balance_notified=True)
                .returning(s.guild_id)
            )
            return claimed.first() is not None

        return await self._db.write(work)

    async def get_state(self, key: str) -> str | None:
        query = select(app_state.c.value).where(app_state.c.key == key)
        return await self._db.read(lambda conn: scalar(conn, query))

    async def set_state(self, key: str, value: str) -> bool:
        """Whether ``value`` is new: False when ``key`` already held it (nothing written)."""

        async def work(conn: AsyncConnection) -> bool:
            insert = upsert(conn, app_state).values(key=key, value=value, updated_at=self._now())
            kept = {"value": insert.excluded.value, "updated_at": insert.excluded.updated_at}
            changed = insert.on_conflict_do_update(
                index_elements=["key"], set_=kept, where=app_state.c.value != insert.excluded.value
            ).returning(app_state.c.key)
            return (await conn.execute(changed)).first() is not None

        return await self._db.write(work)

    # -- processes sharing the database ------------------------------------------

    async def heartbeat(self, owner: str) -> None:
        await self._beat(owner, None, forget_dead=False)

    async def _beat(self, owner: str, lock_key: int | None, *, forget_dead: bool) -> None:
        """Record ``owner`` alive now, with its liveness lock's key; ``forget_dead``: also
        forget the owners whose liveness lock nobody holds any more."""

        async def work(conn: AsyncConnection) -> None:
            now = self._now()
            insert = upsert(conn, job_owners).values(
                owner=owner, started_at=now, heartbeat_at=now, lock_key=lock_key
            )
            kept = {"heartbeat_at": insert.excluded.heartbeat_at, "lock_key": lock_key}
            await conn.execute(insert.on_conflict_do_update(index_elements=["owner"], set_=kept))
            if forget_dead:
                o = job_owners.c
                held = await self._held_owner_keys(conn)
                await conn.execute(
                    delete(job_owners).where(o.lock_key.is_not(None), o.lock_key.not_in(held))
                )

        await self._db.write(work)

    async def release_owner(self, owner: str) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(delete(job_owners).where(job_owners.c.owner == owner))
            await conn.execute(_free_slots().where(api_slots.c.owner == owner))

        await self._db.write(work)

    async def acquire_slot(self, owner: str, *, limit: int, ttl: float) -> int | None:
        if limit < 0 or not ttl > 0:
            raise ValueError("acquire_slot needs limit >= 0 and ttl > 0")

        async def work(conn: AsyncConnection) -> int | None:
            if limit == 0:
                return None
            # Every slot row exists and is locked: one acquirer at a time, in every process.
            missing = [{"slot": number} for number in range(limit)]
            await conn.execute(upsert(conn, api_slots).on_conflict_do_nothing(), missing)
            held = select(api_slots).where(api_slots.c.slot < limit).order_by(api_slots.c.slot)
            now = self._now()
            for row in await conn.execute(held.with_for_update()):
                if row.owner is None or row.expires_at <= now:
                    expires_at = now + timedelta(seconds=ttl)
                    await conn.execute(
                        update(api_slots)
                        .where(api_slots.c.slot == row.slot)
                        .values(owner=owner, expires_at=expires_at)
                    )
                    return int(row.slot)
            return None

        return await self._db.write(work)

    async def release_slot(self, owner: str, slot: int) -> None:
        query = _free_slots().where(api_slots.c.slot == slot, api_slots.c.owner == owner)
        await self._db.write(lambda conn: conn.execute(query))

    async def take_rate_token(self, key: str, *, limit: int, period: float) -> float:
        if limit < 1 or not period > 0:
            raise ValueError("take_rate_token needs limit >= 1 and period > 0")

        async def work(conn: AsyncConnection) -> float:
            if conn.dialect.name == "postgresql":
                # Callers of one key queue here (SQLite: the write lock does it).
                lock = func.pg_advisory_xact_lock(RATE_LOCK_CLASS, func.hashtext(key))
                await conn.execute(select(lock))
            now = self._now()
            window = timedelta(seconds=period)
            calls = api_calls.c
            await conn.execute(delete(api_calls).where(calls.key == key, calls.at <= now - window))
            used, oldest = (
                await conn.execute(select(func.count(), func.min(calls.at)).where(calls.key == key))
            ).one()
            if used < limit or oldest is None:
                await conn.execute(api_calls.insert().values(key=key, at=now))
                return 0.0
            return max(float((oldest + window - now).total_seconds()), _MIN_WAIT)

        return await self._db.write(work)

    async def hold_rate(self, key: str, seconds: float) -> None:
        """The API answered 429: no call under ``key`` starts for ``seconds``, in any process
        (a longer hold already recorded stands)."""
        if not seconds >= 0:
            raise ValueError("hold_rate needs seconds >= 0")

        async def work(conn: AsyncConnection) -> None:
            until = self._now() + timedelta(seconds=seconds)
            insert = upsert(conn, rate_holds).values(key=key, until=until)
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["key"],
                    set_={"until": insert.excluded.until},
                    where=rate_holds.c.until < insert.excluded.until,
                )
            )

        await self._db.write(work)

    async def rate_held_for(self, key: str) -> float:
        """Seconds before a call under ``key`` may start (0: now)."""
        query = select(rate_holds.c.until).where(rate_holds.c.key == key)
        until = await self._db.read(lambda conn: scalar(conn, query))
        return 0.0 if until is None else max((until - self._now()).total_seconds(), 0.0)


def _free_slots() -> Update:
    return update(api_slots).values(owner=None, expires_at=None)
