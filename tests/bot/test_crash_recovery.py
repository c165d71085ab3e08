"""Crash recovery reads what a stopped run left once per start and once per sweep.

Runs on both backends (``database_url``): a SQLite file and a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import aiohttp
import discord
import pytest

from bot import crash_recovery
from bot.coordination import Presence
from bot.crash_recovery import CrashRecovery
from bot.credits import CreditLedger, JobRecord, JobStatus, NewJob
from bot.recovery import settle_delivery
from bot.storage import Storage

GUILD = 111_111_111_111_111_111


def new_job(*, units: int = 1, owner: str | None = None) -> NewJob:
    return NewJob(GUILD, 1, 2, {"prompt": "a cat"}, units, 1, owner=owner)


async def stored(ledger: CreditLedger, job_id: int) -> JobRecord:
    job = await ledger.get_job(job_id)
    assert job is not None
    return job


class Tasks:
    """The recovery's ``spawn``: the tasks are kept and cancelled when the test ends."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(
        self, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def count_reads(storage: Storage, monkeypatch: pytest.MonkeyPatch, reads: list[int]) -> None:
    """Append ``len(reads)`` to ``reads`` at each read of the leftovers."""
    read = storage.recoverable_jobs

    async def counted(owner: str | None, *, stale_after: float) -> list[JobRecord]:
        reads.append(len(reads))
        return await read(owner, stale_after=stale_after)

    monkeypatch.setattr(storage, "recoverable_jobs", counted)


async def test_a_start_reads_the_leftovers_once(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    queued = await ledger.reserve(new_job())
    posting = await ledger.reserve(new_job(units=2))
    await ledger.mark_running(posting.id)
    await ledger.mark_delivering(posting)
    reads: list[int] = []
    count_reads(storage, monkeypatch, reads)
    tasks = Tasks()
    recovery = CrashRecovery(
        discord.Client(intents=discord.Intents.none()), storage, ledger, owner="me", spawn=tasks
    )
    try:
        await recovery.start()
    finally:
        await tasks.cancel()
    # Both kinds were found by that one read: one refunded, one left to its channel.
    assert len(reads) == 1
    assert (await stored(ledger, queued.id)).status is JobStatus.REFUNDED
    assert (await stored(ledger, posting.id)).delivering


def beating(presence: Presence, monkeypatch: pytest.MonkeyPatch, count: int) -> asyncio.Event:
    """An event set once ``presence`` has beaten ``count`` times."""
    beats: list[int] = []
    done = asyncio.Event()
    beat = presence.beat

    async def counted_beat() -> None:
        await beat()
        beats.append(len(beats) + 1)
        if len(beats) >= count:
            done.set()

    monkeypatch.setattr(presence, "beat", counted_beat)
    return done


@pytest.fixture
def fast_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crash_recovery, "HEARTBEAT_INTERVAL", 0)
    monkeypatch.setattr(crash_recovery, "SWEEP_EVERY", 1)


@pytest.mark.usefixtures("fast_beats")
async def test_a_sweep_reads_the_leftovers_once(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    # A live process's job (ours) is read by each sweep and stays open.
    ours = await ledger.reserve(new_job(owner="me"))
    presence = Presence(storage, "me")
    third_beat = beating(presence, monkeypatch, 3)
    reads: list[int] = []
    count_reads(storage, monkeypatch, reads)
    tasks = Tasks()
    recovery = CrashRecovery(
        discord.Client(intents=discord.Intents.none()), storage, ledger, owner="me", spawn=tasks
    )
    heartbeat = tasks(recovery._keep_alive(presence), name="heartbeat")
    try:
        await third_beat.wait()
        heartbeat.cancel()
        await asyncio.gather(*tasks.tasks, return_exceptions=True)  # the sweeps under way end
    finally:
        await tasks.cancel()
    sweeps = [task for task in tasks.tasks if task.get_name() == "sweep"]
    assert sweeps and len(reads) == len(sweeps)
    assert (await stored(ledger, ours.id)).status is JobStatus.QUEUED


@pytest.mark.usefixtures("fast_beats")
async def test_the_heartbeat_goes_on_while_a_sweep_is_slow_or_fails(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    presence = Presence(storage, "me")
    fifth_beat = beating(presence, monkeypatch, 5)
    reads: list[int] = []
    release = asyncio.Event()

    async def stuck(owner: str | None, *, stale_after: float) -> list[JobRecord]:
        reads.append(len(reads))
        await release.wait()  # e.g. a channel that answers slowly
        raise OSError("connection reset by peer")

    monkeypatch.setattr(storage, "recoverable_jobs", stuck)
    tasks = Tasks()
    recovery = CrashRecovery(
        discord.Client(intents=discord.Intents.none()), storage, ledger, owner="me", spawn=tasks
    )
    tasks(recovery._keep_alive(presence), name="heartbeat")
    try:
        await fifth_beat.wait()
        assert reads == [0]  # one sweep at a time: the slow one was not started again
        release.set()
        more = beating(presence, monkeypatch, 3)
        await more.wait()  # the failed sweep did not stop the heartbeat
    finally:
        await tasks.cancel()
    assert len(reads) >= 2


async def test_a_restart_notice_reaches_a_channel_this_process_does_not_cache(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    job = await ledger.reserve(new_job(units=3))
    client = discord.Client(intents=discord.Intents.none())

    async def ready() -> None:
        return None

    monkeypatch.setattr(client, "wait_until_ready", ready)
    sent: list[tuple[int, str]] = []

    async def send(channel: discord.PartialMessageable, content: str, **kwargs: Any) -> None:
        sent.append((channel.id, content))

    monkeypatch.setattr(discord.PartialMessageable, "send", send)
    tasks = Tasks()
    recovery = CrashRecovery(client, storage, ledger, owner="me", spawn=tasks)
    try:
        await recovery._announce([await stored(ledger, job.id)])
    finally:
        await tasks.cancel()
    assert len(sent) == 1 and sent[0][0] == job.channel_id
    assert f"job #{job.id}" in sent[0][1] and "3 credits were refunded" in sent[0][1]


async def test_a_channel_unreachable_for_a_dropped_connection_leaves_the_job_open(
    storage: Storage,
) -> None:
    ledger = CreditLedger(storage, default_credits=100)
    job = await ledger.reserve(new_job(units=2))
    await ledger.mark_running(job.id)
    marked = await ledger.mark_delivering(job)

    class Unreachable:
        def get_channel(self, channel_id: int) -> None:
            return None

        async def fetch_channel(self, channel_id: int) -> None:
            raise aiohttp.ClientConnectionError("connection reset by peer")

    # Not read is not "not there": nothing is refunded, the next start decides.
    assert await settle_delivery(Unreachable(), ledger, marked.job) is None  # type: ignore[arg-type]
    assert (await stored(ledger, job.id)).delivering
    assert await ledger.balance(GUILD) == 98
