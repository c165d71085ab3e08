"""Ledger throughput: reserve + commit pairs per second on a temporary SQLite file.

Run with ``python -m bench.ledger`` (or ``python bench/ledger.py``; ``--runs 3``
repeats it), on the event loop the bot runs on (``--loop``, as ``EVENT_LOOP``).
Each pair goes through :class:`bot.credits.CreditLedger` exactly as the bot does:
reserve (one transaction: guild lock, checks, conditional debit, job, RESERVE entry)
and commit of the record reserve returned (one transaction: job settled + COMMIT
entry; no read first, since the caller holds the record), both through SQLAlchemy
and aiosqlite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import typing
from pathlib import Path

if __package__ in {None, ""}:  # `python bench/ledger.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import event_loop
from bot.credits import CreditLedger, NewJob
from bot.storage import open_storage

GUILD_ID = 100_000_000_000_000_001
CHANNEL_ID = 100_000_000_000_000_002
USER_ID = 100_000_000_000_000_003


async def measure(database_url: str, pairs: int = 2000, *, concurrency: int = 1) -> float:
    """Reserve and commit ``pairs`` one-image jobs; returns pairs per second.

    ``concurrency`` > 1 runs that many coroutines at once on the one
    connection, as the bot's workers do.
    """
    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=0)
        await ledger.grant(GUILD_ID, pairs, actor_id=None, note="bench")
        job = NewJob(GUILD_ID, CHANNEL_ID, USER_ID, {"prompt": "bench"}, 1, 1)
        remaining = pairs

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                record = await ledger.reserve(job)
                await ledger.commit(record)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        if not await ledger.verify() or await ledger.balance(GUILD_ID) != 0:
            raise RuntimeError("the ledger does not balance after the benchmark")
    finally:
        await storage.close()
    return pairs / elapsed


def benchmark(
    pairs: int = 2000, *, concurrency: int = 1, loop: event_loop.EventLoopChoice = "auto"
) -> float:
    """:func:`measure` on a fresh database file in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder).resolve() / 'bench.db'}"
        return event_loop.run(measure(url, pairs, concurrency=concurrency), loop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ledger reserve+commit throughput.")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat on a fresh file each time (default 1)"
    )
    parser.add_argument(
        "--loop",
        choices=typing.get_args(event_loop.EventLoopChoice),
        default="auto",
        help="the event loop (EVENT_LOOP): auto, as the bot",
    )
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.concurrency < 1 or args.runs < 1:
        parser.error("--pairs, --concurrency and --runs must be at least 1")
    rates: list[float] = []
    for _ in range(args.runs):
        rate = benchmark(args.pairs, concurrency=args.concurrency, loop=args.loop)
        rates.append(rate)
        print(
            f"{rate:,.0f} reserve+commit per second "
            f"({args.pairs} pairs, {args.concurrency} concurrent, temp file DB, "
            f"{event_loop.resolve(args.loop)})",
            flush=True,
        )
    if len(rates) > 1:
        print(
            f"median {statistics.median(rates):,.0f}, min {min(rates):,.0f}, "
            f"max {max(rates):,.0f} over {len(rates)} runs"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
