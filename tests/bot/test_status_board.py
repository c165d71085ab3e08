"""The status board: what counts as a change worth an edit, and one budget for every line."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import pytest

from bot.status_board import (
    BUDGET_CAPACITY,
    EDITS_PER_START,
    IDLE_EDITS_PER_SECOND,
    MAX_EDITS_PER_SECOND,
    TICK,
    JobProgress,
    StatusBoard,
    describe_eta,
    display_key,
    place_bracket,
)


@dataclass(eq=False)
class FakeLine:
    progress: JobProgress | None
    shown: Hashable | None = None
    edits: list[JobProgress] = field(default_factory=list)


class FakeSource:
    def __init__(self, lines: list[FakeLine]) -> None:
        self.lines = lines

    def board_lines(self) -> Sequence[FakeLine]:
        return self.lines

    def board_progress(self, line: FakeLine) -> JobProgress | None:
        return line.progress

    async def board_show(self, line: FakeLine, progress: JobProgress) -> None:
        line.edits.append(progress)


def queued(place: int, eta: float = 30.0) -> JobProgress:
    return JobProgress("queued", place, 0, 1, eta=eta)


def test_places_are_exact_up_to_ten_then_bracketed() -> None:
    assert [place_bracket(p) for p in (1, 2, 9, 10)] == [1, 2, 9, 10]
    assert [place_bracket(p) for p in (11, 20, 21, 37, 50, 51)] == [20, 20, 50, 50, 50, 100]
    assert [place_bracket(p) for p in (101, 201, 999, 1001, 2500, 7000)] == [
        200,
        500,
        1000,
        2000,
        5000,
        10000,
    ]


def test_the_estimate_is_shown_in_minutes() -> None:
    assert describe_eta(12) == "under a minute"
    assert describe_eta(59.9) == "under a minute"
    assert describe_eta(100) == "about 2 min"
    assert describe_eta(37 * 60 + 10) == "about 37 min"


def test_only_a_change_that_matters_changes_the_key() -> None:
    assert display_key(queued(37, 130)) == display_key(queued(36, 140))  # same bracket, minute
    assert display_key(queued(37, 130)) != display_key(queued(37, 200))  # another minute
    assert display_key(queued(21, 130)) != display_key(queued(20, 130))  # another bracket
    assert display_key(queued(5)) != display_key(queued(4))  # exact near the front
    running = JobProgress("generating", None, 0, 4, elapsed=3.0)
    assert display_key(running) == display_key(JobProgress("generating", None, 0, 4, elapsed=8))
    assert display_key(running) != display_key(JobProgress("generating", None, 0, 4, elapsed=12))
    assert display_key(running) != display_key(JobProgress("generating", None, 1, 4, elapsed=3))


async def test_the_budget_caps_edits_however_many_lines_changed() -> None:
    lines = [FakeLine(queued(place)) for place in range(1, 1001)]
    board = StatusBoard(FakeSource(lines))
    assert await board.refresh() == int(BUDGET_CAPACITY)
    # Nearest to the front first (the source's order).
    assert [bool(line.edits) for line in lines[:6]] == [True] * 5 + [False]
    assert await board.refresh() == 0  # spent: nothing more until it is earned
    board.earn(2)
    assert await board.refresh() == 0  # earned, but paid out by the ticks
    edited = [await board.step() for _ in range(8)]
    assert sum(edited) == int(2 * EDITS_PER_START + 8 * TICK * IDLE_EDITS_PER_SECOND)
    # However much was earned, a tick pays out at most the bot-wide ceiling.
    board.earn(1000)
    assert await board.step() <= MAX_EDITS_PER_SECOND * TICK + 1


async def test_a_line_is_edited_again_only_when_it_changed_enough() -> None:
    line = FakeLine(queued(37, 130))
    board = StatusBoard(FakeSource([line]))
    assert await board.refresh() == 1
    line.progress = queued(36, 140)  # same bracket, same minute
    assert await board.refresh() == 0
    line.progress = queued(20, 140)  # a new bracket
    assert await board.refresh() == 1
    assert [p.position for p in line.edits] == [37, 20]


async def test_a_job_started_at_once_costs_no_edit() -> None:
    # Discord's own "thinking…" says it until the result: no "generating" edit.
    line = FakeLine(JobProgress("generating", None, 0, 1, elapsed=0.1))
    board = StatusBoard(FakeSource([line]))
    assert await board.refresh() == 0
    assert line.edits == [] and line.shown is not None
    line.progress = JobProgress("generating", None, 0, 1, elapsed=12.0)
    assert await board.refresh() == 1


async def test_lines_with_nothing_to_show_are_skipped() -> None:
    gone = FakeLine(None)
    board = StatusBoard(FakeSource([gone, FakeLine(queued(1))]))
    assert await board.refresh() == 1
    assert gone.edits == []


async def test_one_loop_refreshes_every_line_at_a_bounded_rate() -> None:
    lines = [FakeLine(queued(place)) for place in range(1, 101)]
    board = StatusBoard(FakeSource(lines), tick=0.01)
    tasks_before = len(asyncio.all_tasks())
    board.start()
    board.start()  # idempotent: still one task for the whole bot
    assert len(asyncio.all_tasks()) == tasks_before + 1
    for _ in range(10):
        board.earn(100)  # far more starts than the ceiling allows
        await asyncio.sleep(0.01)
    await board.stop()
    edited = sum(len(line.edits) for line in lines)
    # The first capacity, then at most MAX_EDITS_PER_SECOND per second of ticks, however
    # much was earned (counted in ticks, not measured time: the loop sleeps one tick each).
    assert edited <= BUDGET_CAPACITY + MAX_EDITS_PER_SECOND * 0.01 * 20


@pytest.mark.parametrize("place", [1, 10, 11, 500, 5001])
def test_a_queued_key_depends_on_place_and_minute_only(place: int) -> None:
    assert display_key(queued(place, 61)) == display_key(queued(place, 89))
