"""The backlog's pace timer on uvloop, which answers ``call_at`` under a millisecond away with a
plain Handle (no ``when()``): asking for the next image again must not crash the queue."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from bot.backlog import Backlog
from bot.credits import JobRecord, JobStatus
from bot.job_model import Job
from bot.segmind import Txt2ImgRequest
from tests.bot.test_jobs import RecordingDelivery

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency except on Windows")


def a_job(images: int) -> Job:
    now = datetime.now(UTC)
    record = JobRecord(
        id=1, guild_id=1, channel_id=2, user_id=3, params={}, cost=images, units_per_image=1,
        images_total=images, images_delivered=0, status=JobStatus.QUEUED, message_id=None,
        error=None, parent_job_id=None, created_at=now, updated_at=now,
    )  # fmt: skip
    request = Txt2ImgRequest(prompt="a cat", samples=images)
    return Job(record=record, request=request, delivery=RecordingDelivery(), seq=0)


def test_a_start_due_in_under_a_millisecond_is_asked_for_twice() -> None:
    async def scenario() -> int:
        woken: list[float] = []
        backlog = Backlog(lambda: woken.append(time.monotonic()), max_concurrent=1, rpm=600)
        backlog.add(a_job(2))
        assert backlog.next_image() is not None  # the first start; the next is due 0.1 s later
        # The next start due in 0.3 ms: the timer is a plain Handle on uvloop.
        backlog.pace._next_start = time.monotonic() + 0.0003
        assert backlog.next_image() is None
        backlog.pace._next_start = time.monotonic() + 0.0002  # asked again, sooner
        assert backlog.next_image() is None
        await asyncio.sleep(0.01)
        await backlog.close()
        return len(woken)

    assert uvloop.run(scenario()) == 1
