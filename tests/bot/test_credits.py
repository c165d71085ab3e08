"""The credit ledger: reserve -> commit/refund, caps, grants, history, notices, recovery.

Invariants checked throughout: a balance never goes below zero, the ledger of
every guild sums to its balance, and a job is never settled twice.

Every test that uses the ``storage`` fixture (or ``database_url``) runs on both
backends: a SQLite file and a fresh PostgreSQL database (``tests/pg.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.coordination import Presence
from bot.crash_recovery import recover
from bot.credit_errors import (
    CreditError,
    DailyCapReached,
    InsufficientCredits,
    InvalidAmount,
    JobNotActive,
    UnknownJob,
)
from bot.credits import (
    MAX_CREDITS,
    CommitResult,
    CreditLedger,
    JobRecord,
    JobStatus,
    LedgerKind,
    NewJob,
)
from bot.guild_settings import GuildSettingsService
from bot.insight import Insight
from bot.storage import Storage, open_storage

GUILD = 111_111_111_111_111_111
OTHER_GUILD = 222_222_222_222_222_222
CHANNEL = 333_333_333_333_333_333
USER = 444_444_444_444_444_444
OTHER_USER = 555_555_555_555_555_555
ADMIN = 666_666_666_666_666_666
REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """A wall clock the test moves by hand (UTC)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def new_job(
    guild: int = GUILD,
    user: int = USER,
    *,
    units: int = 1,
    images: int = 1,
    parent: int | None = None,
) -> NewJob:
    return NewJob(
        guild_id=guild,
        channel_id=CHANNEL,
        user_id=user,
        params={"prompt": "a red fox", "seed": 42, "img_width": 512},
        units_per_image=units,
        images_total=images,
        parent_job_id=parent,
    )


def statement(ledger: CreditLedger) -> Insight:
    """The ledger's entries as ``/credits history`` reads them, over the ledger's own storage."""
    return Insight(ledger._storage)


async def ledger_sum(ledger: CreditLedger, guild: int) -> int:
    """Sum of the guild's ledger deltas, read through the public history API."""
    total = await statement(ledger).count_history(guild)
    entries = await statement(ledger).history(guild, limit=1000) if total else []
    assert len(entries) == total
    return sum(entry.delta for entry in entries)


async def assert_invariants(ledger: CreditLedger, *guilds: int) -> None:
    assert await ledger.verify()
    for guild in guilds:
        balance = await ledger.balance(guild)
        assert balance >= 0
        assert await ledger_sum(ledger, guild) == balance


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def storage(database_url: str, clock: FakeClock) -> AsyncIterator[Storage]:
    opened = await open_storage(database_url, clock=clock)
    yield opened
    await opened.close()


@pytest.fixture
def service(storage: Storage) -> GuildSettingsService:
    return GuildSettingsService(storage, default_credits=100)


# -- guilds and balances -----------------------------------------------------------------


async def test_a_new_guild_gets_the_default_grant_exactly_once(ledger: CreditLedger) -> None:
    balances = await asyncio.gather(*(ledger.ensure_guild(GUILD) for _ in range(20)))
    assert balances == [100] * 20
    assert await ledger.balance(GUILD) == 100
    (entry,) = await statement(ledger).history(GUILD)
    assert entry.kind is LedgerKind.GRANT
    assert entry.delta == 100
    assert entry.actor_id is None
    assert entry.balance_after == 100
    await assert_invariants(ledger, GUILD)


async def test_default_credits_can_be_zero(storage: Storage) -> None:
    ledger = CreditLedger(storage, default_credits=0)
    assert await ledger.balance(GUILD) == 0
    with pytest.raises(InsufficientCredits, match="This server has 0 credits left"):
        await ledger.reserve(new_job())
    await assert_invariants(ledger, GUILD)


@pytest.mark.parametrize("default", [-1, MAX_CREDITS + 1, 1.5, True])
def test_default_credits_must_be_sane(storage: Storage, default: Any) -> None:
    with pytest.raises(ValueError, match="default_credits"):
        CreditLedger(storage, default_credits=default)


async def test_grant(ledger: CreditLedger) -> None:
    assert (
        await ledger.grant(GUILD, 25, actor_id=ADMIN, note="  thanks  for   the\nsupport ") == 125
    )
    latest = (await statement(ledger).history(GUILD, limit=1))[0]
    assert (latest.kind, latest.delta, latest.actor_id) == (LedgerKind.GRANT, 25, ADMIN)
    assert latest.note == "thanks for the support"
    assert latest.balance_after == 125
    await assert_invariants(ledger, GUILD)


async def test_grant_to_an_unseen_guild_creates_it_first(ledger: CreditLedger) -> None:
    assert await ledger.grant(OTHER_GUILD, 5, actor_id=None) == 105
    kinds = [entry.kind for entry in await statement(ledger).history(OTHER_GUILD)]
    assert kinds == [LedgerKind.GRANT, LedgerKind.GRANT]


@pytest.mark.parametrize("amount", [0, -1, -100, 1.5, "5", None, True, MAX_CREDITS + 1])
async def test_bad_grant_amounts_change_nothing(ledger: CreditLedger, amount: Any) -> None:
    await ledger.ensure_guild(GUILD)
    with pytest.raises(InvalidAmount) as caught:
        await ledger.grant(GUILD, amount, actor_id=ADMIN)
    assert caught.value.user_message
    assert await ledger.balance(GUILD) == 100
    assert await statement(ledger).count_history(GUILD) == 1


async def test_a_grant_cannot_push_the_balance_past_the_maximum(ledger: CreditLedger) -> None:
    await ledger.set_balance(GUILD, MAX_CREDITS - 5, actor_id=None)
    with pytest.raises(InvalidAmount, match="over the maximum"):
        await ledger.grant(GUILD, 6, actor_id=None)
    assert await ledger.grant(GUILD, 5, actor_id=None) == MAX_CREDITS
    await assert_invariants(ledger, GUILD)


async def test_a_refused_grant_to_a_new_guild_changes_nothing(storage: Storage) -> None:
    ledger = CreditLedger(storage, default_credits=MAX_CREDITS)
    with pytest.raises(InvalidAmount):
        await ledger.grant(GUILD, 1, actor_id=None)
    assert await storage.get_balance(GUILD) is None
    assert await statement(ledger).count_history(GUILD) == 0


async def test_set_balance_is_an_adjustment_entry(ledger: CreditLedger) -> None:
    assert await ledger.set_balance(GUILD, 30, actor_id=ADMIN, note="reset") == 30
    assert await ledger.set_balance(GUILD, 130, actor_id=ADMIN) == 130
    assert await ledger.set_balance(GUILD, 130, actor_id=None) == 130
    assert await ledger.set_balance(GUILD, 0, actor_id=None) == 0
    entries = await statement(ledger).history(GUILD)
    sets = [(e.delta, e.balance_after) for e in entries if e.kind is LedgerKind.SET]
    assert sets == [(-130, 0), (0, 130), (100, 130), (-70, 30)]
    assert entries[-2].note == "reset"
    assert entries[-2].actor_id == ADMIN
    await assert_invariants(ledger, GUILD)


@pytest.mark.parametrize("amount", [-1, 2.0, "10", MAX_CREDITS + 1])
async def test_bad_set_amounts_change_nothing(ledger: CreditLedger, amount: Any) -> None:
    await ledger.ensure_guild(GUILD)
    with pytest.raises(InvalidAmount):
        await ledger.set_balance(GUILD, amount, actor_id=None)
    assert await ledger.balance(GUILD) == 100
    assert await statement(ledger).count_history(GUILD) == 1


async def test_set_balance_while_jobs_are_reserved(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=4, images=2))  # 8 reserved: 92 left
    await ledger.set_balance(GUILD, 50, actor_id=None)
    result = await ledger.refund(job.id, "API error")
    assert result.refunded == 8
    assert result.balance == 58
    await assert_invariants(ledger, GUILD)


async def test_bad_ids_are_programming_errors(ledger: CreditLedger) -> None:
    with pytest.raises(ValueError, match="guild_id"):
        await ledger.balance(0)
    with pytest.raises(ValueError, match="guild_id"):
        await ledger.balance(2**63)
    with pytest.raises(ValueError, match="actor_id"):
        await ledger.grant(GUILD, 1, actor_id=-5)
    with pytest.raises(ValueError, match="user_id"):
        await ledger.reserve(new_job(user=0))


# -- reserving ---------------------------------------------------------------------------


async def test_reserve_records_the_job_and_takes_the_cost(
    ledger: CreditLedger, clock: FakeClock
) -> None:
    job = await ledger.reserve(new_job(units=2, images=3))
    assert isinstance(job, JobRecord)
    assert (job.guild_id, job.channel_id, job.user_id) == (GUILD, CHANNEL, USER)
    assert job.params == {"prompt": "a red fox", "seed": 42, "img_width": 512}
    assert (job.cost, job.units_per_image, job.images_total, job.images_delivered) == (6, 2, 3, 0)
    assert job.status is JobStatus.QUEUED
    assert job.message_id is None
    assert job.error is None
    assert job.parent_job_id is None
    assert job.created_at == clock.now == job.updated_at
    assert await ledger.balance(GUILD) == 94
    reserve = (await statement(ledger).history(GUILD, limit=1))[0]
    assert (reserve.kind, reserve.delta, reserve.job_id, reserve.user_id) == (
        LedgerKind.RESERVE,
        -6,
        job.id,
        USER,
    )
    assert reserve.balance_after == 94
    assert await ledger.get_job(job.id) == job
    await assert_invariants(ledger, GUILD)


async def test_two_hundred_concurrent_reservations_against_fifty_credits(
    ledger: CreditLedger,
) -> None:
    await ledger.set_balance(GUILD, 50, actor_id=None)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(ledger.reserve(new_job()) for _ in range(200)), return_exceptions=True),
        timeout=60,
    )
    reserved = [outcome for outcome in outcomes if isinstance(outcome, JobRecord)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, InsufficientCredits)]
    assert len(reserved) == 50
    assert len(refused) == 150
    assert all((error.balance, error.cost) == (0, 1) for error in refused)
    assert len({job.id for job in reserved}) == 50
    assert await ledger.balance(GUILD) == 0
    assert len(await ledger.active_jobs(guild_id=GUILD)) == 50
    await assert_invariants(ledger, GUILD)


async def test_two_connections_share_one_budget_and_one_cap(database_url: str) -> None:
    # Two storages on one database stand for two processes (bot shards, CLIs).
    first, second = await open_storage(database_url), await open_storage(database_url)
    try:
        ledgers = [CreditLedger(storage, default_credits=0) for storage in (first, second)]
        await ledgers[0].set_balance(GUILD, 50, actor_id=None)
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(ledgers[index % 2].reserve(new_job()) for index in range(200)),
                return_exceptions=True,
            ),
            timeout=60,
        )
        assert sum(isinstance(outcome, JobRecord) for outcome in outcomes) == 50
        assert all(isinstance(o, JobRecord | InsufficientCredits) for o in outcomes)
        await ledgers[1].set_balance(OTHER_GUILD, 1000, actor_id=None)
        await GuildSettingsService(second, default_credits=0).update(OTHER_GUILD, daily_user_cap=30)
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(ledgers[index % 2].reserve(new_job(OTHER_GUILD)) for index in range(120)),
                return_exceptions=True,
            ),
            timeout=60,
        )
        assert sum(isinstance(outcome, JobRecord) for outcome in outcomes) == 30
        assert all(isinstance(o, JobRecord | DailyCapReached) for o in outcomes)
        assert await ledgers[0].usage_today(OTHER_GUILD, USER) == 30
        await assert_invariants(ledgers[1], GUILD, OTHER_GUILD)
    finally:
        await first.close()
        await second.close()


async def test_entries_are_in_the_order_they_were_committed(database_url: str) -> None:
    # The real clock, two connections, everything at once: reading the statement
    # newest first, each entry's balance before it is the next entry's balance after.
    first, second = await open_storage(database_url), await open_storage(database_url)
    try:
        ledgers = [CreditLedger(storage, default_credits=100) for storage in (first, second)]

        async def operation(index: int) -> None:
            ledger = ledgers[index % 2]
            if index % 3 == 0:
                await ledger.grant(GUILD, index + 1, actor_id=None)
            else:
                job = await ledger.reserve(new_job(units=1 + index % 4))
                await ledger.commit(job.id, delivered=index % 2)

        await asyncio.wait_for(asyncio.gather(*(operation(i) for i in range(60))), timeout=60)
        entries = await statement(ledgers[0]).history(GUILD, limit=1000)
        assert len(entries) == await statement(ledgers[0]).count_history(GUILD)
        for newer, older in itertools.pairwise(entries):
            assert newer.balance_after is not None
            assert newer.balance_after - newer.delta == older.balance_after
            assert newer.created_at >= older.created_at
        assert entries[0].balance_after == await ledgers[1].balance(GUILD)
        await assert_invariants(ledgers[0], GUILD)
    finally:
        await first.close()
        await second.close()


async def test_insufficient_credits_say_why_and_change_nothing(ledger: CreditLedger) -> None:
    await ledger.set_balance(GUILD, 3, actor_id=None)
    entries = await statement(ledger).count_history(GUILD)
    with pytest.raises(InsufficientCredits) as caught:
        await ledger.reserve(new_job(units=4))
    assert caught.value.user_message == "This server has 3 credits left; this image costs 4."
    assert (caught.value.balance, caught.value.cost) == (3, 4)
    with pytest.raises(InsufficientCredits) as caught:
        await ledger.reserve(new_job(units=4, images=2))
    assert caught.value.user_message == "This server has 3 credits left; these 2 images cost 8."
    await ledger.set_balance(GUILD, 1, actor_id=None)
    with pytest.raises(InsufficientCredits, match="has 1 credit left"):
        await ledger.reserve(new_job(units=2))
    assert await ledger.balance(GUILD) == 1
    assert await statement(ledger).count_history(GUILD) == entries + 1
    assert await ledger.active_jobs() == []
    await assert_invariants(ledger, GUILD)


async def test_a_refused_reservation_does_not_even_create_the_guild(
    ledger: CreditLedger, storage: Storage
) -> None:
    with pytest.raises(InsufficientCredits) as caught:
        await ledger.reserve(new_job(units=101))
    assert caught.value.balance == 100
    assert await storage.get_balance(GUILD) is None
    assert await statement(ledger).count_history(GUILD) == 0


async def test_first_reservation_of_a_new_guild(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(OTHER_GUILD, units=4))
    assert job.cost == 4
    assert await ledger.balance(OTHER_GUILD) == 96
    kinds = [entry.kind for entry in await statement(ledger).history(OTHER_GUILD)]
    assert kinds == [LedgerKind.RESERVE, LedgerKind.GRANT]


@pytest.mark.parametrize(("units", "images"), [(0, 1), (1, 0), (-1, 2), (1.5, 1), (MAX_CREDITS, 2)])
async def test_bad_job_sizes_change_nothing(ledger: CreditLedger, units: Any, images: Any) -> None:
    await ledger.ensure_guild(GUILD)
    with pytest.raises(InvalidAmount):
        await ledger.reserve(new_job(units=units, images=images))
    assert await ledger.balance(GUILD) == 100
    assert await ledger.active_jobs() == []


async def test_params_must_be_json(ledger: CreditLedger) -> None:
    bad = NewJob(GUILD, CHANNEL, USER, {"when": datetime.now(UTC)}, 1, 1)
    with pytest.raises(TypeError):
        await ledger.reserve(bad)
    await assert_invariants(ledger, GUILD)
    assert await ledger.active_jobs() == []


async def test_a_reroll_names_its_parent(ledger: CreditLedger) -> None:
    parent = await ledger.reserve(new_job())
    child = await ledger.reserve(new_job(parent=parent.id))
    assert child.parent_job_id == parent.id
    with pytest.raises(UnknownJob):
        await ledger.reserve(new_job(parent=parent.id + 1000))
    assert await ledger.balance(GUILD) == 98


# -- daily caps ----------------------------------------------------------------------------


async def test_daily_cap(
    ledger: CreditLedger, clock: FakeClock, service: GuildSettingsService
) -> None:
    await service.update(GUILD, daily_user_cap=10)
    jobs = [await ledger.reserve(new_job(units=3)) for _ in range(3)]
    assert await ledger.usage_today(GUILD, USER) == 9
    balance = await ledger.balance(GUILD)
    with pytest.raises(DailyCapReached) as caught:
        await ledger.reserve(new_job(units=4))
    error = caught.value
    assert (error.cap, error.used, error.cost) == (10, 9, 4)
    assert error.user_message == (
        "You've used 9 of your 10 daily credits here; this costs 4. "
        "Your allowance resets at 00:00 UTC."
    )
    assert await ledger.balance(GUILD) == balance  # nothing changed
    # 1 more still fits; other members have their own allowance
    await ledger.reserve(new_job(units=1))
    await ledger.reserve(new_job(user=OTHER_USER, units=10))
    # a refund gives the allowance back
    await ledger.refund(jobs[0].id, "API error")
    assert await ledger.usage_today(GUILD, USER) == 7
    await ledger.reserve(new_job(units=3))
    with pytest.raises(DailyCapReached):
        await ledger.reserve(new_job(units=1))
    # a new UTC day resets it
    clock.now = datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(DailyCapReached):
        await ledger.reserve(new_job(units=1))
    clock.advance(seconds=2)
    assert await ledger.usage_today(GUILD, USER) == 0
    await ledger.reserve(new_job(units=10))
    await assert_invariants(ledger, GUILD)


async def test_daily_cap_counts_only_what_was_charged(
    ledger: CreditLedger, service: GuildSettingsService
) -> None:
    await service.update(GUILD, daily_user_cap=16)
    job = await ledger.reserve(new_job(units=4, images=4))
    assert await ledger.usage_today(GUILD, USER) == 16
    await ledger.commit(job.id, delivered=2)
    assert await ledger.usage_today(GUILD, USER) == 8
    await ledger.reserve(new_job(units=4, images=2))
    with pytest.raises(DailyCapReached):
        await ledger.reserve(new_job(units=1))


async def test_daily_cap_is_checked_before_the_balance(
    ledger: CreditLedger, service: GuildSettingsService
) -> None:
    await service.update(GUILD, daily_user_cap=2)
    await ledger.set_balance(GUILD, 1, actor_id=None)
    with pytest.raises(DailyCapReached):
        await ledger.reserve(new_job(units=3))
    with pytest.raises(InsufficientCredits):
        await ledger.reserve(new_job(units=2))


async def test_a_zero_cap_stops_spending(
    ledger: CreditLedger, service: GuildSettingsService
) -> None:
    await service.update(GUILD, daily_user_cap=0)
    with pytest.raises(DailyCapReached, match="daily limit per member is 0"):
        await ledger.reserve(new_job())
    await service.update(GUILD, daily_user_cap=None)
    await ledger.reserve(new_job())


async def test_concurrent_reservations_respect_the_cap(
    ledger: CreditLedger, service: GuildSettingsService
) -> None:
    await service.update(GUILD, daily_user_cap=7)
    outcomes = await asyncio.gather(
        *(ledger.reserve(new_job()) for _ in range(30)), return_exceptions=True
    )
    assert sum(isinstance(outcome, JobRecord) for outcome in outcomes) == 7
    assert all(isinstance(o, JobRecord | DailyCapReached) for o in outcomes)
    assert await ledger.usage_today(GUILD, USER) == 7


# -- running, committing, refunding ---------------------------------------------------------


async def test_mark_running(ledger: CreditLedger, clock: FakeClock) -> None:
    job = await ledger.reserve(new_job())
    clock.advance(seconds=3)
    running = await ledger.mark_running(job.id)
    assert running.status is JobStatus.RUNNING
    assert running.updated_at == clock.now
    assert (await ledger.mark_running(job.id)).status is JobStatus.RUNNING  # no-op
    await ledger.refund(job.id, "cancelled")
    with pytest.raises(JobNotActive) as caught:
        await ledger.mark_running(job.id)
    assert caught.value.job.status is JobStatus.REFUNDED


async def test_commit_everything(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=4, images=2))
    await ledger.mark_running(job.id)
    result = await ledger.commit(job.id)
    assert isinstance(result, CommitResult)
    assert (result.committed, result.refunded, result.balance) == (8, 0, 92)
    assert result.job.status is JobStatus.SUCCEEDED
    assert result.job.images_delivered == 2
    commit = (await statement(ledger).history(GUILD, limit=1))[0]
    assert (commit.kind, commit.delta, commit.job_id) == (LedgerKind.COMMIT, 0, job.id)
    assert commit.note == "charged 8 credits for 2 of 2 images"
    await assert_invariants(ledger, GUILD)


async def test_partial_commit_refunds_the_undelivered_images(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=4, images=4))
    assert await ledger.balance(GUILD) == 84
    result = await ledger.commit(job.id, delivered=2)
    assert (result.committed, result.refunded, result.balance) == (8, 8, 92)
    assert result.job.images_delivered == 2
    assert result.job.status is JobStatus.SUCCEEDED
    refund, commit = await statement(ledger).history(GUILD, limit=2)
    assert (commit.kind, commit.delta) == (LedgerKind.COMMIT, 0)
    assert (refund.kind, refund.delta, refund.job_id) == (LedgerKind.REFUND, 8, job.id)
    assert refund.note == "2 of 4 images not delivered"
    await assert_invariants(ledger, GUILD)


async def test_commit_of_nothing_is_a_refund(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=2, images=2))
    result = await ledger.commit(job.id, delivered=0)
    assert (result.committed, result.refunded, result.balance) == (0, 4, 100)
    assert result.job.status is JobStatus.REFUNDED
    assert result.job.error == "no images were delivered"
    assert LedgerKind.COMMIT not in {entry.kind for entry in await statement(ledger).history(GUILD)}


async def test_commit_is_idempotent(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=4, images=4))
    first = await ledger.commit(job.id, delivered=3)
    entries = await statement(ledger).count_history(GUILD)
    for again in (
        await ledger.commit(job.id, delivered=3),
        await ledger.commit(job.id),
        await ledger.refund(job.id, "late failure"),
    ):
        assert (again.committed, again.refunded) == (0, 0)
        assert again.balance == first.balance
        assert again.job == first.job
    assert await statement(ledger).count_history(GUILD) == entries
    await assert_invariants(ledger, GUILD)


async def test_refund_is_idempotent(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=2, images=3))
    first = await ledger.refund(job.id, "Segmind returned 500")
    assert (first.committed, first.refunded, first.balance) == (0, 6, 100)
    assert first.job.status is JobStatus.REFUNDED
    assert first.job.error == "Segmind returned 500"
    entries = await statement(ledger).count_history(GUILD)
    for again in (await ledger.refund(job.id, "again"), await ledger.commit(job.id)):
        assert (again.committed, again.refunded, again.balance) == (0, 0, 100)
        assert again.job.error == "Segmind returned 500"
    assert await statement(ledger).count_history(GUILD) == entries
    await assert_invariants(ledger, GUILD)


async def test_concurrent_settlements_count_once(ledger: CreditLedger) -> None:
    for _ in range(5):
        job = await ledger.reserve(new_job(units=2, images=4))
        calls: list[Awaitable[CommitResult]] = []
        for index in range(12):
            if index % 3 == 0:
                calls.append(ledger.refund(job.id, "failed"))
            else:
                calls.append(ledger.commit(job.id, delivered=index % 5))
        results = await asyncio.gather(*calls)
        effective = [r for r in results if r.committed or r.refunded]
        assert len(effective) == 1
        assert effective[0].committed + effective[0].refunded == job.cost
    await assert_invariants(ledger, GUILD)


async def test_cannot_deliver_more_than_requested(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job(units=1, images=2))
    with pytest.raises(InvalidAmount):
        await ledger.commit(job.id, delivered=3)
    with pytest.raises(InvalidAmount):
        await ledger.commit(job.id, delivered=-1)
    current = await ledger.get_job(job.id)
    assert current is not None
    assert current.status is JobStatus.QUEUED
    assert await ledger.balance(GUILD) == 98


async def test_unknown_jobs(ledger: CreditLedger) -> None:
    for call in (
        lambda: ledger.commit(999),
        lambda: ledger.refund(999, "x"),
        lambda: ledger.mark_running(999),
    ):
        with pytest.raises(UnknownJob) as caught:
            await call()
        assert isinstance(caught.value, CreditError)
        assert caught.value.user_message
    assert await ledger.get_job(999) is None
    assert await ledger.get_job(-1) is None


async def test_the_commit_records_the_result_message(ledger: CreditLedger) -> None:
    job = await ledger.reserve(new_job())
    with pytest.raises(ValueError, match="message_id"):
        await ledger.commit(job, message_id=0)
    result = await ledger.commit(job, message_id=777_777_777_777_777_777)
    assert (
        result.job.message_id == 777_777_777_777_777_777 == (await stored(ledger, job)).message_id
    )
    # Settled already: a second commit changes nothing, the message id included.
    again = await ledger.commit(job, message_id=888_888_888_888_888_888)
    assert again.committed == 0 and again.job.message_id == 777_777_777_777_777_777
    refunded = await ledger.reserve(new_job())
    await ledger.refund(refunded, "x")
    assert (await stored(ledger, refunded)).message_id is None


async def stored(ledger: CreditLedger, job: JobRecord) -> JobRecord:
    record = await ledger.get_job(job.id)
    assert record is not None
    return record


async def test_active_jobs(ledger: CreditLedger) -> None:
    first = await ledger.reserve(new_job())
    second = await ledger.reserve(new_job(OTHER_GUILD))
    third = await ledger.reserve(new_job())
    await ledger.mark_running(first.id)
    await ledger.commit(third.id)
    assert [job.id for job in await ledger.active_jobs()] == [first.id, second.id]
    assert [job.id for job in await ledger.active_jobs(guild_id=GUILD)] == [first.id]


# -- crash recovery --------------------------------------------------------------------------


async def test_recover_refunds_interrupted_jobs_exactly_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = await open_storage(database_url)
    ledger = CreditLedger(storage, default_credits=100)
    queued = await ledger.reserve(new_job(units=2, images=2))
    running = await ledger.reserve(new_job(OTHER_GUILD, units=4))
    await ledger.mark_running(running.id)
    done = await ledger.reserve(new_job())
    await ledger.commit(done.id)
    await storage.close()  # the process stops: nothing committed or refunded

    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=100)
        caplog.set_level(logging.INFO, logger="bot.crash_recovery")
        recovered = (await recover(storage, ledger)).refunded
        assert sorted(job.id for job in recovered) == [queued.id, running.id]
        assert all(job.status is JobStatus.REFUNDED for job in recovered)
        assert all(job.error == "interrupted by a restart" for job in recovered)
        assert any("refunded 2 jobs" in record.getMessage() for record in caplog.records)
        assert await ledger.balance(GUILD) == 99
        assert await ledger.balance(OTHER_GUILD) == 100
        entries = await statement(ledger).count_history(GUILD)
        assert (await recover(storage, ledger)).refunded == []
        assert await statement(ledger).count_history(GUILD) == entries
        await assert_invariants(ledger, GUILD, OTHER_GUILD)
    finally:
        await storage.close()


CRASH_SCRIPT = """
import asyncio, os, sys
from bot.credits import CreditLedger, NewJob
from bot.storage import open_storage

async def main():
    storage = await open_storage(sys.argv[1])
    ledger = CreditLedger(storage, default_credits=100)
    job = await ledger.reserve(NewJob(int(sys.argv[2]), 1, 2, {"prompt": "x"}, 4, 2))
    await ledger.mark_running(job.id)
    print(job.id, flush=True)
    os._exit(0)  # die mid-job: no commit, no refund, no clean close

asyncio.run(main())
"""


async def test_recover_after_a_real_crash(database_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASH_SCRIPT,
        database_url,
        str(GUILD),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    job_id = int(stdout.split()[0])

    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=100)
        assert await ledger.balance(GUILD) == 92
        recovered = (await recover(storage, ledger)).refunded
        assert [job.id for job in recovered] == [job_id]
        assert await ledger.balance(GUILD) == 100
        assert (await recover(storage, ledger)).refunded == []
        await assert_invariants(ledger, GUILD)
    finally:
        await storage.close()


# -- history -----------------------------------------------------------------------------------


async def test_history_newest_first_with_paging(ledger: CreditLedger, clock: FakeClock) -> None:
    await ledger.ensure_guild(GUILD)
    for amount in range(1, 13):
        clock.advance(seconds=1)
        await ledger.grant(GUILD, amount, actor_id=ADMIN)
    assert await statement(ledger).count_history(GUILD) == 13
    first_page = await statement(ledger).history(GUILD)
    assert [entry.delta for entry in first_page] == list(range(12, 2, -1))
    second_page = await statement(ledger).history(GUILD, limit=10, offset=10)
    assert [entry.delta for entry in second_page] == [2, 1, 100]
    assert [entry.created_at for entry in first_page] == sorted(
        (entry.created_at for entry in first_page), reverse=True
    )
    assert await statement(ledger).history(OTHER_GUILD) == []
    assert await statement(ledger).count_history(OTHER_GUILD) == 0


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (1001, 0), (10, -1)])
async def test_bad_history_pages(ledger: CreditLedger, limit: int, offset: int) -> None:
    with pytest.raises(InvalidAmount):
        await statement(ledger).history(GUILD, limit=limit, offset=offset)


# -- settings, notices, state ----------------------------------------------------------------


async def test_low_balance_notice_once_per_crossing(
    ledger: CreditLedger, service: GuildSettingsService
) -> None:
    assert not await service.claim_low_balance_notice(GUILD)  # no threshold
    await service.update(GUILD, low_balance_threshold=50)
    assert not await service.claim_low_balance_notice(GUILD)  # 100: above
    big = await ledger.reserve(new_job(units=30, images=2))  # 40 left
    claims = await asyncio.gather(*(service.claim_low_balance_notice(GUILD) for _ in range(10)))
    assert claims.count(True) == 1
    await ledger.reserve(new_job(units=5))  # 35: still below, already told
    assert not await service.claim_low_balance_notice(GUILD)
    await ledger.grant(GUILD, 10, actor_id=None)  # 45: below, not re-armed
    assert not await service.claim_low_balance_notice(GUILD)
    await ledger.grant(GUILD, 5, actor_id=None)  # 50: back at the threshold, re-armed
    assert not await service.claim_low_balance_notice(GUILD)
    await ledger.reserve(new_job(units=1))  # 49
    assert await service.claim_low_balance_notice(GUILD)
    await ledger.refund(big.id, "failed")  # 109: a refund re-arms
    await ledger.set_balance(GUILD, 10, actor_id=None)
    assert await service.claim_low_balance_notice(GUILD)
    await ledger.set_balance(GUILD, 60, actor_id=None)  # a set re-arms
    await ledger.set_balance(GUILD, 0, actor_id=None)
    assert await service.claim_low_balance_notice(GUILD)
    await service.update(GUILD, low_balance_threshold=0)  # 0 < 0 never
    assert not await service.claim_low_balance_notice(GUILD)
    await service.update(GUILD, low_balance_threshold=5)  # changing it re-arms
    assert await service.claim_low_balance_notice(GUILD)


async def test_unusual_text_is_stored(
    ledger: CreditLedger, storage: Storage, service: GuildSettingsService
) -> None:
    # A NUL cannot live in PostgreSQL text: notes show U+FFFD there; prompts
    # (JSON) keep it exactly on both backends.
    params = {"prompt": 'a\x00b ü 🦊 \\ "quoted"', "n": 2**53 + 1, "x": 0.1}
    job = await ledger.reserve(NewJob(GUILD, CHANNEL, USER, params, 1, 1))
    assert job.params == params
    stored = await storage.get_job(job.id)
    assert stored is not None
    assert stored.params == params
    await ledger.grant(GUILD, 1, actor_id=None, note="top\x00up ü")
    note = (await statement(ledger).history(GUILD, limit=1))[0].note
    assert note in {"top\x00up ü", "top\ufffdup ü"}
    await service.update(GUILD, blocked_words=["gore\x00"])
    assert (await service.get(GUILD)).blocked_words[0] in {"gore\x00", "gore\ufffd"}
    await ledger.refund(job.id, "failed\x00")
    await assert_invariants(ledger, GUILD)


async def test_logs_carry_the_ids(ledger: CreditLedger, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.credits")
    job = await ledger.reserve(new_job())
    await ledger.commit(job.id)
    records = [r for r in caplog.records if r.name == "bot.credits"]
    reserved = next(r for r in records if r.getMessage().startswith("reserved"))
    assert (reserved.guild_id, reserved.user_id, reserved.job_id) == (GUILD, USER, job.id)  # type: ignore[attr-defined]
    assert str(job.id) in reserved.getMessage()
    assert str(GUILD) in reserved.getMessage()
    settled = next(r for r in records if r.getMessage().startswith("settled"))
    assert settled.job_id == job.id  # type: ignore[attr-defined]


# -- property-style: random operations against a model ---------------------------------------


@dataclass
class Model:
    """What the ledger should say, computed the simple way."""

    balances: dict[int, int] = field(default_factory=dict)
    caps: dict[int, int | None] = field(default_factory=dict)
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    charged: dict[int, int] = field(default_factory=dict)  # job id -> credits it costs now

    def usage(self, guild: int, user: int) -> int:
        return sum(
            self.charged[job.id]
            for job in self.jobs.values()
            if job.guild_id == guild and job.user_id == user
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_operations_keep_the_invariants(storage: Storage, seed: int) -> None:
    rng = random.Random(seed)
    default = 30
    ledger = CreditLedger(storage, default_credits=default)
    service = GuildSettingsService(storage, default_credits=default)
    guilds = [GUILD, OTHER_GUILD]
    users = [USER, OTHER_USER]
    model = Model()

    def balance_of(guild: int) -> int:
        return model.balances.setdefault(guild, default)

    async def grant() -> None:
        guild, amount = rng.choice(guilds), rng.randint(1, 40)
        assert await ledger.grant(guild, amount, actor_id=ADMIN) == balance_of(guild) + amount
        model.balances[guild] += amount

    async def set_balance() -> None:
        guild, amount = rng.choice(guilds), rng.randint(0, 60)
        balance_of(guild)
        assert await ledger.set_balance(guild, amount, actor_id=ADMIN) == amount
        model.balances[guild] = amount

    async def set_cap() -> None:
        guild = rng.choice(guilds)
        cap = rng.choice([None, 0, 5, 20, 40])
        balance_of(guild)
        await service.update(guild, daily_user_cap=cap)
        model.caps[guild] = cap

    async def reserve() -> None:
        guild, user = rng.choice(guilds), rng.choice(users)
        units, images = rng.choice([1, 2, 4]), rng.randint(1, 4)
        cost = units * images
        cap = model.caps.get(guild)
        used = model.usage(guild, user)
        if cap is not None and used + cost > cap:
            with pytest.raises(DailyCapReached) as capped:
                await ledger.reserve(new_job(guild, user, units=units, images=images))
            assert (capped.value.cap, capped.value.used) == (cap, used)
        elif balance_of(guild) < cost:
            with pytest.raises(InsufficientCredits) as short:
                await ledger.reserve(new_job(guild, user, units=units, images=images))
            assert short.value.balance == balance_of(guild)
        else:
            job = await ledger.reserve(new_job(guild, user, units=units, images=images))
            model.balances[guild] -= cost
            model.jobs[job.id] = job
            model.charged[job.id] = cost

    def pick_job() -> JobRecord | None:
        return model.jobs[rng.choice(sorted(model.jobs))] if model.jobs else None

    async def run() -> None:
        job = pick_job()
        if job is None:
            return
        if job.status.is_open:
            model.jobs[job.id] = await ledger.mark_running(job.id)
        else:
            with pytest.raises(JobNotActive):
                await ledger.mark_running(job.id)

    async def commit() -> None:
        job = pick_job()
        if job is None:
            return
        delivered = rng.choice([None, *range(job.images_total + 1)])
        result = await ledger.commit(job.id, delivered)
        if job.status.is_open:
            count = job.images_total if delivered is None else delivered
            assert result.committed == count * job.units_per_image
            assert result.refunded == job.cost - result.committed
            model.balances[job.guild_id] += result.refunded
            model.charged[job.id] = result.committed
        else:
            assert (result.committed, result.refunded) == (0, 0)
        assert result.balance == model.balances[job.guild_id]
        model.jobs[job.id] = result.job

    async def refund() -> None:
        job = pick_job()
        if job is None:
            return
        result = await ledger.refund(job.id, "random failure")
        expected = job.cost if job.status.is_open else 0
        assert result.refunded == expected
        model.balances[job.guild_id] += expected
        if expected:
            model.charged[job.id] = 0
        model.jobs[job.id] = result.job

    operations: list[Callable[[], Awaitable[None]]] = [
        grant,
        set_balance,
        set_cap,
        reserve,
        reserve,
        reserve,
        reserve,
        run,
        commit,
        commit,
        refund,
    ]
    for _ in range(250):
        await rng.choice(operations)()
        for guild in guilds:
            if guild in model.balances:
                assert await ledger.balance(guild) == model.balances[guild]
        for user in users:
            for guild in guilds:
                if guild in model.balances:
                    assert await ledger.usage_today(guild, user) == model.usage(guild, user)
    await assert_invariants(ledger, *guilds)


@pytest.mark.parametrize("seed", [7, 8])
async def test_random_concurrent_operations_keep_the_invariants(
    storage: Storage, seed: int
) -> None:
    rng = random.Random(seed)
    ledger = CreditLedger(storage, default_credits=40)
    guilds = [GUILD, OTHER_GUILD]
    job_ids: list[int] = []

    async def operation() -> None:
        choice = rng.random()
        guild = rng.choice(guilds)
        try:
            if choice < 0.45:
                job = await ledger.reserve(
                    new_job(guild, rng.choice([USER, OTHER_USER]), units=rng.choice([1, 2, 4]))
                )
                job_ids.append(job.id)
            elif choice < 0.65 and job_ids:
                await ledger.commit(rng.choice(job_ids), rng.choice([None, 0, 1]))
            elif choice < 0.8 and job_ids:
                await ledger.refund(rng.choice(job_ids), "failed")
            elif choice < 0.9:
                await ledger.grant(guild, rng.randint(1, 10), actor_id=None)
            else:
                await ledger.set_balance(guild, rng.randint(0, 20), actor_id=None)
        except (InsufficientCredits, DailyCapReached):
            pass

    for _ in range(10):
        await asyncio.wait_for(asyncio.gather(*(operation() for _ in range(25))), timeout=60)
        await assert_invariants(ledger, *guilds)
    await recover(storage, ledger)
    assert await ledger.active_jobs() == []
    await assert_invariants(ledger, *guilds)


async def test_recover_leaves_deliveries_for_the_channel_to_decide(database_url: str) -> None:
    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=100)
        running = await ledger.reserve(new_job())
        await ledger.mark_running(running.id)
        posting = await ledger.reserve(new_job(units=2))
        await ledger.mark_running(posting.id)
        marked = await ledger.mark_delivering(posting)
        assert marked.job.delivering and marked.balance == 97
        left = await recover(storage, ledger)
        # Refunding it blindly could give away an image already in the channel.
        assert [job.id for job in left.refunded] == [running.id]
        assert [job.id for job in left.delivering] == [posting.id]
        assert await ledger.balance(GUILD) == 98
        await ledger.refund(posting.id, "test")
        with pytest.raises(JobNotActive):
            await ledger.mark_delivering(posting)
        assert (await recover(storage, ledger)).delivering == []
        assert await ledger.verify()
    finally:
        await storage.close()


async def test_a_silent_process_deliveries_are_swept_not_a_live_ones(database_url: str) -> None:
    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=100)
        posting = {}
        for owner in ("alive", "dead"):
            job = await ledger.reserve(dataclasses.replace(new_job(), owner=owner))
            await ledger.mark_running(job.id)
            posting[owner] = (await ledger.mark_delivering(job)).job
        await Presence(storage, "alive").beat()
        # A sweep neither refunds a delivery (the channel decides) nor touches a live one.
        swept = await recover(storage, ledger, stale_only=True, stale_after=60)
        assert swept.refunded == []
        assert [job.id for job in swept.delivering] == [posting["dead"].id]
        assert await ledger.balance(GUILD) == 98
    finally:
        await storage.close()
