"""Smoke test of the benchmarks (bench/): every benchmark runs at its smallest size, in
this process (the bot-process ones start their own child), and the report has every
row. No timing is asserted: this only proves the benchmarks still run."""

from __future__ import annotations

import asyncio
import math

import pytest

from bench import ledger, scenarios
from bench.__main__ import run
from bench.report import ROW_KEYS, build_report
from bot.event_loop import EventLoopChoice, resolve

pytestmark = pytest.mark.timeout(60)


def test_smallest_benchmark_reports_every_row() -> None:
    results = asyncio.run(run(scenarios.SMOKE, verbose=False))
    report = build_report(results, command="pytest tests/test_bench.py")

    assert [row.key for row in report.rows] == list(ROW_KEYS)
    table = report.markdown()
    for row in report.rows:
        assert row.result and "n/a" not in row.result, row
        assert f"| {row.label} | {row.result} |" in table
    assert all(run.jobs for run in report.details)
    # Every timed job knows when its result reached the fake Discord (before the fake
    # stored it) and how long the fake API really held its call (at least the latency).
    latency = scenarios.SMOKE.latency
    for job in (job for scenario in report.details for job in scenario.jobs):
        assert job.arrived is not None and job.sent < job.arrived <= job.done, job
        assert job.api is not None and latency <= job.api < latency + 1, job
    assert results.process_flat.peak_rss > 0 and results.process_photo.peak_rss > 0
    assert not math.isnan(results.ledger.rate)
    assert results.ledger.concurrent_rate > 0
    # The backlog ran to the end: every job answered and settled, calls paced, no 429.
    assert results.backlog.completed == results.backlog.jobs and results.backlog.requests > 0
    assert results.backlog.unacknowledged == 0 and results.backlog.peak_rss > 0
    assert len(results.paced.accepted) > 2 and results.paced.rate_limited == 0


@pytest.mark.parametrize("loop", ["asyncio", "auto"])
def test_the_ledger_benchmark_runs_on_the_loop_asked_for(
    loop: EventLoopChoice, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ledger.main(["--pairs", "20", "--loop", loop]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"temp file DB, {resolve(loop)})"), line
