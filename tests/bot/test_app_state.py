"""AppState: small named values kept between runs, on both databases."""

from __future__ import annotations

import pytest

from bot.app_state import AppState
from bot.storage import Storage


async def test_state_round_trip(storage: Storage) -> None:
    state = AppState(storage)
    assert await state.get("command-tree-hash") is None
    assert await state.set("command-tree-hash", "abc123")
    assert await state.set("command-tree-hash", "def456")
    assert await state.get("command-tree-hash") == "def456"
    # The same value again changes nothing, and says so: a change is acted on once.
    assert not await state.set("command-tree-hash", "def456")
    assert await state.get("command-tree-hash") == "def456"
    with pytest.raises(ValueError, match="state keys"):
        await state.set("", "x")
    with pytest.raises(ValueError, match="state keys"):
        await state.get("k" * 201)


async def test_the_health_probe_answers_until_closed(storage: Storage) -> None:
    await storage.ping()
    await storage.close()
    with pytest.raises(Exception, match="already closed"):
        await storage.ping()
