"""What a job's status line shows, and the one loop that keeps every line current.

One refresh loop for the whole bot, under one edit budget that grows with the images
started (not with the jobs waiting); a line is edited only when what it shows changed
enough to matter (see :func:`display_key`). The loop knows nothing of Discord: a
:class:`BoardSource` (the job queue) names the lines and shows them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, Literal, Protocol, TypeVar

from bot.i18n import _N, Message, ShortDuration

__all__ = [
    "BoardSource",
    "JobProgress",
    "StatusBoard",
    "describe_eta",
    "display_key",
    "eta_minutes",
    "place_bracket",
]

log = logging.getLogger(__name__)

#: Edits earned by each image that starts: a newcomer's first line, and half a change.
EDITS_PER_START = 1.5
#: Edits earned per second even when nothing starts (a 429 pause, slow calls).
IDLE_EDITS_PER_SECOND = 0.1
#: The bot-wide ceiling: Discord allows a bot about 50 requests a second in all.
MAX_EDITS_PER_SECOND = 5.0
#: Edits that may go out at once (after a quiet spell).
BUDGET_CAPACITY = 5.0
TICK = 0.25


@dataclass(frozen=True)
class JobProgress:
    """What a status message shows."""

    state: Literal["queued", "generating"]
    position: int | None  # 1-based place among jobs not started yet
    done: int
    total: int
    eta: float | None = None  # queued: seconds until the job is expected to be done
    elapsed: float | None = None  # generating: seconds since its first image started


def place_bracket(place: int) -> int:
    """Exact up to 10, then the top of its 20/50/100/200/500/… bracket."""
    if place <= 10:
        return place
    bound = 20
    while place > bound:
        bound = bound * 5 // 2 if str(bound)[0] == "2" else bound * 2
    return bound


def eta_minutes(seconds: float) -> int:
    """The estimate as shown: 0 for under a minute, else whole minutes."""
    return 0 if seconds < 60 else round(seconds / 60)


def describe_eta(seconds: float) -> Message:
    """The estimate in words (render it for the reader), as precise as :func:`eta_minutes`."""
    minutes = eta_minutes(seconds)
    if minutes == 0:
        return _N("under a minute")
    return _N("about {duration}", duration=ShortDuration(timedelta(minutes=minutes)))


def _elapsed_bracket(seconds: float) -> int:
    if seconds < 10:
        return 0
    if seconds < 30:
        return 10
    if seconds < 60:
        return 30
    return 60 * math.floor(seconds / 60)


def display_key(progress: JobProgress) -> Hashable:
    """Two progresses with the same key show the same thing closely enough: no edit."""
    if progress.state == "queued":
        return (
            "queued",
            place_bracket(progress.position or 0),
            None if progress.eta is None else eta_minutes(progress.eta),
        )
    return ("generating", progress.done, _elapsed_bracket(progress.elapsed or 0.0))


#: The key of a line whose first image has just started.
_JUST_STARTED: Hashable = ("generating", 0, 0)


class Line(Protocol):
    """A job as the board sees it: the key of what its line shows now."""

    shown: Hashable | None


L = TypeVar("L", bound=Line)


class BoardSource(Protocol[L]):
    """What the board reads from the queue."""

    def board_lines(self) -> Sequence[L]:
        """A bounded number of live lines for this tick, the most useful first."""

    def board_progress(self, line: L) -> JobProgress | None:
        """The line's progress now; None if it is no longer the board's to edit."""

    async def board_show(self, line: L, progress: JobProgress) -> None:
        """Show ``progress`` on the line (never raises)."""


class StatusBoard(Generic[L]):
    """The shared edit budget and the loop that spends it."""

    def __init__(self, source: BoardSource[L], *, tick: float = TICK) -> None:
        self._source = source
        self._tick = tick
        self._budget = BUDGET_CAPACITY  # room for the first lines at once
        self._earned = 0.0
        self._task: asyncio.Task[None] | None = None

    def earn(self, starts: int = 1) -> None:
        """Images started: places moved, so lines may change."""
        self._earned = min(self._earned + starts * EDITS_PER_START, BUDGET_CAPACITY)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="status-board")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                await self.step()
            except Exception:  # a bug here must not end the refreshing for every job
                log.exception("status board refresh failed")

    async def step(self) -> int:
        """One tick: add what the starts earned (never faster than the ceiling), then refresh."""
        moved = min(self._earned, MAX_EDITS_PER_SECOND * self._tick)
        self._earned -= moved
        self._budget = min(
            self._budget + moved + IDLE_EDITS_PER_SECOND * self._tick, BUDGET_CAPACITY
        )
        return await self.refresh()

    async def refresh(self) -> int:
        """One tick: edit the lines that changed while the budget lasts; how many were edited."""
        edited = 0
        if self._budget < 1:
            return edited
        for line in self._source.board_lines():
            progress = self._source.board_progress(line)
            if progress is None:
                continue
            key = display_key(progress)
            if key == line.shown:
                continue
            first = line.shown is None
            line.shown = key
            if first and key == _JUST_STARTED:
                continue  # started at once: Discord's own "thinking…" already says it
            self._budget -= 1
            edited += 1
            await self._source.board_show(line, progress)
            if self._budget < 1:
                break
        return edited
