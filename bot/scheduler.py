"""The fair order in which waiting images start: guilds in turn, then members in turn.

Pure and synchronous: one entry per image in its member's lane; the next comes from the guild,
then the member, served longest ago (newcomers first), so a flood delays others by at most
one image per round. O(1): lanes wait in two rotations, never served and served.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["FairScheduler"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class _Rotation(Generic[K]):
    """Keys taking turns: never-served keys first (by arrival), then served ones (longest ago)."""

    def __init__(self) -> None:
        self._fresh: deque[K] = deque()
        self._served: deque[K] = deque()

    def __bool__(self) -> bool:
        return bool(self._fresh or self._served)

    def add(self, key: K) -> None:
        self._fresh.append(key)

    def front(self) -> K:
        return self._fresh[0] if self._fresh else self._served[0]

    def served(self, *, keep: bool) -> None:
        """The front key had its turn: to the back of the served keys, or out unless ``keep``."""
        key = self._fresh.popleft() if self._fresh else self._served.popleft()
        if keep:
            self._served.append(key)


class FairScheduler(Generic[T]):
    """Entries in per-(guild, member) lanes, popped guild round-robin, then member round-robin."""

    def __init__(self) -> None:
        self._guilds: _Rotation[int] = _Rotation()
        self._members: dict[int, _Rotation[int]] = {}
        self._lanes: dict[tuple[int, int], deque[T]] = {}
        self._size = 0

    def __len__(self) -> int:
        """Entries waiting, across every lane."""
        return self._size

    def push(self, guild_id: int, user_id: int, entry: T) -> None:
        """Add ``entry`` at the back of the member's lane."""
        self._lane(guild_id, user_id).append(entry)
        self._size += 1

    def push_front(self, guild_id: int, user_id: int, entry: T) -> None:
        """Put ``entry`` back at the front of the member's lane (it is next for that member)."""
        self._lane(guild_id, user_id).appendleft(entry)
        self._size += 1

    def pop(self) -> T | None:
        """The next entry to start, or None when nothing waits."""
        if not self._guilds:
            return None
        guild_id = self._guilds.front()
        members = self._members[guild_id]
        user_id = members.front()
        lane = self._lanes[(guild_id, user_id)]
        entry = lane.popleft()
        self._size -= 1
        if not lane:
            del self._lanes[(guild_id, user_id)]
        members.served(keep=bool(lane))
        if not members:
            del self._members[guild_id]
        self._guilds.served(keep=bool(members))
        return entry

    def clear(self) -> None:
        self._guilds = _Rotation()
        self._members.clear()
        self._lanes.clear()
        self._size = 0

    def _lane(self, guild_id: int, user_id: int) -> deque[T]:
        lane = self._lanes.get((guild_id, user_id))
        if lane is None:
            lane = self._lanes[(guild_id, user_id)] = deque()
            members = self._members.get(guild_id)
            if members is None:
                members = self._members[guild_id] = _Rotation()
                self._guilds.add(guild_id)
            members.add(user_id)
        return lane
