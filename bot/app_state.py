"""Small named values the bot keeps between runs (the command-tree hash, the Segmind
balance state), stored in the database beside the ledger but apart from money."""

from __future__ import annotations

from typing import Final

from bot.storage import Storage

__all__ = ["MAX_STATE_KEY_LENGTH", "AppState"]

MAX_STATE_KEY_LENGTH: Final = 200


class AppState:
    """Get and set string values by key."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def get(self, key: str) -> str | None:
        return await self._storage.get_state(self._key(key))

    async def set(self, key: str, value: str) -> bool:
        """Store ``value``; False when ``key`` already held it (in any process sharing the
        database), so that a change is acted on once."""
        if not isinstance(value, str):
            raise TypeError("state values are strings")
        return await self._storage.set_state(self._key(key), value)

    @staticmethod
    def _key(key: str) -> str:
        if not isinstance(key, str) or not key or len(key) > MAX_STATE_KEY_LENGTH:
            raise ValueError(f"state keys are 1 to {MAX_STATE_KEY_LENGTH} characters")
        return key
