"""Fixtures shared by the tests of ``bot/``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import bot.__main__ as entry
from bot.config import Settings
from bot.credits import CreditLedger
from bot.storage import Storage, open_storage

Serve = Callable[[Settings], Awaitable[int]]


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    """The storage at ``database_url`` (SQLite file or throwaway PostgreSQL), closed after."""
    async with opened_storage(database_url) as opened:
        yield opened


@asynccontextmanager
async def opened_storage(url: str) -> AsyncIterator[Storage]:
    """A storage at ``url``, closed after: a process of its own."""
    opened = await open_storage(url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def first(pg_url: str) -> AsyncIterator[Storage]:
    """A process on a fresh PostgreSQL database."""
    async with opened_storage(pg_url) as opened:
        yield opened


@pytest.fixture
async def second(pg_url: str, first: Storage) -> AsyncIterator[Storage]:
    """Another process on the same PostgreSQL database (opened after ``first`` migrated it)."""
    async with opened_storage(pg_url) as opened:
        yield opened


@pytest.fixture
def ledger(storage: Storage) -> CreditLedger:
    """A ledger on ``storage``; a guild it has not seen starts with 100 credits."""
    return CreditLedger(storage, default_credits=100)


@pytest.fixture
def start_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Serve], int]:
    """``python -m bot``'s ``main()`` with its ``serve`` replaced: minimal settings from the
    environment, no developer's .env, logging left alone. Returns main's exit code."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.setattr(entry, "configure_logging", lambda *args: None)

    def start(serve: Serve) -> int:
        monkeypatch.setattr(entry, "serve", serve)
        return entry.main([])

    return start
