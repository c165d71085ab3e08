"""Guild settings (the limits a server's admins set) as a service of their own.

Reads come from a bounded in-memory cache, so ``/imagine`` checks a server's rules
without a trip to the database. A change made here is written in one transaction
and cached at once; changes made by other processes sharing the database arrive
through one loop that asks every ``refresh_every`` seconds for the settings changed
since the newest change it has seen (each change has a number, see
``bot/storage/_settings.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from types import EllipsisType
from typing import Final

from bot.checks import snowflake, whole_amount
from bot.credit_errors import InvalidSetting
from bot.i18n import _N
from bot.storage import Storage, StorageError
from bot.storage.base import SettingsChanges
from bot.storage.records import GuildSettings

__all__ = [
    "CACHE_SIZE",
    "MAX_BLOCKED_WORDS",
    "MAX_BLOCKED_WORD_LENGTH",
    "MAX_CHANNELS",
    "REFRESH_EVERY",
    "GuildSettings",
    "GuildSettingsService",
]

log = logging.getLogger(__name__)

MAX_CHANNELS: Final = 500
MAX_BLOCKED_WORDS: Final = 500
MAX_BLOCKED_WORD_LENGTH: Final = 100
#: Seconds between two looks for changes made by other processes.
REFRESH_EVERY: Final = 2.0
#: Guilds whose settings are kept in memory (the least recently used go first).
CACHE_SIZE: Final = 10_000
#: Changes read per look; a longer burst is read in several, one after another.
CHANGES_PER_READ: Final = 500


def _channel_id(value: object) -> int:
    try:
        return snowflake(value, "channel id")
    except ValueError:
        raise InvalidSetting(_N("{item} is not a channel id.", item=repr(value))) from None


def _channel_ids(value: object) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSetting(_N("Allowed channels must be a list of channel ids."))
    channels = tuple(dict.fromkeys(_channel_id(item) for item in value))
    if len(channels) > MAX_CHANNELS:
        raise InvalidSetting(_N("At most {limit} channels can be allowed.", limit=MAX_CHANNELS))
    return channels


def _blocked_words(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSetting(_N("Blocked words must be a list of words."))
    words: list[str] = []
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise InvalidSetting(_N("{item} is not a word.", item=repr(item)))
        word = " ".join(item.split())
        if not word or word.casefold() in seen:
            continue
        if len(word) > MAX_BLOCKED_WORD_LENGTH:
            raise InvalidSetting(
                _N(
                    "Blocked words can be at most {limit} characters long.",
                    limit=MAX_BLOCKED_WORD_LENGTH,
                )
            )
        seen.add(word.casefold())
        words.append(word)
    if len(words) > MAX_BLOCKED_WORDS:
        raise InvalidSetting(_N("At most {limit} words can be blocked.", limit=MAX_BLOCKED_WORDS))
    return tuple(words)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("the guild settings refresh stopped", exc_info=error)


def _optional_amount(value: int | None, what: str) -> int | None:
    return None if value is None else whole_amount(value, minimum=0, what=what)


class GuildSettingsService:
    """Every guild's settings, cached; :meth:`start` begins following other processes'
    changes and :meth:`close` stops it."""

    def __init__(
        self,
        storage: Storage,
        *,
        default_credits: int,
        refresh_every: float = REFRESH_EVERY,
        capacity: int = CACHE_SIZE,
    ) -> None:
        if not refresh_every > 0 or capacity < 1:
            raise ValueError("refresh_every must be > 0 and capacity >= 1")
        self._storage = storage
        self._default = default_credits
        self._every = refresh_every
        self._capacity = capacity
        self._cache: OrderedDict[int, GuildSettings] = OrderedDict()
        #: The newest change number read from the database (None: not started).
        self._seen: int | None = None
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Note the newest change, then look for newer ones every ``refresh_every`` s."""
        if self._loop is None:
            self._seen = await self._storage.settings_version()
            self._loop = asyncio.get_running_loop().create_task(
                self._follow(), name="guild settings refresh"
            )
            self._loop.add_done_callback(_log_failure)

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    async def get(self, guild_id: int) -> GuildSettings:
        """The guild's settings: from memory, or read once and then kept."""
        guild_id = snowflake(guild_id, "guild_id")
        cached = self._cache.get(guild_id)
        if cached is not None:
            self._cache.move_to_end(guild_id)
            return cached
        seen = self._seen
        settings = await self._storage.get_settings(guild_id)
        # A look for changes that ended during the read skipped this uncached guild's;
        # without one, any later change has a number above what was seen and will come.
        if seen is not None and seen == self._seen:
            self._keep(settings)
        return settings

    async def update(
        self,
        guild_id: int,
        *,
        daily_user_cap: int | EllipsisType | None = ...,
        allowed_channel_ids: Iterable[int] | EllipsisType = ...,
        blocked_words: Iterable[str] | EllipsisType = ...,
        low_balance_threshold: int | EllipsisType | None = ...,
        notice_channel_id: int | EllipsisType | None = ...,
    ) -> GuildSettings:
        """Change only the settings passed (``...`` = leave as is); returns the result."""
        guild_id = snowflake(guild_id, "guild_id")
        changes: SettingsChanges = {}
        if daily_user_cap is not ...:
            changes["daily_user_cap"] = _optional_amount(daily_user_cap, "daily limit")
        if allowed_channel_ids is not ...:
            changes["allowed_channel_ids"] = _channel_ids(allowed_channel_ids)
        if blocked_words is not ...:
            changes["blocked_words"] = _blocked_words(blocked_words)
        if low_balance_threshold is not ...:
            changes["low_balance_threshold"] = _optional_amount(
                low_balance_threshold, "low-balance threshold"
            )
        if notice_channel_id is not ...:
            changes["notice_channel_id"] = (
                None if notice_channel_id is None else _channel_id(notice_channel_id)
            )
        settings = await self._storage.update_settings(
            guild_id, changes, default_credits=self._default
        )
        self._keep(settings)
        if changes:
            log.info(
                "guild %d settings changed: %s",
                guild_id,
                ", ".join(sorted(changes)),
                extra={"guild_id": guild_id},
            )
        return settings

    async def claim_low_balance_notice(self, guild_id: int) -> bool:
        """True exactly once each time the balance falls below the guild's threshold."""
        return await self._storage.claim_low_balance_notice(snowflake(guild_id, "guild_id"))

    async def refresh(self) -> int:
        """Read the changes made since the newest seen; refresh the cached guilds among
        them. Returns how many changes were read."""
        if self._seen is None:
            raise RuntimeError("start() first")
        changed = await self._storage.settings_changed_since(self._seen, limit=CHANGES_PER_READ)
        for settings in changed:
            if settings.guild_id in self._cache:
                self._keep(settings)
        if changed:
            self._seen = changed[-1].version
        return len(changed)

    def _keep(self, settings: GuildSettings) -> None:
        """Cache ``settings`` unless a newer change of that guild is cached already."""
        guild_id = settings.guild_id
        cached = self._cache.get(guild_id)
        if cached is None or cached.version <= settings.version:
            self._cache[guild_id] = settings
        self._cache.move_to_end(guild_id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                while await self.refresh() == CHANGES_PER_READ:
                    pass  # a burst: read the rest at once
            except StorageError as error:
                log.warning("could not look for guild settings changes: %s", error)
            except Exception:  # the loop must outlive a bug, or the cache goes stale for good
                log.exception("could not look for guild settings changes")
