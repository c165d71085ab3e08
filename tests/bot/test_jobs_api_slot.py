"""The API slot of an image is free as soon as its call ends, whatever the database is doing.

With PostgreSQL a job's queued -> running write can wait behind a crowd of
reservations for a connection (the guild's row serialises them); the next image
must not wait for it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.credits import CreditLedger
from bot.storage import open_storage
from tests.bot.test_jobs import (
    ALICE,
    BOB,
    GUILD,
    ScriptedGenerator,
    hold_marks,
    make_queue,
    settle,
    submit,
)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[CreditLedger]:
    storage = await open_storage(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield CreditLedger(storage, default_credits=100)
    await storage.close()


async def test_the_next_call_starts_while_the_previous_job_is_still_being_marked(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    marked = hold_marks(ledger, monkeypatch)
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    first, _ = await submit(queue, user=ALICE, prompt="first")
    second, _ = await submit(queue, user=BOB, prompt="second")
    await generator.wait_calls(1)
    generator.release()  # "first" is answered; its start is not written yet
    await generator.wait_calls(2)  # would time out if the slot waited for that write
    assert queue.in_flight == 1
    assert not first.settled.is_set()  # its image is still kept only after the verdict
    generator.release()
    marked.set()
    await settle(first)
    await settle(second)
    assert generator.peak == 1
    assert await ledger.balance(GUILD) == 98
    assert await ledger.verify()
