"""The PostgreSQL benchmarks at their smallest size on the tests' server: the backlog ones
(bench/backlog.py, every job settled there) and the shared API slots (bench/slots_pg.py).
No timing is asserted."""

from __future__ import annotations

import pytest

from bench import backlog, scenarios, slots_pg
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


async def test_the_shared_slots_benchmark_runs(pg_server: PgServer) -> None:
    with pg_server.database() as url:
        run = await slots_pg.measure(url, processes=2, slots=1, call=0.05, seconds=0.5)
    assert len(run.calls) == 2 and min(run.calls) > 0 and 0 < run.busy <= 1
    assert run.row().startswith("| 2 | 1 | 0.05 s | ")
