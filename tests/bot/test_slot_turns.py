"""Processes waiting for a shared API slot take turns, and a release wakes the next at once.

With several processes on one PostgreSQL database, a process that frees a slot and wants
another must queue behind the processes already waiting (before, its next call took the slot
back within milliseconds while the others polled once a second). A second Storage on the same
database stands for a second process.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.coordination import SharedSlots
from bot.credits import CreditLedger
from bot.jobs import JobQueue
from bot.storage import Storage
from bot.storage.base import SlotReleases
from tests.bot.conftest import opened_storage
from tests.bot.test_jobs import ALICE, BOB, CAROL, ScriptedGenerator, settle, submit


async def test_a_process_that_frees_a_slot_queues_behind_one_already_waiting(
    first: Storage, second: Storage
) -> None:
    a, b = SharedSlots(first, "a", 1), SharedSlots(second, "b", 1)
    taken = await a.acquire()
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.3)  # b found the only slot busy and waits
    assert not waiting.done()
    await a.release(taken)
    again = asyncio.create_task(a.acquire())  # a's next image wants the slot at once
    b_slot = await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0.2)
    assert not again.done(), "the process that freed the slot took it back"
    await b.release(b_slot)
    await b.release(await asyncio.wait_for(again, 5))


async def test_two_processes_with_work_waiting_share_one_slot(
    first: Storage, second: Storage
) -> None:
    calls: Counter[str] = Counter()

    async def process(slots: SharedSlots, name: str) -> None:
        # Like the job queue: a freed slot's next image asks for it again at once.
        while sum(calls.values()) < 20:
            slot = await slots.acquire()
            calls[name] += 1
            await asyncio.sleep(0.05)  # the API call
            await slots.release(slot)

    await asyncio.wait_for(
        asyncio.gather(
            process(SharedSlots(first, "a", 1), "a"), process(SharedSlots(second, "b", 1), "b")
        ),
        30,
    )
    assert min(calls["a"], calls["b"]) >= 8, calls  # on the old polling: 19 to 1


async def test_images_stay_in_line_while_another_process_holds_the_slots(
    first: Storage, second: Storage
) -> None:
    other = SharedSlots(first, "a", 1)
    taken = await other.acquire()  # another process's call holds the only slot
    generator = ScriptedGenerator()
    ledger = CreditLedger(second, default_credits=100)
    slots = SharedSlots(second, "b", 1)
    queue = JobQueue(generator, ledger, max_concurrent=4, max_per_user=3, slots=slots)
    jobs = [(await submit(queue, user=user))[0] for user in (ALICE, BOB, CAROL)]
    await asyncio.sleep(0.3)
    # One image waits for the slot; the others keep their places (and their status lines)
    assert queue.in_flight == 1 and queue.depth == 2
    assert [queue.backlog.position(job) for job in jobs] == [None, 1, 2]
    await other.release(taken)
    for job in jobs:
        await asyncio.wait_for(settle(job), 10)
    assert len(generator.calls) == 3
    assert await ledger.verify()


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same process", "another process"])
async def test_a_released_slot_wakes_its_waiter_at_once(database_url: str, elsewhere: bool) -> None:
    if elsewhere and not database_url.startswith("postgresql"):
        pytest.skip("processes share API slots only on PostgreSQL (SQLite: one process)")
    async with opened_storage(database_url) as holder, opened_storage(database_url) as other:
        waiter_storage = other if elsewhere else holder
        held = SharedSlots(holder, "a", 1)
        taken = await held.acquire()
        waiting = asyncio.create_task(SharedSlots(waiter_storage, "b", 1).acquire())
        await asyncio.sleep(1.7)  # long enough for any backoff to reach its slowest
        loop = asyncio.get_running_loop()
        released = loop.time()
        await held.release(taken)
        slot = await asyncio.wait_for(waiting, 5)
        assert loop.time() - released < 0.4  # polling once a second took about 0.9 s here
        await waiter_storage.release_slot("b", slot)


class TurnEndsBadly:
    """A storage whose slot is taken, but whose turn then ends with an error."""

    def __init__(self) -> None:
        self.released: list[int] = []

    @asynccontextmanager
    async def slot_turn(self, owner: str) -> AsyncIterator[SlotReleases]:
        yield SlotReleases()
        raise asyncio.CancelledError

    async def rate_held_for(self, key: str) -> float:
        return 0.0

    async def acquire_slot(self, owner: str, *, limit: int, ttl: float) -> int | None:
        return 3

    async def release_slot(self, owner: str, slot: int) -> None:
        self.released.append(slot)


async def test_a_slot_taken_in_a_turn_that_ends_in_an_error_is_given_back() -> None:
    storage = TurnEndsBadly()
    with pytest.raises(asyncio.CancelledError):
        await SharedSlots(storage, "a", 4).acquire()  # type: ignore[arg-type]
    assert storage.released == [3]
