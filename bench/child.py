"""``python -m bench.child``: the bot's own entry point (``bot.__main__``), unchanged,
plus two observers in the bot's process: an event-loop lag sampler running in the
bot's event loop, and a garbage-collector callback timing every collection.

On exit both are written to ``$BENCH_LAG_FILE`` (JSON) for :mod:`bench.process`.
The sampler wakes 200 times a second and keeps 16 bytes per wake-up: negligible
next to the bot.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import bot.__main__ as entry
from bench.looplag import LoopLagSampler


class GcTimer:
    """Records ``(started, generation, seconds)`` for every garbage collection."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            pause = time.monotonic() - self._started
            self.pauses.append((self._started, int(info["generation"]), pause))


def main() -> int:
    path = os.environ.get("BENCH_LAG_FILE")
    serve = entry.serve
    collections = GcTimer()
    gc.callbacks.append(collections)

    async def observed_serve(settings: Any) -> int:
        sampler = LoopLagSampler()
        with sampler:
            try:
                return await serve(settings)
            finally:
                if path:
                    document = {
                        "times": list(sampler.times),
                        "lags": list(sampler.samples),
                        "gc": collections.pauses,
                    }
                    Path(path).write_text(json.dumps(document))  # noqa: ASYNC240 - at exit

    entry.serve = observed_serve
    return entry.main([])


if __name__ == "__main__":
    sys.exit(main())
