"""What one job costs the database: its writes, and no read of what the bot already knows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bot.credits import CreditLedger
from bot.segmind import Txt2ImgRequest
from bot.storage import open_storage
from tests.bot.test_jobs import ALICE, GUILD, RecordingDelivery, ScriptedGenerator, make_queue


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[CreditLedger]:
    storage = await open_storage(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield CreditLedger(storage, default_credits=100)
    await storage.close()


async def test_a_job_writes_four_transactions_and_reads_nothing(ledger: CreditLedger) -> None:
    await ledger.ensure_guild(GUILD)
    queue = make_queue(ScriptedGenerator(), ledger)
    statements: list[str] = []
    engine = ledger._storage._db.engine.sync_engine  # looking inside on purpose

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()[:2]))

    def begin(conn: Any) -> None:
        reading = conn.get_execution_options().get("imagine_read", False)
        statements.append("BEGIN" if reading else "BEGIN IMMEDIATE")

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "begin", begin)
    try:
        delivery = RecordingDelivery(message_id=42)
        job = await queue.enqueue(
            guild_id=GUILD,
            channel_id=5,
            user_id=ALICE,
            request=Txt2ImgRequest(prompt="a cat", samples=2, seed=1),
            delivery=delivery,
        )
        await job.settled.wait()
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine, "begin", begin)
    # Reserve, running, being posted, the commit with the message id: each one transaction.
    # The balance the result shows comes with the "being posted" write, not a read.
    assert statements.count("BEGIN IMMEDIATE") == 4
    assert [s for s in statements if s.startswith(("BEGIN", "SELECT"))] == ["BEGIN IMMEDIATE"] * 4
    assert delivery.balances == [98] == [delivery.results[0].balance]
