"""End-to-end harness: the real ImagineBot, its real cogs, a temporary database,
the fake Segmind API and the fake Discord, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bot.app import ImagineBot
from bot.config import Settings
from bot.event_loop import LoopFactory, loop_factories, resolve
from bot.segmind import SegmindClient
from tests.fakes.fake_discord import (
    FakeChannel,
    FakeDiscord,
    InteractionRecord,
    StoredMessage,
    run_client,
)
from tests.fakes.fake_segmind import FakeSegmind

RESULT_TITLE = "Kandinsky 2.1"
# SEGMIND_TIMEOUT for a test that holds the fake API: the test ends the hold, never the timeout.
HELD = 60.0


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, LoopFactory]:
    """Every end-to-end test runs on each loop the bot can run on here (``EVENT_LOOP``):
    asyncio's own and, where it is installed, uvloop, which production picks by default."""
    return loop_factories()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bots_on_postgresql: the bots always use PostgreSQL; only that variant runs"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test's PostgreSQL variant runs on the production loop only:
    the loops are already compared on SQLite, and the suite's time stays bounded."""
    production = loop_factories()[resolve("auto")]
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_postgresql = params.get("backend") == "postgresql"
        factory = params.get("_asyncio_loop_factory", production)
        pg_only = item.get_closest_marker("bots_on_postgresql") is not None
        redundant = on_postgresql and factory is not production
        (drop if redundant or (pg_only and not on_postgresql) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class E2EBot(ImagineBot):
    """The production bot with two test-speed knobs: no 5 s pause between shard
    identifies, and millisecond retry backoff."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None

    def create_segmind_client(
        self, session: aiohttp.ClientSession, **overrides: Any
    ) -> SegmindClient:
        return super().create_segmind_client(
            session, **{"backoff_base": 0.01, "backoff_max": 0.05, **overrides}
        )


def is_result(message: StoredMessage) -> bool:
    return any(embed.get("title") == RESULT_TITLE for embed in message.embeds)


def embed_field(message: StoredMessage, name: str) -> str:
    for embed in message.embeds:
        for item in embed.get("fields", []):
            if item["name"] == name:
                return str(item["value"])
    raise KeyError(name)


@dataclass
class World:
    discord: FakeDiscord
    segmind: FakeSegmind
    settings: Settings

    def make_bot(self, **overrides: Any) -> E2EBot:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return E2EBot(settings)

    @contextlib.asynccontextmanager
    async def running(self, **overrides: Any) -> AsyncIterator[E2EBot]:
        bot = self.make_bot(**overrides)
        async with run_client(bot, self.discord):
            yield bot

    async def imagine(
        self,
        options: dict[str, Any],
        *,
        user: Any = None,
        channel: FakeChannel | None = None,
        **kwargs: Any,
    ) -> InteractionRecord:
        return await self.discord.slash("imagine", options, user=user, channel=channel, **kwargs)

    async def result(
        self,
        *,
        channel: FakeChannel | None = None,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 10.0,
    ) -> StoredMessage:
        return await self.discord.wait_for_message(
            channel or self.discord.channel,
            lambda m: is_result(m) and (predicate is None or predicate(m)),
            timeout=timeout,
        )

    async def reply(
        self, record: InteractionRecord, contains: str, *, timeout: float = 10.0
    ) -> StoredMessage:
        """The private reply of ``record`` once it says ``contains``."""
        return await self.discord.wait_for(
            lambda: next(
                (m for m in record.messages if not m.loading and contains in m.content), None
            ),
            timeout=timeout,
            what=f"a reply containing {contains!r}",
        )

    def results(self, channel: FakeChannel | None = None) -> list[StoredMessage]:
        return [
            m
            for m in self.discord.channel_messages(channel or self.discord.channel)
            if is_result(m)
        ]


@pytest.fixture
def world(
    fake_discord: FakeDiscord,
    fake_segmind: FakeSegmind,
    database_url: str,
) -> World:
    """The fakes and the bot's settings, on a fresh database of each kind: every
    end-to-end test runs on SQLite and on PostgreSQL (tests/pg.py)."""
    settings = Settings(
        discord_token=fake_discord.token,
        segmind_api_key=fake_segmind.api_key,
        segmind_base_url=fake_segmind.url,
        segmind_timeout=2.0,
        segmind_max_attempts=3,
        segmind_retry_budget=10.0,
        database_url=database_url,
        default_guild_credits=100,
        guild_ready_timeout=0.05,
        shutdown_grace_seconds=2.0,
    )  # type: ignore[call-arg]
    return World(discord=fake_discord, segmind=fake_segmind, settings=settings)
