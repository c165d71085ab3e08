"""The queue's estimates follow the rate it actually serves at, not only the API's latency.

With other processes on the same database, a call also waits for a shared API slot: the
queue then serves fewer images a second than its slots over the latency, and its status
lines' ETAs and its cap on waiting images must say so.
"""

from __future__ import annotations

import asyncio

from bot.coordination import LocalSlots
from bot.credits import CreditLedger
from bot.jobs import JobQueue
from tests.bot.test_jobs import ALICE, ScriptedGenerator, settle, submit


class BusySlots(LocalSlots):
    """Every call waits 50 ms for a slot, as when other processes hold most of them."""

    async def acquire(self) -> int | None:
        await asyncio.sleep(0.05)
        return None


async def test_the_estimates_follow_the_rate_served_while_images_wait(
    ledger: CreditLedger,
) -> None:
    generator = ScriptedGenerator()  # answers at once: slots over latency is huge
    queue = JobQueue(generator, ledger, max_concurrent=2, max_per_user=30, slots=BusySlots())
    jobs = [(await submit(queue, user=ALICE, prompt=f"job {n}"))[0] for n in range(20)]
    await generator.wait_calls(12)
    pace = queue.backlog.pace
    by_latency = 2 / max(pace.latency, 1e-3)
    # Two calls every 50 ms at the most: 40 a second (measured from pairs of calls ending
    # together, a little more), far under what the latency says.
    assert pace.rate <= 60 < by_latency / 4
    assert queue.backlog.max_waiting_images == pace.automatic_cap() <= 60 * 12 * 60
    for job in jobs:
        await settle(job)
    assert await ledger.verify()
