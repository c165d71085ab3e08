"""Ledger throughput on PostgreSQL: reserve + commit pairs per second, 1 and 2 processes.

Run with ``python -m bench.ledger_pg``. It starts a throwaway PostgreSQL server
in a temporary folder (the tests' :func:`tests.pg.start_local_server`, so the
PostgreSQL binaries must be installed), or uses ``--url`` (a server where the
user may create databases). Each pair is what the bot does per image job:
reserve (one transaction: guild lock, cap check + conditional debit + job +
RESERVE entry) and commit (a read of the job, then one transaction: guild lock,
job settled + COMMIT entry).

Three figures: one process; two processes spending from one guild (they queue
on that guild's row lock); two processes on two guilds (independent rows). The
throwaway server runs without fsync unless ``--durable``: figures without it
measure the bot and the protocol, not the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["main", "measure", "work"]

if __package__ in {None, ""}:  # `python bench/ledger_pg.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.credits import CreditLedger, NewJob
from bot.storage import open_storage
from tests.pg import PgServer, find_binaries, start_local_server

GUILD_ID = 100_000_000_000_000_001
CHANNEL_ID = 100_000_000_000_000_002
USER_ID = 100_000_000_000_000_003
ROOT = Path(__file__).resolve().parent.parent
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


async def work(
    database_url: str, pairs: int, guild: int, start_at: float | None
) -> dict[str, float]:
    """Reserve and commit ``pairs`` one-image jobs in ``guild``; returns start and end times."""
    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=0)
        await ledger.grant(guild, pairs, actor_id=None, note="bench")
        job = NewJob(guild, CHANNEL_ID, USER_ID, {"prompt": "bench"}, 1, 1)
        if start_at is not None:  # line the processes up
            await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        for _ in range(pairs):
            record = await ledger.reserve(job)
            await ledger.commit(record)
        ended = time.time()
    finally:
        await storage.close()
    return {"started": started, "ended": ended}


async def _process(database_url: str, pairs: int, guild: int, start_at: float) -> dict[str, float]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ledger_pg",
        "--worker",
        database_url,
        "--pairs",
        str(pairs),
        "--guild",
        str(guild),
        "--start-at",
        repr(start_at),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"a worker process failed with exit code {child.returncode}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def _check(database_url: str, guilds: list[int]) -> None:
    storage = await open_storage(database_url)
    try:
        ledger = CreditLedger(storage, default_credits=0)
        balances = [await ledger.balance(guild) for guild in guilds]
        if not await ledger.verify() or any(balances):
            raise RuntimeError("the ledger does not balance after the benchmark")
    finally:
        await storage.close()


async def measure(server: PgServer, pairs: int, processes: int, *, same_guild: bool) -> float:
    """Pairs per second over all ``processes`` (1 runs in this process)."""
    with server.database() as url:
        storage = await open_storage(url)  # migrate before the clock starts
        await storage.close()
        guilds = [GUILD_ID if same_guild else GUILD_ID + index for index in range(processes)]
        if processes == 1:
            spans = [await work(url, pairs, guilds[0], None)]
        else:
            start_at = time.time() + 1.5  # the children's start-up is not measured
            spans = list(
                await asyncio.gather(*(_process(url, pairs, guild, start_at) for guild in guilds))
            )
        await _check(url, sorted(set(guilds)))
    elapsed = max(span["ended"] for span in spans) - min(span["started"] for span in spans)
    return pairs * processes / elapsed


@contextlib.contextmanager
def _server(url: str | None, *, durable: bool) -> Iterator[PgServer]:
    if url:
        server = PgServer(admin_url=url, description="the server at --url")
    else:
        binaries = find_binaries()
        if binaries is None:
            raise SystemExit("PostgreSQL binaries not found: apt-get install postgresql, or --url")
        server = start_local_server(binaries, settings=DURABLE if durable else None)
    try:
        yield server
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ledger reserve+commit throughput on PostgreSQL.")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs per process")
    parser.add_argument("--url", help="an existing server (the user needs CREATEDB)")
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous_commit on")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--guild", type=int, default=GUILD_ID, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if args.worker:
        print(json.dumps(asyncio.run(work(args.worker, args.pairs, args.guild, args.start_at))))
        return 0
    with _server(args.url, durable=args.durable) as server:
        where = server.description + ("" if args.url or args.durable else ", fsync off")
        print(f"reserve+commit per second on {where} ({args.pairs} pairs per process):")
        for label, processes, same in (
            ("1 process", 1, True),
            ("2 processes, one guild", 2, True),
            ("2 processes, two guilds", 2, False),
        ):
            rate = asyncio.run(measure(server, args.pairs, processes, same_guild=same))
            print(f"  {label:<24} {rate:>8,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
