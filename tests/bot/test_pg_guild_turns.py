"""PostgreSQL: a flood of reservations for one guild does not hold up everything else.

Each reservation locks its guild's row, so a guild's reservations run one after
another whatever happens; they queue in the process (PgStorage.reserve_job)
rather than each on a pooled connection, which would leave none for a job's
start, a commit, or another guild.
"""

from __future__ import annotations

import asyncio

from bot.storage import open_storage
from bot.storage._pg_setup import PG_POOL_SIZE as POOL_MAX_SIZE
from tests.bot.test_storage_coordination import new_job

FLOOD = 10 * POOL_MAX_SIZE


async def test_another_guild_is_not_queued_behind_one_guilds_flood(pg_url: str) -> None:
    storage = await open_storage(pg_url)
    try:
        await storage.ensure_guild(1, default_credits=10**6)
        await storage.ensure_guild(2, default_credits=10**6)
        # Open the pool's connections first: on a loaded machine, opening one for guild 2
        # could take longer than the flood's reservations on connections already open.
        await asyncio.gather(*(storage.get_balance(2) for _ in range(POOL_MAX_SIZE)))
        finished: list[int] = []

        async def reserve(guild: int, user: int) -> None:
            job = new_job(guild=guild, user=user)
            await storage.reserve_job(job, default_credits=10**6, note=None)
            finished.append(guild)

        flood = [reserve(1, user) for user in range(1, FLOOD + 1)]
        # Sent last, after every reservation of the flood has asked for its turn.
        await asyncio.gather(*flood, reserve(2, 1))
    finally:
        await storage.close()
    # Guild 2's reservation took a free connection at once; behind the flood it would
    # have waited for nearly all of it (the pool serves its waiters in order).
    assert finished.index(2) < POOL_MAX_SIZE
    assert finished.count(1) == FLOOD
