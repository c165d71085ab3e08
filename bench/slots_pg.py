"""API slots shared by processes on PostgreSQL: each process's share of the calls, and how
busy the slots are kept.

Run with ``python -m bench.slots_pg``. It starts a throwaway PostgreSQL server (the tests'
:func:`tests.pg.start_local_server`), or uses ``--url`` (an empty database). Each process is a
Storage of its own (its own connections, as a bot process has) in this one event loop, running as
many workers as there are slots, as a bot runs ``MAX_CONCURRENT_JOBS`` images: take a slot
(``SharedSlots``), hold it for the call, give it back, and ask again at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SETUPS", "SlotRun", "main", "measure"]

if __package__ in {None, ""}:  # `python bench/slots_pg.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.database import throwaway_database
from bot.coordination import SharedSlots
from bot.storage import Storage, open_storage

#: (processes, slots) of each run.
SETUPS = ((2, 1), (2, 4), (3, 2))


@dataclass(frozen=True)
class SlotRun:
    processes: int
    slots: int
    call: float
    calls: list[int]  # per process
    busy: float  # the share of the run's slot-seconds spent in calls

    def row(self) -> str:
        shares = " / ".join(map(str, self.calls))
        return f"| {self.processes} | {self.slots} | {self.call:g} s | {shares} | {self.busy:.1%} |"


async def measure(url: str, processes: int, slots: int, call: float, seconds: float) -> SlotRun:
    """``processes`` processes sharing ``slots`` slots for ``seconds``, calls of ``call`` s."""
    stores: list[Storage] = []
    try:
        for _ in range(processes):
            stores.append(await open_storage(url))
        calls = [0] * processes
        in_calls = 0.0
        stop = time.monotonic() + seconds

        async def worker(number: int, pool: SharedSlots) -> None:
            nonlocal in_calls
            while time.monotonic() < stop:
                slot = await pool.acquire()
                began = time.monotonic()
                await asyncio.sleep(call)
                in_calls += time.monotonic() - began
                await pool.release(slot)
                calls[number] += 1

        started = time.monotonic()
        pools = [SharedSlots(store, f"p{n}", slots) for n, store in enumerate(stores)]
        await asyncio.gather(
            *(worker(n, pool) for n, pool in enumerate(pools) for _ in range(slots))
        )
        elapsed = time.monotonic() - started
    finally:
        for store in stores:
            await store.close()
    return SlotRun(processes, slots, call, calls, in_calls / (elapsed * slots))


async def _run_all(url: str, call: float, seconds: float) -> list[SlotRun]:
    runs = []
    for processes, slots in SETUPS:
        runs.append(await measure(url, processes, slots, call, seconds))
        print(runs[-1].row(), flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slots_pg", description=__doc__)
    parser.add_argument(
        "--url", default="postgresql", help="an empty database (default: a new server)"
    )
    parser.add_argument(
        "--call", type=float, default=0.5, help="seconds each API call holds its slot"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each run")
    args = parser.parse_args(argv)
    print("| processes | slots | call | calls per process | slots busy |")
    print("|---|---|---|---|---|")
    with throwaway_database(args.url, Path(".")) as url:
        asyncio.run(_run_all(url, args.call, args.seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
