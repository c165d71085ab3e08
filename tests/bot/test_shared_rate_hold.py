"""A 429 holds every process sharing the database, not only the one that heard it.

The storage keeps the hold (``hold_rate`` / ``rate_held_for``); the queue records it
through its slot pool, whose ``acquire`` in another process then holds that queue too.
Runs on a SQLite file and on PostgreSQL; a second Storage stands for a second process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.coordination import RATE_KEY, HeldElsewhere, SharedSlots
from bot.credits import CreditLedger
from bot.jobs import JobQueue
from bot.segmind import SegmindRateLimited
from bot.storage import Storage, StorageError, open_storage
from tests.bot.test_jobs import ALICE, BOB, GUILD, ScriptedGenerator, settle, submit
from tests.bot.test_storage_coordination import T0, FakeClock


@pytest.fixture
async def second(database_url: str, storage: Storage) -> AsyncIterator[Storage]:
    """Another process on the same database (opened after ``storage`` migrated it)."""
    opened = await open_storage(database_url)
    yield opened
    await opened.close()


async def test_a_hold_is_kept_until_its_time_and_only_lengthened(database_url: str) -> None:
    clock = FakeClock(T0)
    storage = await open_storage(database_url, clock=clock)
    try:
        assert await storage.rate_held_for("segmind") == 0
        await storage.hold_rate("segmind", 10)
        assert await storage.rate_held_for("segmind") == pytest.approx(10)
        clock.advance(4)
        await storage.hold_rate("segmind", 2)  # a shorter wait does not cut the longer one
        assert await storage.rate_held_for("segmind") == pytest.approx(6)
        await storage.hold_rate("segmind", 8)
        assert await storage.rate_held_for("segmind") == pytest.approx(8)
        assert await storage.rate_held_for("other") == 0  # each key holds on its own
        clock.advance(8)
        assert await storage.rate_held_for("segmind") == 0
        with pytest.raises(ValueError, match="seconds"):
            await storage.hold_rate("segmind", -1)
    finally:
        await storage.close()


async def test_a_hold_one_process_records_is_seen_by_another(
    storage: Storage, second: Storage
) -> None:
    await storage.hold_rate(RATE_KEY, 30)
    assert 25 < await second.rate_held_for(RATE_KEY) <= 30


class WatchedSlots(SharedSlots):
    """Shared slots that say when a hold has been recorded."""

    def __init__(self, storage: Storage, owner: str) -> None:
        super().__init__(storage, owner, 4)
        self.held = asyncio.Event()

    async def hold(self, seconds: float) -> None:
        await super().hold(seconds)
        self.held.set()


def _queue(generator: ScriptedGenerator, storage: Storage, slots: WatchedSlots) -> JobQueue:
    ledger = CreditLedger(storage, default_credits=100)
    return JobQueue(generator, ledger, max_concurrent=2, max_per_user=3, slots=slots)


async def test_a_429_heard_by_one_process_holds_the_others(
    storage: Storage, second: Storage
) -> None:
    heard, other = ScriptedGenerator(gated=True), ScriptedGenerator()
    first_slots = WatchedSlots(storage, "a")
    first_process = _queue(heard, storage, first_slots)
    second_slots = WatchedSlots(second, "b")
    second_process = _queue(other, second, second_slots)
    limited, _ = await submit(first_process, user=ALICE, prompt="limited")
    await heard.wait_calls(1)
    heard.failures["limited"] = SegmindRateLimited(status=429, retry_after=2.0)
    heard.release()
    await asyncio.wait_for(first_slots.held.wait(), 5)
    waiting, delivery = await submit(second_process, user=BOB, prompt="waiting")
    await asyncio.sleep(0.3)
    # The second process did not call the API; its queue holds (what its status lines show).
    assert other.calls == []
    assert second_process.backlog.pace.held_for() > 1
    await other.wait_calls(1)  # and it calls once the wait is over
    assert not second_slots.held.is_set()  # a hold heard from the database is not written back
    await settle(waiting)
    assert len(delivery.delivered) == 1
    del heard.failures["limited"]
    heard.release()
    await settle(limited)
    ledger = CreditLedger(storage, default_credits=100)
    assert await ledger.balance(GUILD) == 98
    assert await ledger.verify()


async def test_a_hold_recorded_while_waiting_for_a_slot_ends_the_wait(
    storage: Storage, second: Storage
) -> None:
    holder = SharedSlots(storage, "a", 1)
    taken = await holder.acquire()  # the only slot: the other process has to wait for it
    try:
        waiting = asyncio.create_task(SharedSlots(second, "b", 1).acquire())
        await asyncio.sleep(0.2)  # it found every slot busy and polls
        await storage.hold_rate(RATE_KEY, 30)
        with pytest.raises(HeldElsewhere):
            await asyncio.wait_for(waiting, 5)
    finally:
        await holder.release(taken)


class BrokenStorage:
    """A database that fails every write."""

    async def hold_rate(self, key: str, seconds: float) -> None:
        raise StorageError("The database is unreachable.")


async def test_a_hold_that_cannot_be_shared_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slots = SharedSlots(BrokenStorage(), "a", 4)  # type: ignore[arg-type]
    await slots.hold(5.0)
    assert "could not share the API's 429 wait" in caplog.text
