"""The benchmarks: each is bounded in time and count, starts its own bot (with the
settings it needs) and returns plain figures (seconds, bytes, rates) for
:mod:`bench.report`.

* **overhead**: time from the ``INTERACTION_CREATE`` push to the result message
  reaching the fake Discord, minus the time the fake Segmind held the job's API
  call (see :mod:`bench.harness`), with ``MAX_CONCURRENT_JOBS`` at least the number
  of jobs in flight (no job waits for a slot):

  - *sequential*: one job at a time, each pushed only once the previous one has
    settled (credits committed, final status edit answered), so that exactly one
    job is in the bot;
  - *burst of N*: N jobs pushed back to back by N members, all timed;
  - *steady, N in flight*: N-1 jobs held at the API (in flight all along) while
    probe jobs go through one at a time, each once the previous probe has settled,
    and only the probes are timed.

* **throughput**: N one-image jobs pushed at once; jobs per second against
  ``MAX_CONCURRENT_JOBS / latency``; the naive baseline is the same run with
  ``MAX_CONCURRENT_JOBS=1``.
* **event-loop lag** (a 5 ms sleeper's oversleep) and **time to acknowledge**
  (``InteractionRecord.ack_latency``) are recorded during the overhead runs.
* **bot process**: the bot's entry point in a child process (the fakes stay
  here): its CPU per job, its overhead (sequential jobs settled one by one, as
  above, and bursts) and event-loop lag with a core of its own,
  and its peak RSS with 100 jobs of 8 images at 1024x1024 in flight.
* **ledger**: reserve+commit pairs per second on a file database
  (:func:`bench.ledger.measure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from bench import ledger as ledger_bench
from bench.harness import HELD_PREFIX, Harness, HarnessConfig, JobTiming
from bench.looplag import LoopLagSampler
from bench.process import BotProcess
from bot.event_loop import EventLoopChoice

__all__ = [
    "FULL",
    "PROFILES",
    "QUICK",
    "SMOKE",
    "LatencyRun",
    "LedgerRun",
    "OverheadRuns",
    "ProcessRun",
    "Profile",
    "ThroughputRun",
    "ledger",
    "overhead",
    "process_run",
    "process_throughput",
    "throughput",
]

#: Channels the jobs are spread over (discord.py holds each channel's messages to the
#: rate limit the fake announces, 50 per second; real Discord allows far fewer).
MAX_CHANNELS = 64
#: Reserve+commit pairs in flight at once in the concurrent ledger run.
LEDGER_CONCURRENCY = 4
BIG_IMAGES = {"samples": 8, "img_width": 1024, "img_height": 1024}


@dataclass(frozen=True)
class Profile:
    """How much of each benchmark to run."""

    name: str
    latency: float = 0.2
    levels: tuple[int, int] = (50, 200)  # "many in flight" (1 is always measured)
    sequential_jobs: int = 150  # p99 of 150 samples is their second-largest, not the max
    burst_rounds: tuple[int, int] = (6, 3)  # measured rounds per level: 300 and 600 jobs
    probes: int = 150
    throughput_jobs: int = 100
    throughput_concurrency: int = 4
    naive_jobs: int = 50
    capacity_jobs: int = 320
    capacity_concurrency: int = 64
    process_sequential_jobs: int = 40
    process_burst_rounds: int = 3  # bursts of levels[1] jobs, the bot in its own process
    memory_jobs: int = 100
    ledger_pairs: int = 3000
    ledger_runs: int = 3  # each concurrency; the median is reported
    # Let every job settle (final status edit) between phases. The one-at-a-time jobs
    # (sequential, steady probes) each settle before the next whatever this says.
    settle: bool = True
    # EVENT_LOOP for every bot: ``python -m bench`` runs itself on it, the child gets it.
    event_loop: EventLoopChoice = "auto"


FULL = Profile("full")
QUICK = Profile(
    "quick",
    sequential_jobs=8,
    burst_rounds=(1, 1),
    probes=8,
    throughput_jobs=40,
    naive_jobs=8,
    capacity_jobs=128,
    process_sequential_jobs=5,
    process_burst_rounds=1,
    ledger_pairs=2000,
    ledger_runs=1,
)
#: For the test suite: every benchmark, tiny (no timing is asserted).
SMOKE = Profile(
    "smoke",
    latency=0.05,
    levels=(3, 6),
    sequential_jobs=2,
    burst_rounds=(1, 1),
    probes=2,
    throughput_jobs=8,
    naive_jobs=4,
    capacity_jobs=8,
    capacity_concurrency=8,
    process_sequential_jobs=2,
    process_burst_rounds=1,
    memory_jobs=3,
    ledger_pairs=100,
    ledger_runs=1,
    settle=False,
)
PROFILES = {profile.name: profile for profile in (FULL, QUICK, SMOKE)}


@dataclass
class LatencyRun:
    """Timed jobs of one overhead scenario, with what was sampled meanwhile."""

    name: str
    in_flight: int
    latency: float
    jobs: list[JobTiming] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)
    seconds: float = 0.0
    api_times: list[float] = field(default_factory=list)  # as the bot's client timed them

    @property
    def api_extra(self) -> list[float]:
        """How much longer than the fixed latency each API call took, seen from the bot:
        the fake's timer overshoot and both ends' HTTP handling."""
        return [seconds - self.latency for seconds in self.api_times]

    @property
    def overheads(self) -> list[float]:
        """Push to the result's arrival, less the API call's actual latency."""
        return [job.overhead(self.latency) for job in self.jobs]

    @property
    def overheads_with_fakes(self) -> list[float]:
        """The measure of earlier runs: push to the result stored by the fake, less the
        nominal latency; it adds the fakes' own work (timer lateness, reading and
        storing the upload) to the bot's."""
        return [job.total - self.latency for job in self.jobs]

    @property
    def acks(self) -> list[float]:
        return [job.ack_latency for job in self.jobs if job.ack_latency is not None]


@dataclass
class OverheadRuns:
    """The overhead scenarios, all run by one bot (``MAX_CONCURRENT_JOBS`` = the top level)."""

    sequential: LatencyRun
    bursts: list[LatencyRun] = field(default_factory=list)
    steady: list[LatencyRun] = field(default_factory=list)


@dataclass(frozen=True)
class ThroughputRun:
    jobs: int
    concurrency: int
    latency: float
    seconds: float
    api_time: float = 0.0  # median API call, as the bot timed it

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def ceiling(self) -> float:
        """Jobs per second if every slot were busy with the API all the time."""
        return self.concurrency / self.latency

    @property
    def ratio(self) -> float:
        return self.rate / self.ceiling


@dataclass
class ProcessRun:
    """The bot in a child process (:mod:`bench.process`)."""

    photo_like: bool
    image_bytes: int = 0
    idle_rss: int = 0
    peak_rss: int = 0
    memory_jobs: int = 0
    memory_seconds: float = 0.0
    cpu_per_job: float = 0.0  # seconds of the bot's CPU per one-image job
    cpu_per_big_image: float = 0.0  # per 1024x1024 image of the memory load
    sequential: LatencyRun | None = None
    burst: LatencyRun | None = None
    gc_pauses: list[tuple[int, float]] = field(default_factory=list)  # during the bursts


@dataclass(frozen=True)
class LedgerRun:
    pairs: int
    rates: tuple[float, ...]  # one pair at a time, a fresh file each run
    concurrent_rates: tuple[float, ...]  # LEDGER_CONCURRENCY at a time, as the bot's jobs settle

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def concurrent_rate(self) -> float:
        return statistics.median(self.concurrent_rates)


def _config(profile: Profile, in_flight: int, **overrides: object) -> HarnessConfig:
    values: dict[str, object] = {
        "latency": profile.latency,
        "max_concurrent_jobs": max(in_flight, 4),
        "members": in_flight,
        "channels": min(in_flight, MAX_CHANNELS),
        "event_loop": profile.event_loop,
    }
    values.update(overrides)
    return HarnessConfig(**values)  # type: ignore[arg-type]


async def _settle(harness: Harness, profile: Profile, timeout: float = 60.0) -> None:
    """Between phases: wait until every job is settled (its final status edit comes up
    to a second after the result: the bot throttles status edits to one per second)."""
    if profile.settle:
        await harness.idle(timeout)


async def _warm_up(harness: Harness, profile: Profile, count: int) -> None:
    """An unmeasured burst first: connections opened and kept alive, caches warm."""
    await harness.run_burst(max(1, count))
    await _settle(harness, profile)


# -- overhead ---------------------------------------------------------------------


async def overhead(profile: Profile) -> OverheadRuns:
    """Sequential jobs, then bursts, then probes among held jobs, on one bot whose
    ``MAX_CONCURRENT_JOBS`` is the top level: no job ever waits for a slot."""
    top = profile.levels[1]
    async with Harness.running(_config(profile, top, members=top + 1)) as harness:
        await _warm_up(harness, profile, top)
        runs = OverheadRuns(await _sequential(harness, profile))
        for count, rounds in zip(profile.levels, profile.burst_rounds, strict=True):
            runs.bursts.append(await _bursts(harness, profile, count, rounds))
        for count in profile.levels:
            runs.steady.append(await _steady(harness, profile, count))
    return runs


async def _sequential(harness: Harness, profile: Profile) -> LatencyRun:
    """One job at a time: each is pushed once the previous one has settled (credits
    committed, final status edit answered), so its tail does not overlap the next job."""
    run = LatencyRun("sequential", 1, profile.latency)
    await _one_at_a_time(harness, run, range(profile.sequential_jobs))
    await _settle(harness, profile)
    return run


async def _one_at_a_time(harness: Harness, run: LatencyRun, slots: Iterable[int]) -> None:
    """Time one job per slot, each pushed once the previous one has settled (its credits
    committed, its final status edit answered), with the loop lag and API calls meanwhile."""
    calls = len(harness.api_times())
    started = time.perf_counter()
    with LoopLagSampler() as lag:
        for slot in slots:
            run.jobs.append(await harness.run_job(slot, settle=True))
    run.seconds = time.perf_counter() - started
    run.loop_lag = list(lag.samples)
    run.api_times = harness.api_times()[calls:]


async def _bursts(harness: Harness, profile: Profile, count: int, rounds: int) -> LatencyRun:
    """``count`` jobs pushed back to back by as many members, ``rounds`` times."""
    run = LatencyRun(f"burst of {count}", count, profile.latency)
    for _ in range(rounds):
        calls = len(harness.api_times())
        started = time.perf_counter()
        with LoopLagSampler() as lag:
            run.jobs += await harness.run_burst(count)
        run.seconds += time.perf_counter() - started
        run.loop_lag += list(lag.samples)
        run.api_times += harness.api_times()[calls:]
        await _settle(harness, profile)
    return run


async def _steady(harness: Harness, profile: Profile, in_flight: int) -> LatencyRun:
    """Probe jobs, one at a time, while ``in_flight - 1`` other jobs wait on the API.
    Each probe starts once the previous probe has settled (the held jobs are not waited
    for)."""
    run = LatencyRun(f"steady, {in_flight} in flight", in_flight, profile.latency)
    probe = len(harness.members) - 1  # a member of its own, none of the held jobs'
    held = [await harness.submit(slot, prefix=HELD_PREFIX) for slot in range(in_flight - 1)]
    try:
        # Held at the API. (A job that starts at once has no progress edit to wait for:
        # its requester sees Discord's "thinking…" until the result, then its status line
        # is edited once, to the final text, which is what each probe settles on.)
        await harness.segmind.wait_held(in_flight - 1, timeout=60.0)
        # ... and done with their own start: otherwise the first probe shares the loop with
        # up to 199 queued -> running writes (measured: first probe 33 ms instead of 6).
        await harness.until_running(in_flight - 1, timeout=60.0)
        await _one_at_a_time(harness, run, [probe] * profile.probes)
    finally:
        harness.segmind.release_held()
    async with asyncio.timeout(60.0):
        await asyncio.gather(*(arrival for _, arrival in held))
    await _settle(harness, profile)
    return run


# -- throughput -----------------------------------------------------------------------


async def throughput(profile: Profile, jobs: int, concurrency: int) -> ThroughputRun:
    """``jobs`` one-image jobs pushed at once with ``MAX_CONCURRENT_JOBS=concurrency``:
    from the first push to the last result."""
    config = _config(profile, jobs, max_concurrent_jobs=concurrency)
    async with Harness.running(config) as harness:
        await _warm_up(harness, profile, concurrency)
        calls = len(harness.api_times())
        timings = await harness.run_burst(jobs, timeout=max(120.0, 4 * jobs * profile.latency))
        seconds = max(t.done for t in timings) - min(t.sent for t in timings)
        api_time = statistics.median(harness.api_times()[calls:])
    return ThroughputRun(jobs, concurrency, profile.latency, seconds, api_time)


# -- the bot's own process --------------------------------------------------------------


async def process_throughput(profile: Profile, jobs: int, concurrency: int) -> ThroughputRun:
    """:func:`throughput` with the bot in a child process (the fakes keep this one)."""
    config = _config(profile, jobs, max_concurrent_jobs=concurrency)
    async with Harness.fakes(config) as harness, BotProcess.running(harness):
        await _warm_up(harness, profile, concurrency)
        timings = await harness.run_burst(jobs, timeout=max(120.0, 4 * jobs * profile.latency))
        seconds = max(t.done for t in timings) - min(t.sent for t in timings)
    return ThroughputRun(jobs, concurrency, profile.latency, seconds, math.nan)


async def process_run(profile: Profile, *, photo_like: bool) -> ProcessRun:
    """The bot in a child process. With the fake's flat images: CPU per one-image job,
    overhead sequentially (each job settled before the next) and in bursts of
    ``levels[1]`` jobs, and the bot's own event-loop lag meanwhile. Then (both image
    kinds) peak RSS with ``memory_jobs`` jobs of 8 images at 1024x1024 in flight
    (``MAX_CONCURRENT_JOBS = memory_jobs``, so every job is generating at once)."""
    result = ProcessRun(photo_like=photo_like)
    top, jobs = profile.levels[1], profile.memory_jobs
    width = top if not photo_like else jobs
    config = _config(profile, max(width, jobs), photo_like=photo_like)
    windows: list[tuple[float, float]] = []
    async with Harness.fakes(config) as harness:
        async with BotProcess.running(harness) as bot:
            await _warm_up(harness, profile, 4)
            result.image_bytes = len(await harness.segmind.image(1024, 1024, 0, "size probe"))
            if not photo_like:
                sequential = LatencyRun("sequential, bot in its own process", 1, profile.latency)
                burst = LatencyRun(f"burst of {top}, bot in its own process", top, profile.latency)
                await _warm_up(harness, profile, top)
                before = bot.stats().cpu
                for number in range(profile.process_sequential_jobs):
                    sequential.jobs.append(await harness.run_job(number, settle=True))
                for _ in range(profile.process_burst_rounds):
                    started = time.monotonic()
                    burst.jobs += await harness.run_burst(top)
                    windows.append((started, time.monotonic()))
                    await _settle(harness, profile)
                done = len(sequential.jobs) + len(burst.jobs)
                result.cpu_per_job = (bot.stats().cpu - before) / done
                result.sequential, result.burst = sequential, burst
            idle = bot.stats()
            result.idle_rss = idle.rss
            started = time.perf_counter()
            await harness.run_burst(jobs, BIG_IMAGES, timeout=300.0)
            result.memory_seconds = time.perf_counter() - started
            result.memory_jobs = jobs
            await harness.idle(timeout=120.0)
            stats = bot.stats()
            result.peak_rss = stats.peak_rss
            result.cpu_per_big_image = (stats.cpu - idle.cpu) / (jobs * BIG_IMAGES["samples"])
        if result.burst is not None:  # the samples are written when the bot exits
            for start, end in windows:
                result.burst.loop_lag += bot.loop_lag(start, end)
                result.gc_pauses += bot.gc_pauses(start, end)
    return result


# -- ledger -------------------------------------------------------------------------------


async def ledger(profile: Profile) -> LedgerRun:
    """Reserve+commit pairs per second on a fresh SQLite file: one at a time, and
    :data:`LEDGER_CONCURRENCY` at a time (many jobs reserve and settle at once in the bot)."""
    rates: dict[int, list[float]] = {1: [], LEDGER_CONCURRENCY: []}
    # Interleaved runs, each on a fresh file; the median is reported, since on a shared
    # 2-core VM one run of ~1.5 s can land on a slow moment (runs vary by 10-15 %).
    for _ in range(profile.ledger_runs):
        for concurrency, measured in rates.items():
            with tempfile.TemporaryDirectory(prefix="imagine-bench-") as folder:
                url = f"sqlite:///{folder}/ledger.db"  # an absolute folder: sqlite:////tmp/…
                measured.append(
                    await ledger_bench.measure(url, profile.ledger_pairs, concurrency=concurrency)
                )
    return LedgerRun(profile.ledger_pairs, tuple(rates[1]), tuple(rates[LEDGER_CONCURRENCY]))


# -- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def stopwatch(label: str, *, verbose: bool) -> Iterator[None]:
    """Print how long a benchmark took (progress lines on stdout)."""
    started = time.perf_counter()
    if verbose:
        print(f"  {label} …", end="", flush=True)
    try:
        yield
    finally:
        if verbose:
            print(f" {time.perf_counter() - started:.1f} s", flush=True)
