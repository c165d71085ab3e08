"""``python -m bench``: every benchmark in one run, a table on stdout and in bench/README.md.

Options: ``--quick`` (smaller counts, under a minute; CI runs
``python -m bench --quick --no-write`` as a smoke test), ``--no-write`` (leave
bench/README.md alone), ``--latency SECONDS`` (the fake API's fixed latency,
default 0.2). Everything runs on 127.0.0.1; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
import typing
import warnings

from bench import backlog, scenarios
from bench.report import Report, Results, build_report, write_readme
from bench.scenarios import Profile, stopwatch
from bot import event_loop

__all__ = ["main", "run"]


async def run(profile: Profile, *, verbose: bool = True) -> Results:
    """Run every benchmark of ``profile`` once, in order, each with its own bot."""
    started = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    mid, top = profile.levels

    def step(label: str) -> contextlib.AbstractContextManager[None]:
        return stopwatch(label, verbose=verbose)

    with step(f"overhead: sequential, bursts of {mid} and {top}, 1 among {mid} and {top}"):
        overhead = await scenarios.overhead(profile)
    jobs, concurrency = profile.throughput_jobs, profile.throughput_concurrency
    with step(f"throughput, {jobs} jobs, MAX_CONCURRENT_JOBS={concurrency}"):
        queue = await scenarios.throughput(profile, jobs, concurrency)
    with step(f"throughput, {profile.naive_jobs} jobs, naive (MAX_CONCURRENT_JOBS=1)"):
        naive = await scenarios.throughput(profile, profile.naive_jobs, 1)
    with step(f"throughput, {jobs} jobs, MAX_CONCURRENT_JOBS={concurrency}, bot process"):
        own_queue = await scenarios.process_throughput(profile, jobs, concurrency)
    capacity_jobs, capacity_concurrency = profile.capacity_jobs, profile.capacity_concurrency
    with step(f"throughput, {capacity_jobs} jobs, MAX_CONCURRENT_JOBS={capacity_concurrency}"):
        capacity = await scenarios.throughput(profile, capacity_jobs, capacity_concurrency)
    with step("bot process: CPU, overhead, memory (flat images)"):
        flat = await scenarios.process_run(profile, photo_like=False)
    with step("bot process: memory (photo-sized images)"):
        photo = await scenarios.process_run(profile, photo_like=True)
    with step("ledger"):
        ledger = await scenarios.ledger(profile)
    size = backlog.SIZES[profile.name]
    with step(f"backlog: {size.jobs} jobs within {size.arrival:g} s, bot process"):
        deep = await backlog.backlog(profile)
    with step(f"paced backlog: SEGMIND_RPM={size.rpm} for {size.paced_seconds:g} s"):
        paced = await backlog.paced(profile)
    return Results(
        profile=profile,
        sequential=overhead.sequential,
        bursts=overhead.bursts,
        steady=overhead.steady,
        queue=queue,
        own_queue=own_queue,
        naive=naive,
        capacity=capacity,
        process_flat=flat,
        process_photo=photo,
        ledger=ledger,
        backlog=deep,
        paced=paced,
        seconds=time.perf_counter() - started,
        load=(load, os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="imagine-bot benchmarks (offline, 127.0.0.1 only)."
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts (under a minute)")
    parser.add_argument(
        "--no-write", action="store_true", help="print the table; leave bench/README.md alone"
    )
    parser.add_argument(
        "--latency", type=float, default=None, help="the fake API's latency in seconds (0.2)"
    )
    parser.add_argument(
        "--loop",
        choices=typing.get_args(event_loop.EventLoopChoice),
        default="auto",
        help="the event loop (EVENT_LOOP) of every bot and of the fakes: auto, as the bot",
    )
    args = parser.parse_args(argv)
    profile = scenarios.QUICK if args.quick else scenarios.FULL
    if args.loop == "uvloop" and not event_loop.uvloop_installed():
        parser.error("--loop uvloop: uvloop is not installed")
    profile = dataclasses.replace(profile, event_loop=args.loop)
    if args.latency is not None:
        if not 0 < args.latency <= 5:
            parser.error("--latency must be in (0, 5] seconds")
        profile = dataclasses.replace(profile, latency=args.latency)
    logging.basicConfig(level=logging.ERROR)
    warnings.simplefilter("ignore", DeprecationWarning)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    print(f"imagine-bot benchmarks ({profile.name}):", flush=True)
    results = event_loop.run(run(profile), profile.event_loop)
    report: Report = build_report(results, command=command)
    print()
    print(report.markdown())
    if not args.no_write:
        write_readme(report)
        print("written to bench/README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
