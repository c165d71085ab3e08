"""An event-loop lag sampler: a coroutine that sleeps ``interval`` seconds in a loop
and records how late each wake-up was, i.e. how long ready callbacks waited behind
others. Kept free of heavy imports: the bot's child process loads it too
(:mod:`bench.child`)."""

from __future__ import annotations

import asyncio
import time
from array import array

__all__ = ["LoopLagSampler"]


class LoopLagSampler:
    """Use as ``with LoopLagSampler() as lag:`` inside a running loop; ``lag.samples``
    are the oversleeps in seconds and ``lag.times`` when each was taken
    (``time.monotonic()``, the same clock in every process on Linux)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.samples = array("d")
        self.times = array("d")
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.samples.append(max(0.0, now - before - self.interval))
            self.times.append(now)

    def between(self, start: float, end: float) -> list[float]:
        """The samples taken from ``start`` to ``end`` (monotonic seconds)."""
        return [lag for at, lag in zip(self.times, self.samples, strict=True) if start <= at <= end]

    def __enter__(self) -> LoopLagSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
