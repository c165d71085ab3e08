"""The backlog benchmarks (bench/backlog.py) at their smallest size on PostgreSQL: the bot
process on the tests' server, every job settled there. No timing is asserted."""

from __future__ import annotations

import pytest

from bench import backlog, scenarios
from bot.credits import JobStatus
from bot.storage import open_storage
from tests.pg import PgServer

pytestmark = pytest.mark.timeout(90)


async def test_the_backlog_benchmarks_run_on_postgresql(pg_server: PgServer) -> None:
    with pg_server.database() as deep_url, pg_server.database() as paced_url:
        deep = await backlog.backlog(scenarios.SMOKE, database=deep_url)
        paced = await backlog.paced(scenarios.SMOKE, database=paced_url)
        storage = await open_storage(deep_url)
        try:
            settled = await storage.list_jobs(statuses={JobStatus.SUCCEEDED})
        finally:
            await storage.close()
    assert deep.completed == deep.jobs and deep.unacknowledged == 0 and deep.requests > 0
    # The warm-up burst and every job of the backlog, all written to PostgreSQL.
    assert len(settled) == deep.jobs + backlog.CONCURRENCY
    assert paced.completed == paced.jobs and paced.rate_limited == 0
