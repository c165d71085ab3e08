"""The ``commands.Bot`` subclass: builds every service in ``setup_hook`` and closes them in reverse.

Cogs reach the services through typed attributes (``bot.ledger``, ``bot.jobs``, ``bot.imagine``…).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import Any, Generic, Self, TypeVar, overload

import aiohttp
import discord
import yarl
from discord.ext import commands

from bot.app_state import AppState
from bot.balance_watch import STATE_KEY, BalanceNotice, BalanceState, BalanceWatch, tell_owners
from bot.command_sync import sync_commands
from bot.config import Settings
from bot.coordination import SharedRateLimiter, SharedSlots, owner_name
from bot.crash_recovery import CrashRecovery
from bot.credits import CreditLedger
from bot.guild_settings import GuildSettingsService
from bot.health import HealthServer
from bot.i18n import CatalogTranslator
from bot.image_store import ImageStore
from bot.imagine_actions import ImagineActions
from bot.insight import Insight
from bot.jobs import JobQueue
from bot.metrics import Metrics
from bot.replies import ImagineTree
from bot.segmind import SegmindClient
from bot.storage import Storage, open_storage

__all__ = ["EXTENSIONS", "ImagineBot"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Every feature is one extension; the bot loads them all.
EXTENSIONS: tuple[str, ...] = ("cogs.imagine", "cogs.credits", "cogs.gallery")


def _intents() -> discord.Intents:
    # Slash commands and buttons arrive as interactions; the bot needs guilds and
    # channels cached, nothing privileged (no members, presences or message content).
    return discord.Intents(guilds=True)


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py at a REST proxy or the offline harness, when configured.

    These are process-wide attributes of discord.py, so they are set once by the
    entry point (or a test fixture), before any login.
    """
    if settings.discord_api_url:
        discord.http.Route.BASE = settings.discord_api_url.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class _Built(Generic[T]):
    """A service ``setup_hook`` builds (kept as ``_<name>``): reading it earlier is a bug."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, bot: None, owner: type) -> Self: ...

    @overload
    def __get__(self, bot: object, owner: type) -> T: ...

    def __get__(self, bot: object | None, owner: type) -> T | Self:
        if bot is None:
            return self
        service: T | None = getattr(bot, f"_{self._name}")
        if service is None:
            raise RuntimeError(f"bot.{self._name} is created in setup_hook")
        return service


class ImagineBot(commands.AutoShardedBot):
    """The bot. One instance per process; shards as configured."""

    storage = _Built[Storage]()
    ledger = _Built[CreditLedger]()
    state = _Built[AppState]()
    guild_settings = _Built[GuildSettingsService]()
    recovery = _Built[CrashRecovery]()
    segmind = _Built[SegmindClient]()
    jobs = _Built[JobQueue]()
    insight = _Built[Insight]()

    def __init__(
        self,
        settings: Settings,
        *,
        extensions: Sequence[str] = EXTENSIONS,
        **options: Any,
    ) -> None:
        options.setdefault("guild_ready_timeout", settings.guild_ready_timeout)
        if settings.shard_ids is not None:
            options.setdefault("shard_ids", settings.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=_intents(),
            allowed_mentions=discord.AllowedMentions.none(),
            shard_count=settings.shard_count,
            help_command=None,
            tree_cls=ImagineTree,
            **options,
        )
        self.settings = settings
        self.metrics = Metrics()
        self._extensions = tuple(extensions)
        self._storage: Storage | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ledger: CreditLedger | None = None
        self._state: AppState | None = None
        self._guild_settings: GuildSettingsService | None = None
        self._recovery: CrashRecovery | None = None
        self._segmind: SegmindClient | None = None
        self._jobs: JobQueue | None = None
        self._images: ImageStore | None = None
        self._health: HealthServer | None = None
        self._insight: Insight | None = None
        self._balance_watch: BalanceWatch | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        #: The /imagine feature's button actions, set by its cog while loaded.
        self.imagine: ImagineActions | None = None
        #: This process's name in a shared database (jobs, API slots, heartbeats).
        self.owner = owner_name(settings.shard_ids)

    @property
    def accepting_jobs(self) -> bool:
        return not self._closing and self._jobs is not None and not self._jobs.closing

    # -- life cycle ----------------------------------------------------------

    async def setup_hook(self) -> None:
        settings = self.settings
        self._storage = storage = await open_storage(settings.database_url)
        self._ledger = ledger = CreditLedger(
            storage, default_credits=settings.default_guild_credits
        )
        self._state = AppState(storage)
        self._guild_settings = GuildSettingsService(
            storage, default_credits=settings.default_guild_credits
        )
        await self._guild_settings.start()
        self._recovery = CrashRecovery(self, storage, ledger, owner=self.owner, spawn=self.spawn)
        await self._recovery.start()
        self._insight = Insight(self._storage)
        stored = await self._state.get(STATE_KEY)
        self._balance_watch = BalanceWatch(
            settings.segmind_balance_alert,
            BalanceState(stored) if stored in set(BalanceState) else BalanceState.UNKNOWN,
        )
        # The job queue bounds the API calls; aiohttp's default pool of 100 must not cap it lower.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=settings.max_concurrent_jobs)
        )
        self._segmind = self.create_segmind_client(self._session)
        self._images = ImageStore(memory_budget=settings.image_memory_budget_mb * 1024 * 1024)
        self._jobs = JobQueue(
            self._segmind,
            ledger,
            max_concurrent=settings.max_concurrent_jobs,
            max_per_user=settings.max_queued_per_user,
            metrics=self.metrics,
            owner=self.owner,
            slots=(
                SharedSlots(storage, self.owner, settings.max_concurrent_jobs)
                if storage.shared
                else None
            ),
            image_store=self._images,
            rpm=settings.segmind_rpm,
            max_waiting_images=settings.max_waiting_images,
            settle_from_channel=self._recovery.settle_delivery,
        )
        # Before the cogs: commands, options and choices carry their localisations from here.
        await self.tree.set_translator(CatalogTranslator())
        for name in self._extensions:
            await self.load_extension(name)
        await sync_commands(
            self.tree,
            self.state,
            application_id=self.application_id,
            dev_guild_id=settings.dev_guild_id,
        )
        if settings.health_port is not None:
            self._health = HealthServer(self, settings.health_host, settings.health_port)
            await self._health.start()
        # Start-up objects (modules, commands, caches) live for the whole run: keep them
        # out of the collector's scans so full collections under load stay short.
        gc.collect()
        gc.freeze()

    def create_segmind_client(
        self, session: aiohttp.ClientSession, **overrides: Any
    ) -> SegmindClient:
        """The API client over the bot's one HTTP session, reporting to the metrics.

        ``overrides`` go to :meth:`SegmindClient.from_settings` (tests shorten the backoff).
        """
        return SegmindClient.from_settings(
            session,
            self.settings,
            on_attempt=self.metrics.observe_api,
            on_credits=self._segmind_balance_reported,
            rate_limiter=self.shared_rate_limiter(),
            **overrides,
        )

    def _segmind_balance_reported(self, dollars: float) -> None:
        """Every ``x-remaining-credits``: the gauge, and the owners told on a crossing."""
        self.metrics.segmind_balance.set(dollars)
        if self._balance_watch is None or self._closing:
            return
        notice = self._balance_watch.observe(dollars)
        if notice is not None:
            self.spawn(self._announce_balance(notice), name="segmind balance notice")

    async def _announce_balance(self, notice: BalanceNotice) -> None:
        state = BalanceState.LOW if notice.kind == "low" else BalanceState.OK
        if not await self.state.set(STATE_KEY, state.value):
            # Another process sharing the database saw the same crossing and told the owners.
            log.info("Segmind balance %s: already announced", notice.kind)
            return
        log.log(
            logging.WARNING if notice.kind == "low" else logging.INFO,
            "Segmind balance %s: $%.2f (threshold $%.2f)",
            notice.kind,
            notice.balance,
            notice.threshold,
        )
        settings = self.settings
        await tell_owners(self, settings.owner_ids, settings.segmind_alert_channel_id, notice.text)

    def shared_rate_limiter(self) -> SharedRateLimiter | None:
        """With a shared database, ``SEGMIND_RPM`` holds across every process."""
        if self.settings.segmind_rpm and self._storage is not None and self._storage.shared:
            return SharedRateLimiter(self._storage, self.settings.segmind_rpm)
        return None

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        log.info("shutting down")
        if self._jobs is not None:
            await self._jobs.shutdown(self.settings.shutdown_grace_seconds)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._health is not None:
            await self._health.stop()
        if self._recovery is not None:
            await self._recovery.leave()
        for name in list(self.extensions):
            await self.unload_extension(name)
        await self.tree.set_translator(None)
        self._balance_watch = None
        await super().close()
        if self._session is not None:
            await self._session.close()
        if self._guild_settings is not None:
            await self._guild_settings.close()
        if self._storage is not None:
            await self._storage.close()
        if self._images is not None:
            self._images.close()
        log.info("closed")

    def spawn(self, coro: Any, *, name: str | None = None) -> asyncio.Task[None]:
        """Run a background task that is kept referenced and whose failure is logged."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("background task %s failed", task.get_name(), exc_info=error)
