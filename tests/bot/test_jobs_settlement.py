"""Settling a job when the database or the post fails: retried writes, and a post whose
outcome is unclear decided from the channel, never refunded blindly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.credits import CommitResult, CreditLedger, JobRecord, JobStatus
from bot.i18n import render
from bot.image_store import HeldImage
from bot.job_model import UnclearDelivery
from bot.jobs import Delivered, Job, JobQueue
from bot.segmind import SegmindUnauthorized
from bot.storage import StorageError
from tests.bot.test_jobs import ALICE, GUILD, RecordingDelivery, ScriptedGenerator, settle, submit

NO_WAIT = (0.0,) * 6
LOCKED = StorageError("The database is locked.")


def make_queue(ledger: CreditLedger, generator: ScriptedGenerator, **options: Any) -> JobQueue:
    return JobQueue(
        generator, ledger, max_concurrent=4, max_per_user=3, settle_delays=NO_WAIT, **options
    )


def failing(
    ledger: CreditLedger,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    times: int,
    *,
    written: bool = False,
) -> list[int]:
    """``ledger.<name>`` raises StorageError ``times`` times (``written``: after the write
    went through, like a connection lost before the answer); returns the attempt counter."""
    real: Callable[..., Awaitable[CommitResult]] = getattr(ledger, name)
    attempts = [0]

    async def flaky(*args: Any, **kwargs: Any) -> CommitResult:
        attempts[0] += 1
        if attempts[0] <= times:
            if written:
                await real(*args, **kwargs)
            raise LOCKED
        return await real(*args, **kwargs)

    monkeypatch.setattr(ledger, name, flaky)
    return attempts


async def test_a_commit_the_database_refuses_is_retried(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = failing(ledger, monkeypatch, "commit", 2)
    queue = make_queue(ledger, ScriptedGenerator())
    job, delivery = await submit(queue, samples=2)
    await settle(job)
    assert attempts == [3]
    assert [result.committed for result in delivery.results] == [2]
    assert delivery.failures == []
    stored = await ledger.get_job(job.id)
    assert stored is not None and stored.status is JobStatus.SUCCEEDED
    assert await ledger.balance(GUILD) == 98
    assert await ledger.verify()


async def test_a_commit_written_before_its_error_is_told_as_charged_once(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first commit went through but its answer was lost: the retry finds the job
    # settled, and the member is told what was charged (not "0 credits spent").
    failing(ledger, monkeypatch, "commit", 1, written=True)
    queue = make_queue(ledger, ScriptedGenerator())
    job, delivery = await submit(queue, samples=3)
    await settle(job)
    [result] = delivery.results
    assert (result.committed, result.refunded, result.balance) == (3, 0, 97)
    assert await ledger.balance(GUILD) == 97
    assert await ledger.verify()


async def test_a_refund_that_never_goes_through_is_left_for_recovery_and_said(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = failing(ledger, monkeypatch, "refund", 100)
    generator = ScriptedGenerator()
    generator.failures["bad key"] = SegmindUnauthorized(status=401, api_message="Unauthorized")
    queue = make_queue(ledger, generator)
    job, delivery = await submit(queue, prompt="bad key")
    await settle(job)
    assert attempts == [len(NO_WAIT) + 1]
    [(message, refunded)] = delivery.failures
    assert refunded == 0
    assert "API key was rejected" in message
    assert "returned when the bot restarts" in message
    assert "zurückgegeben" in render("de", message)  # translated, reason included
    # The credits stay reserved until the next start's recovery; the queue moved on.
    [open_job] = await ledger.active_jobs()
    assert open_job.id == job.id
    assert queue.active_jobs == 0 and queue.user_load(GUILD, ALICE) == 0


async def test_a_commit_that_never_goes_through_tells_the_member_it_is_settled_later(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing(ledger, monkeypatch, "commit", 100)
    queue = make_queue(ledger, ScriptedGenerator())
    job, delivery = await submit(queue)
    await settle(job)
    assert len(delivery.delivered) == 1 and delivery.results == []
    [(message, refunded)] = delivery.failures
    assert "settled when the bot restarts" in message and refunded == 0
    [open_job] = await ledger.active_jobs()
    assert open_job.delivering  # the next start decides it from the channel


@dataclass
class UnclearPost(RecordingDelivery):
    """The result's first message got no answer (a dropped connection)."""

    async def deliver(self, job: Job, images: Sequence[HeldImage], balance: int) -> Delivered:
        raise UnclearDelivery() from ConnectionResetError(104, "Connection reset by peer")


@dataclass
class ChannelShows:
    """Stands in for bot.recovery: ``images`` found in the channel (0: none)."""

    ledger: CreditLedger
    images: int
    asked: list[JobRecord] = field(default_factory=list)

    async def __call__(self, job: JobRecord) -> CommitResult | None:
        self.asked.append(job)
        if self.images:
            return await self.ledger.commit(job, self.images, message_id=77)
        return await self.ledger.refund(job, "not found in the channel")


async def test_an_unclear_post_found_in_the_channel_is_committed(ledger: CreditLedger) -> None:
    channel = ChannelShows(ledger, images=2)
    queue = make_queue(ledger, ScriptedGenerator(), settle_from_channel=channel)
    job, delivery = await submit(queue, samples=2, delivery=UnclearPost())
    await settle(job)
    [asked] = channel.asked
    assert asked.id == job.id and asked.delivering  # marked before the post
    [result] = delivery.results
    assert (result.committed, result.balance) == (2, 98)
    assert delivery.failures == []
    assert await ledger.balance(GUILD) == 98
    assert await ledger.verify()


async def test_an_unclear_post_missing_from_the_channel_is_refunded(ledger: CreditLedger) -> None:
    channel = ChannelShows(ledger, images=0)
    queue = make_queue(ledger, ScriptedGenerator(), settle_from_channel=channel)
    job, delivery = await submit(queue, samples=2, delivery=UnclearPost())
    await settle(job)
    [(message, refunded)] = delivery.failures
    assert "could not be posted" in message and refunded == 2
    assert await ledger.balance(GUILD) == 100
    assert await ledger.verify()


async def test_an_unclear_post_is_retried_on_the_database_and_never_refunded_blindly(
    ledger: CreditLedger,
) -> None:
    calls = 0

    async def channel_unreadable(job: JobRecord) -> CommitResult | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise LOCKED
        return None  # Discord is down: the channel cannot be read now

    queue = make_queue(ledger, ScriptedGenerator(), settle_from_channel=channel_unreadable)
    job, delivery = await submit(queue, delivery=UnclearPost())
    await settle(job)
    assert calls == 2
    [(message, refunded)] = delivery.failures
    assert "may not have reached" in message and refunded == 0
    [open_job] = await ledger.active_jobs()
    assert open_job.delivering and open_job.status is not JobStatus.REFUNDED
    assert await ledger.balance(GUILD) == 99


async def test_without_a_channel_reader_an_unclear_post_waits_for_recovery(
    ledger: CreditLedger,
) -> None:
    queue = make_queue(ledger, ScriptedGenerator())
    job, delivery = await submit(queue, delivery=UnclearPost())
    await asyncio.wait_for(job.settled.wait(), 5)
    assert delivery.failures and delivery.failures[0][1] == 0
    [open_job] = await ledger.active_jobs()
    assert open_job.delivering
