"""Storage's read queries for insight (spending per day and member, a member's results),
on both backends: each test runs on a SQLite file and on a fresh PostgreSQL database.

A test clock places the jobs on chosen UTC days.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest

from bot.credits import CreditLedger, JobRecord, NewJob
from bot.insight import Insight, InvalidPeriod
from bot.storage import Storage, open_storage
from bot.storage.records import DailySpend, MemberSpend

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
CHANNEL = 333_333_333_333_333_333
ALICE = 444_444_444_444_444_444
BOB = 555_555_555_555_555_555
TODAY = datetime(2026, 1, 13, 9, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = TODAY

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def storage(database_url: str, clock: Clock) -> AsyncIterator[Storage]:
    opened = await open_storage(database_url, clock=clock)
    yield opened
    await opened.close()


async def run_job(
    ledger: CreditLedger,
    clock: Clock,
    at: datetime,
    user: int,
    *,
    images: int = 1,
    units: int = 1,
    delivered: int | None = None,
    guild: int = GUILD,
    message: int | None = None,
    seed: int = 7,
) -> JobRecord:
    """Reserve at ``at``, then settle: ``delivered`` images (all by default), None left open."""
    clock.now = at
    job = await ledger.reserve(
        NewJob(guild, CHANNEL, user, {"prompt": f"p{at:%d%H%M}", "seed": seed}, units, images)
    )
    if delivered is not None or message is not None:
        await ledger.commit(job, images if delivered is None else delivered, message_id=message)
    return job


def day(n: int, hour: int = 12) -> datetime:
    """``n`` days before TODAY, at ``hour`` UTC."""
    return (TODAY - timedelta(days=n)).replace(hour=hour, minute=0)


async def test_usage_counts_each_job_on_its_day_net_of_refunds(
    storage: Storage, clock: Clock
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    await run_job(ledger, clock, day(40), ALICE, delivered=1)  # outside a week
    await run_job(ledger, clock, day(3, 0), ALICE, units=2, delivered=1)
    await run_job(ledger, clock, day(3, 23), BOB, delivered=0)  # fully refunded
    await run_job(ledger, clock, day(1), ALICE, images=4, delivered=1)  # 3 of 4 refunded
    await run_job(ledger, clock, day(0, 1), BOB)  # still open: what it reserved
    await run_job(ledger, clock, day(0, 2), BOB, guild=OTHER_GUILD, delivered=1)
    clock.now = TODAY

    week = await storage.usage_summary(GUILD, days=7, top=5)
    assert (week.first_day, week.last_day) == (date(2026, 1, 7), date(2026, 1, 13))
    assert week.days == (
        DailySpend(date(2026, 1, 10), credits=2, refunded=1, jobs=2),
        DailySpend(date(2026, 1, 12), credits=1, refunded=3, jobs=1),
        DailySpend(date(2026, 1, 13), credits=1, refunded=0, jobs=1),
    )
    assert week.top_members == (MemberSpend(ALICE, 3, 2), MemberSpend(BOB, 1, 2))
    assert week.members == 2
    assert (week.credits, week.refunded, week.jobs) == (4, 4, 4)
    assert len(week.every_day()) == 7 and week.every_day()[0].credits == 0

    today = await storage.usage_summary(GUILD, days=1, top=1)
    assert today.first_day == today.last_day == date(2026, 1, 13)
    assert today.days == (DailySpend(date(2026, 1, 13), 1, 0, 1),)
    assert today.top_members == (MemberSpend(BOB, 1, 1),)

    top_one = await storage.usage_summary(GUILD, days=90, top=1)
    assert top_one.top_members == (MemberSpend(ALICE, 4, 3),)
    assert top_one.members == 2 and top_one.credits == 5


async def test_usage_of_a_quiet_guild_is_empty(storage: Storage) -> None:
    summary = await storage.usage_summary(GUILD, days=30, top=5)
    assert summary.days == () and summary.top_members == () and summary.members == 0
    assert summary.first_day == date(2025, 12, 15)
    assert [d.credits for d in summary.every_day()] == [0] * 30


async def test_member_results_are_delivered_jobs_with_a_message_newest_first(
    storage: Storage, clock: Clock
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    mine = [
        await run_job(ledger, clock, day(n), ALICE, message=900 + n, seed=n)
        for n in range(7, 0, -1)
    ]
    await run_job(ledger, clock, day(0), ALICE, delivered=0, message=1)  # refunded: no images
    await run_job(ledger, clock, day(0), ALICE, delivered=1)  # no result message (yet)
    await run_job(ledger, clock, day(0), ALICE)  # still running
    await run_job(ledger, clock, day(0), BOB, message=2)
    await run_job(ledger, clock, day(0), ALICE, guild=OTHER_GUILD, message=3)

    assert await storage.count_member_results(GUILD, ALICE) == 7
    first = await storage.member_results(GUILD, ALICE, limit=5, offset=0)
    rest = await storage.member_results(GUILD, ALICE, limit=5, offset=5)
    assert [j.id for j in first + rest] == [j.id for j in reversed(mine)]
    assert [j.message_id for j in rest] == [906, 907]
    assert await storage.member_results(GUILD, ALICE, limit=5, offset=10) == []
    assert await storage.count_member_results(GUILD, 999) == 0


async def test_a_deleted_result_leaves_the_gallery_and_nothing_else_changes(
    storage: Storage, clock: Clock
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    kept = await run_job(ledger, clock, day(1), ALICE, message=801)
    gone = await run_job(ledger, clock, day(0), ALICE, message=802)
    insight = Insight(storage)
    assert not await insight.forget_result(gone.id, 801)  # not that job's message
    assert await insight.forget_result(gone.id, 802)
    assert not await insight.forget_result(gone.id, 802)  # already forgotten
    assert [j.id for j in await storage.member_results(GUILD, ALICE, limit=5, offset=0)] == [
        kept.id
    ]
    assert await ledger.balance(GUILD) == 98 and await ledger.verify()


async def test_insight_pages_and_periods(storage: Storage, clock: Clock) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    for n in range(6):
        await run_job(ledger, clock, day(n), ALICE, images=3, units=2, message=700 + n, seed=10)
    insight = Insight(storage)
    last = await insight.gallery(GUILD, ALICE, 99, size=5)  # clamped to the last page
    assert (last.page, last.pages, last.total) == (1, 2, 6)
    [entry] = last.entries
    assert entry.message_id == 705 and entry.cost == 6 and entry.seeds == (10, 11, 12)
    assert entry.jump_url == f"https://discord.com/channels/{GUILD}/{CHANNEL}/705"
    empty = await insight.gallery(GUILD, BOB, 0)
    assert (empty.page, empty.pages, empty.total, empty.entries) == (0, 1, 0, ())
    for days in (0, 91, -3):
        with pytest.raises(InvalidPeriod, match="between 1 and 90 days"):
            await insight.usage(GUILD, days)
    assert (await insight.usage(GUILD, 90)).credits == 36
