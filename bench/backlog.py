"""The backlog benchmarks: a queue thousands of jobs deep, and a backlog paced by SEGMIND_RPM.

Both run the bot in its own process (:mod:`bench.process`) against the fakes here.

* **backlog**: ``jobs`` one-image jobs arrive evenly within ``arrival`` seconds, far
  faster than the API (fixed latency, ``MAX_CONCURRENT_JOBS=8``) can serve them, so
  a queue builds up and drains. Measured: the drain time against the API-bound
  ideal (``jobs * latency / 8``), the Discord requests per job (every REST request
  the bot made, from the first push until every job settled, ÷ jobs), the time to
  acknowledge, the bot's event-loop lag and its peak RSS.
* **paced**: ``SEGMIND_RPM`` set, the fake API enforcing that limit itself (429
  beyond it in any 60 s window), and more jobs than the limit lets through in
  ``seconds``: the rate the calls were accepted at, and how many 429s there were.

Runs are bounded: whatever has not finished by the deadline is counted as such
(the code before the backlog work did not drain 3,000 jobs in minutes).

Both are part of ``python -m bench`` (on SQLite). ``python -m bench.backlog
[--quick] [--database postgresql]`` runs them alone and prints their rows; on
PostgreSQL each run gets a throwaway local server (bench/database.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
from dataclasses import dataclass, field

from bench import scenarios
from bench.database import DATABASES
from bench.harness import Arrival, Harness, HarnessConfig, percentile
from bench.process import BotProcess
from bench.scenarios import MAX_CHANNELS, Profile
from bot import event_loop

__all__ = ["SIZES", "BacklogRun", "BacklogSize", "PacedRun", "backlog", "paced", "rows"]

CONCURRENCY = 8
MEMBERS = 500

# Targets (issue 16).
DRAIN_RATIO = 1.15
REQUESTS_PER_JOB = 5
ACK_P99 = 1.0
LOOP_LAG_P99 = 0.050
PEAK_RSS = 200e6
PACED_ERROR = 0.02


@dataclass(frozen=True)
class BacklogSize:
    jobs: int
    arrival: float  # seconds over which the jobs arrive
    latency: float  # the fake API's fixed latency
    rpm: int  # the paced run's SEGMIND_RPM
    paced_seconds: float  # how long the paced run keeps a backlog


SIZES = {
    "full": BacklogSize(jobs=3000, arrival=10.0, latency=0.1, rpm=600, paced_seconds=120.0),
    "quick": BacklogSize(jobs=300, arrival=1.0, latency=0.1, rpm=600, paced_seconds=3.0),
    "smoke": BacklogSize(jobs=40, arrival=0.5, latency=0.05, rpm=1200, paced_seconds=2.0),
}


@dataclass
class BacklogRun:
    jobs: int
    arrival: float
    latency: float
    concurrency: int
    completed: int = 0
    drain: float = math.nan  # first push to the last result
    requests: int = 0  # REST requests the bot made to the fake Discord meanwhile
    acks: list[float] = field(default_factory=list)
    unacknowledged: int = 0
    loop_lag: list[float] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def ideal(self) -> float:
        """The API-bound drain time: every slot busy with the API all the time."""
        return self.jobs * self.latency / self.concurrency

    @property
    def ratio(self) -> float:
        return self.drain / self.ideal


@dataclass
class PacedRun:
    rpm: int
    seconds: float
    jobs: int = 0
    completed: int = 0  # results posted by the deadline
    unacknowledged: int = 0  # interactions whose defer Discord refused (too late)
    accepted: list[float] = field(default_factory=list)  # when each 200 call arrived
    rate_limited: int = 0  # 429s the fake API answered

    @property
    def achieved(self) -> float:
        """Calls accepted per minute, over the backlog's first ``seconds``' worth."""
        calls = self.accepted[: int(self.rpm * self.seconds / 60)]
        if len(calls) < 2:
            return math.nan
        return (len(calls) - 1) / (calls[-1] - calls[0]) * 60


def _config(size: BacklogSize, profile: Profile, database: str) -> HarnessConfig:
    return HarnessConfig(
        latency=size.latency,
        max_concurrent_jobs=CONCURRENCY,
        members=MEMBERS,
        channels=MAX_CHANNELS,
        event_loop=profile.event_loop,
        database=database,
    )


async def _arrive(
    harness: Harness, jobs: int, seconds: float
) -> list[tuple[float, asyncio.Future[Arrival]]]:
    """Push ``jobs`` interactions evenly over ``seconds``; their push times and results."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    submitted = []
    for number in range(jobs):
        due = start + seconds * number / jobs
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        record, arrival = await harness.submit(number)
        submitted.append((record, arrival))
    return [(record.created_at, arrival) for record, arrival in submitted]


async def backlog(
    profile: Profile, *, deadline: float = 300.0, database: str = "sqlite"
) -> BacklogRun:
    size = SIZES[profile.name]
    run = BacklogRun(size.jobs, size.arrival, size.latency, CONCURRENCY)
    async with Harness.fakes(_config(size, profile, database)) as harness:
        async with BotProcess.running(harness) as bot:
            await harness.run_burst(CONCURRENCY)  # connections opened, caches warm
            await harness.idle(timeout=60.0)
            before = len(harness.discord.requests)
            first = len(harness.discord.interactions)
            started = time.monotonic()
            pushed = await _arrive(harness, size.jobs, size.arrival)
            arrivals = [arrival for _, arrival in pushed]
            await asyncio.wait(arrivals, timeout=max(deadline - (time.monotonic() - started), 1))
            done = [a.result() for a in arrivals if a.done() and not a.cancelled()]
            run.completed = len(done)
            if run.completed == size.jobs:
                run.drain = max(a.arrived for a in done) - min(sent for sent, _ in pushed)
                await harness.idle(timeout=120.0)  # every final status edit too
            ended = time.monotonic()
            run.requests = len(harness.discord.requests) - before
            records = harness.discord.interactions[first:]
            run.acks = [r.ack_latency for r in records if r.ack_latency is not None]
            run.unacknowledged = len(records) - len(run.acks)
            run.peak_rss = bot.stats().peak_rss
        run.loop_lag = bot.loop_lag(started, ended)
    return run


async def paced(profile: Profile, *, deadline: float = 300.0, database: str = "sqlite") -> PacedRun:
    size = SIZES[profile.name]
    run = PacedRun(size.rpm, size.paced_seconds)
    run.jobs = jobs = int(size.rpm * size.paced_seconds / 60) + CONCURRENCY * 2
    async with Harness.fakes(_config(size, profile, database)) as harness:
        harness.segmind.rate_limit = (size.rpm, 60.0)
        async with BotProcess.running(harness, env={"SEGMIND_RPM": str(size.rpm)}):
            before = len(harness.segmind.requests)
            # A backlog from the start: the jobs arrive ten times faster than the limit.
            first = len(harness.discord.interactions)
            pushed = await _arrive(harness, jobs, jobs / (size.rpm / 60) / 10)
            arrivals = [arrival for _, arrival in pushed]
            await asyncio.wait(arrivals, timeout=deadline)
            run.completed = sum(a.done() and not a.cancelled() for a in arrivals)
            records = harness.discord.interactions[first:]
            run.unacknowledged = sum(not record.acknowledged for record in records)
            if run.completed == jobs:
                await harness.idle(timeout=60.0)
            calls = harness.segmind.requests[before:]
            run.accepted = sorted(r.received_at for r in calls if r.status == 200)
            run.rate_limited = harness.segmind.rate_limited
    return run


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _unacked(count: int) -> str:
    return f" ({count} never acknowledged)" if count else ""


def rows(run: BacklogRun, paced_run: PacedRun) -> list[tuple[str, str, str, str, bool]]:
    """``(key, label, result, target, met)`` for each backlog row of the report."""
    where = (
        f"{run.jobs} one-image jobs arriving within {run.arrival:g} s, API latency "
        f"{run.latency * 1000:.0f} ms, MAX_CONCURRENT_JOBS={run.concurrency}, bot process"
    )
    if run.completed < run.jobs:
        drain = f"{run.completed} of {run.jobs} done when stopped; {where}"
    else:
        drain = f"{run.drain:.1f} s for an ideal of {run.ideal:.1f} s ({run.ratio:.2f}×); {where}"
    per_job = run.requests / max(run.completed, 1)
    ack = percentile(run.acks, 0.99) if not run.unacknowledged else math.inf
    lag = percentile(run.loop_lag, 0.99)
    return [
        ("backlog_drain", "backlog, drain time", drain, "≤ 1.15× ideal", run.ratio <= DRAIN_RATIO),
        (
            "backlog_requests",
            "backlog, Discord requests per job",
            f"{per_job:.2f} ({run.requests} requests, {run.completed} jobs)",
            "≤ 5",
            run.completed == run.jobs and per_job <= REQUESTS_PER_JOB,
        ),
        (
            "backlog_ack",
            "backlog, time to acknowledge p99",
            f"{_ms(percentile(run.acks, 0.99))}{_unacked(run.unacknowledged)}",
            "< 1 s",
            ack < ACK_P99,
        ),
        (
            "backlog_loop_lag",
            "backlog, event-loop lag p99, bot process",
            _ms(lag),
            "< 50 ms",
            lag < LOOP_LAG_P99,
        ),
        (
            "backlog_memory",
            "backlog, peak RSS, bot process",
            f"{run.peak_rss / 1e6:.0f} MB",
            "< 200 MB",
            run.peak_rss < PEAK_RSS,
        ),
        (
            "backlog_paced",
            f"paced backlog, SEGMIND_RPM={paced_run.rpm}",
            f"{paced_run.achieved:.1f} calls a minute over {paced_run.seconds:g} s "
            f"({paced_run.achieved / paced_run.rpm:.1%} of the limit); "
            f"{paced_run.rate_limited} API 429s; "
            f"{paced_run.completed} of {paced_run.jobs} jobs done"
            f"{_unacked(paced_run.unacknowledged)}",
            "within 2 %, 0 429s, every job done",
            abs(paced_run.achieved / paced_run.rpm - 1) <= PACED_ERROR
            and paced_run.rate_limited == 0
            and paced_run.completed == paced_run.jobs,
        ),
    ]


async def _both(profile: Profile, database: str) -> tuple[BacklogRun, PacedRun]:
    return (
        await backlog(profile, database=database),
        await paced(profile, database=database),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backlog", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="300 jobs and a 3 s paced run")
    parser.add_argument("--database", choices=DATABASES, default="sqlite")
    args = parser.parse_args(argv)
    profile = scenarios.QUICK if args.quick else scenarios.FULL
    logging.basicConfig(level=logging.ERROR)
    run, paced_run = event_loop.run(_both(profile, args.database), profile.event_loop)
    print(f"| benchmark ({args.database}) | result | target | verdict |\n|---|---|---|---|")
    for _, label, result, target, met in rows(run, paced_run):
        print(f"| {label} | {result} | {target} | {'✅ met' if met else '❌ missed'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
