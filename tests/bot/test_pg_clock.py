"""PostgreSQL: processes on hosts whose clocks disagree judge each other's liveness fairly.

Each process stamps heartbeats and computes "silent for a minute" with the database
server's clock (this host's clock plus its offset to the server, measured when the
database is opened and at every heartbeat), so a host two minutes behind another, or
whose clock is stepped while it runs, is not taken for dead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.storage import Storage, _pg_setup, open_storage
from tests.bot.test_storage_coordination import ids, new_job, raw_fetch, reserved

SKEW = timedelta(minutes=2)


def skewed(offset: timedelta) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC) + offset


async def open_with_clock(
    pg_url: str, offset: timedelta, monkeypatch: pytest.MonkeyPatch
) -> Storage:
    """The storage of a process whose host's clock is ``offset`` off the true time."""
    monkeypatch.setattr(_pg_setup, "utcnow", skewed(offset))
    return await open_storage(pg_url)


async def heartbeat_off_server(pg_url: str, owner: str) -> timedelta:
    """How far ``owner``'s last heartbeat stamp is from the server's clock now."""
    [(stamped, server_now)] = await raw_fetch(
        pg_url, "SELECT heartbeat_at, clock_timestamp() FROM job_owners WHERE owner = $1", owner
    )
    server: datetime = server_now
    return datetime.fromisoformat(str(stamped)) - server


async def test_a_host_behind_is_not_taken_for_dead_by_a_host_ahead(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.storage"):
        behind = await open_with_clock(pg_url, -SKEW, monkeypatch)
        ahead = await open_with_clock(pg_url, SKEW, monkeypatch)
    try:
        await behind.heartbeat("behind")
        await ahead.heartbeat("ahead")
        job = await reserved(behind, new_job(owner="behind"))

        # Two minutes apart, a minute of silence: "behind" beat just now and is alive.
        assert ids(await ahead.recoverable_jobs("ahead", stale_after=60)) == []
        assert await behind.get_job(job.id) is not None  # its connections were not ended

        # Stamps follow the server's clock, not the host's.
        assert abs(await heartbeat_off_server(pg_url, "behind")) < timedelta(seconds=5)
    finally:
        await behind.close()
        await ahead.close()
    warnings = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert any("120.0 s behind" in text for text in warnings), warnings
    assert any("120.0 s ahead of" in text for text in warnings), warnings


async def test_a_host_in_time_opens_without_a_warning(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.storage"):
        storage = await open_storage(pg_url)
    await storage.close()
    assert not [r for r in caplog.records if "clock" in r.getMessage()]


async def test_a_host_clock_stepped_while_running_is_followed_from_the_next_heartbeat(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    skew = [timedelta(0)]
    monkeypatch.setattr(_pg_setup, "utcnow", lambda: datetime.now(UTC) + skew[0])
    storage = await open_storage(pg_url)
    try:
        await storage.heartbeat("stepped")
        skew[0] = SKEW  # an NTP step: this host's clock jumps two minutes ahead
        with caplog.at_level(logging.WARNING, logger="bot.storage"):
            await storage.heartbeat("stepped")
        assert abs(await heartbeat_off_server(pg_url, "stepped")) < timedelta(seconds=5)
    finally:
        await storage.close()
    warnings = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    assert any("moved 120.0 s" in text for text in warnings), warnings
