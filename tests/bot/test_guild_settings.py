"""Guild settings as a service: validation, the in-memory cache, and changes made by other
processes (two Storage instances on one database) seen within the refresh period.

Runs on a SQLite file and on a fresh PostgreSQL database (``tests/pg.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.credit_errors import CreditError, InvalidAmount, InvalidSetting
from bot.guild_settings import GuildSettings, GuildSettingsService
from bot.storage import Storage, open_storage

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
CHANNEL = 333_333_333_333_333_333
FAST = 0.05  # seconds between refreshes in these tests


@pytest.fixture
async def service(storage: Storage) -> AsyncIterator[GuildSettingsService]:
    started = GuildSettingsService(storage, default_credits=100, refresh_every=FAST)
    await started.start()
    yield started
    await started.close()


def count_reads(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The guild ids of every settings read from the database, from now on."""
    reads: list[int] = []
    original = storage.get_settings

    async def spy(guild_id: int) -> GuildSettings:
        reads.append(guild_id)
        return await original(guild_id)

    monkeypatch.setattr(storage, "get_settings", spy)
    return reads


async def test_settings_round_trip(service: GuildSettingsService) -> None:
    assert await service.get(GUILD) == GuildSettings(GUILD, None, (), (), None, None)
    updated = await service.update(
        GUILD,
        daily_user_cap=20,
        allowed_channel_ids=[CHANNEL, 999_999_999_999_999_999, CHANNEL],
        blocked_words=[" gore ", "Gore", "", "blood  bath"],
        low_balance_threshold=10,
        notice_channel_id=CHANNEL,
    )
    assert updated == GuildSettings(
        GUILD, 20, (CHANNEL, 999_999_999_999_999_999), ("gore", "blood bath"), 10, CHANNEL
    )
    assert await service.get(GUILD) == updated
    # only what is passed changes
    partial = await service.update(GUILD, daily_user_cap=None, blocked_words=())
    assert partial == GuildSettings(
        GUILD, None, (CHANNEL, 999_999_999_999_999_999), (), 10, CHANNEL
    )
    assert await service.update(GUILD) == partial
    assert await service.get(OTHER_GUILD) == GuildSettings(OTHER_GUILD)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"daily_user_cap": -1}, InvalidAmount),
        ({"daily_user_cap": 2.5}, InvalidAmount),
        ({"low_balance_threshold": -5}, InvalidAmount),
        ({"allowed_channel_ids": "123"}, InvalidSetting),
        ({"allowed_channel_ids": [0]}, InvalidSetting),
        ({"allowed_channel_ids": ["123"]}, InvalidSetting),
        ({"blocked_words": "gore"}, InvalidSetting),
        ({"blocked_words": [42]}, InvalidSetting),
        ({"blocked_words": ["x" * 101]}, InvalidSetting),
        ({"notice_channel_id": -3}, InvalidSetting),
    ],
)
async def test_bad_settings_change_nothing(
    service: GuildSettingsService,
    storage: Storage,
    changes: dict[str, Any],
    error: type[CreditError],
) -> None:
    before = await service.update(GUILD, daily_user_cap=5, blocked_words=["gore"])
    with pytest.raises(error):
        await service.update(GUILD, **changes)
    assert await service.get(GUILD) == before
    assert await storage.get_settings(GUILD) == before


async def test_a_cached_guild_is_not_read_again_and_an_update_refreshes_it(
    service: GuildSettingsService, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_reads(storage, monkeypatch)
    assert await service.get(GUILD) == GuildSettings(GUILD)
    assert await service.get(GUILD) == GuildSettings(GUILD)
    assert reads == [GUILD]
    updated = await service.update(GUILD, blocked_words=["gore"], daily_user_cap=3)
    assert await service.get(GUILD) == updated
    assert (await service.get(GUILD)).blocked_words == ("gore",)
    assert reads == [GUILD]  # the update refreshed the cache itself


async def test_the_cache_keeps_the_most_recently_used_guilds(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = GuildSettingsService(storage, default_credits=100, capacity=2)
    await service.start()
    try:
        reads = count_reads(storage, monkeypatch)
        third = 444_444_444_444_444_444
        for guild in (GUILD, OTHER_GUILD, GUILD, third, GUILD, OTHER_GUILD):
            await service.get(guild)
        # OTHER_GUILD made way for the third guild; GUILD, used most recently, stayed
        assert reads == [GUILD, OTHER_GUILD, third, OTHER_GUILD]
    finally:
        await service.close()


async def test_a_change_made_by_another_process_is_seen_within_the_refresh_period(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = await open_storage(database_url), await open_storage(database_url)
    here = GuildSettingsService(first, default_credits=100, refresh_every=FAST)
    there = GuildSettingsService(second, default_credits=100, refresh_every=FAST)
    try:
        await here.start()
        await there.start()
        assert (await there.get(GUILD)).blocked_words == ()  # cached there
        reads = count_reads(second, monkeypatch)
        await here.update(GUILD, blocked_words=["gore"], allowed_channel_ids=[CHANNEL])
        deadline = asyncio.get_running_loop().time() + 30
        while (await there.get(GUILD)).blocked_words != ("gore",):
            assert asyncio.get_running_loop().time() < deadline, "the change never arrived"
            await asyncio.sleep(FAST)
        assert (await there.get(GUILD)).allowed_channel_ids == (CHANNEL,)
        assert reads == []  # brought by the refresh loop, not by reading the guild again
    finally:
        await asyncio.gather(here.close(), there.close())
        await asyncio.gather(first.close(), second.close())


async def test_a_refresh_reads_only_the_changed_guilds(storage: Storage, database_url: str) -> None:
    service = GuildSettingsService(storage, default_credits=100, refresh_every=3600)
    await service.start()
    other = await open_storage(database_url)
    try:
        guilds = [GUILD + n for n in range(50)]
        for guild in guilds:
            await service.get(guild)
        assert await service.refresh() == 0  # nothing changed: nothing read
        writer = GuildSettingsService(other, default_credits=100)
        await writer.update(guilds[7], daily_user_cap=4)
        await writer.update(OTHER_GUILD, daily_user_cap=9)  # not cached here: ignored
        assert await service.refresh() == 2
        assert (await service.get(guilds[7])).daily_user_cap == 4
        assert await service.refresh() == 0
    finally:
        await service.close()
        await other.close()


async def test_a_read_that_a_refresh_overtook_is_not_cached(
    storage: Storage, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refresh skips guilds it does not hold; a read in flight meanwhile may be older
    # than the change it skipped, so it is answered but not kept.
    service = GuildSettingsService(storage, default_credits=100, refresh_every=3600)
    await service.start()
    other = await open_storage(database_url)
    writer = GuildSettingsService(other, default_credits=100)
    original = storage.get_settings

    async def read_then_change(guild_id: int) -> GuildSettings:
        settings = await original(guild_id)
        if settings.daily_user_cap is None:
            await writer.update(guild_id, daily_user_cap=2)
            assert await service.refresh() == 1
        return settings

    monkeypatch.setattr(storage, "get_settings", read_then_change)
    try:
        assert (await service.get(GUILD)).daily_user_cap is None
        assert (await service.get(GUILD)).daily_user_cap == 2
    finally:
        await service.close()
        await other.close()


async def test_concurrent_changes_get_distinct_numbers_in_commit_order(
    storage: Storage, database_url: str
) -> None:
    other = await open_storage(database_url)
    try:
        services = [GuildSettingsService(s, default_credits=100) for s in (storage, other)]
        start = await storage.settings_version()
        changed = await asyncio.gather(
            *(services[n % 2].update(GUILD + n, daily_user_cap=n) for n in range(20))
        )
        versions = sorted(settings.version for settings in changed)
        assert versions == list(range(start + 1, start + 21))
        seen = await storage.settings_changed_since(start, limit=100)
        assert [s.version for s in seen] == versions
        assert await storage.settings_changed_since(versions[-1], limit=100) == []
    finally:
        await other.close()


async def test_the_refresh_loop_outlives_an_unexpected_error(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    changed_since = storage.settings_changed_since

    async def flaky(version: int, *, limit: int) -> list[GuildSettings]:
        calls.append("call")
        if len(calls) == 1:
            raise RuntimeError("a bug in one refresh")
        return await changed_since(version, limit=limit)

    service = GuildSettingsService(storage, default_credits=100, refresh_every=FAST)
    await service.start()
    monkeypatch.setattr(storage, "settings_changed_since", flaky)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(calls) < 3:
            assert asyncio.get_running_loop().time() < deadline, "the loop stopped"
            await asyncio.sleep(FAST)
    finally:
        await service.close()
