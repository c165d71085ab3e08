"""Fixtures shared by the tests of ``bot/``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bot.__main__ as entry
from bot.config import Settings

Serve = Callable[[Settings], Awaitable[int]]


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
