"""When the next image may start, and how long the images waiting will take.

:class:`Pace` (pure, synchronous) spaces starts evenly at ``SEGMIND_RPM``, holds every start
after a 429 until the time the API named, and estimates the rate the bot serves images at
(for the status lines' ETAs and the cap on waiting images) from the API's latency and from
the calls it actually completes while images wait.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["DISCORD_WINDOW", "Pace"]

#: Before the first call is measured: a Kandinsky 2.1 call takes seconds.
INITIAL_LATENCY = 5.0
#: Starts are spaced 1 % wider than 60/rpm: requests that reach the API up to ~0.6 s
#: late (a stall on either side) must still not make 601 in the API's minute.
RPM_MARGIN = 1.01
#: Weight of each new latency sample in the moving average.
SMOOTHING = 0.2
#: A 429 without Retry-After or a reset time: wait this long before trying again.
RATE_LIMIT_FALLBACK = 10.0
#: The served rate counts the calls completed while images waited, over this many seconds,
SERVED_WINDOW = 120.0
#: once there are this many of them.
SERVED_MIN_CALLS = 8
#: How long an interaction token lives: a status line can be edited this long.
DISCORD_WINDOW = 15 * 60.0
#: The automatic cap keeps the expected wait this far under Discord's window.
WAIT_TARGET = 12 * 60.0


class Pace:
    """Starts spaced for ``rpm`` (0: no limit), 429 holds, and the estimated rate."""

    def __init__(self, *, max_concurrent: int, rpm: int = 0) -> None:
        self._max_concurrent = max_concurrent
        self._interval = 60.0 / rpm * RPM_MARGIN if rpm > 0 else 0.0
        self._next_start = 0.0
        self._hold_until = 0.0
        self._latency: float | None = None
        self._served: deque[float] = deque()  # when calls ended while images waited

    # -- starts ----------------------------------------------------------------

    def delay(self, now: float | None = None) -> float:
        """Seconds until the next image may start (0 or less: now)."""
        now = time.monotonic() if now is None else now
        return max(self._next_start, self._hold_until) - now

    def started(self, now: float | None = None) -> None:
        """An image call started: the next one is due one interval later."""
        if not self._interval:
            return
        now = time.monotonic() if now is None else now
        # A timer that woke a little late keeps the schedule (no drift below the rate, and
        # no two starts closer than half an interval); after an idle spell it restarts.
        late = now - self._next_start
        base = self._next_start if late <= self._interval / 2 else now
        self._next_start = base + self._interval

    def hold(self, seconds: float | None, now: float | None = None) -> float:
        """The API said 429: no image starts for ``seconds``; returns the wait applied."""
        now = time.monotonic() if now is None else now
        wait = RATE_LIMIT_FALLBACK if seconds is None else max(seconds, 0.0)
        self._hold_until = max(self._hold_until, now + wait)
        return wait

    def held_for(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(self._hold_until - now, 0.0)

    # -- estimates ---------------------------------------------------------------

    def observe(self, seconds: float) -> None:
        """One API call took ``seconds``; the first sample replaces the initial guess."""
        if self._latency is None:
            self._latency = seconds
        else:
            self._latency += SMOOTHING * (seconds - self._latency)

    def served(self, *, waiting: bool, now: float | None = None) -> None:
        """An image call ended. While images wait, calls end as fast as the bot can serve
        (with other processes on the API, as fast as its share allows): that is its rate."""
        if not waiting:
            self._served.clear()  # capacity left idle: the next busy spell is measured afresh
            return
        now = time.monotonic() if now is None else now
        self._served.append(now)
        while self._served[0] < now - SERVED_WINDOW:
            self._served.popleft()

    @property
    def latency(self) -> float:
        return INITIAL_LATENCY if self._latency is None else self._latency

    @property
    def rate(self) -> float:
        """Images per second the bot can serve: slots over latency, or the RPM, or the rate
        it was measured serving at, whichever is lowest."""
        rate = self._max_concurrent / max(self.latency, 1e-3)
        if self._interval:
            rate = min(rate, 1.0 / self._interval)
        served = self._served
        if len(served) >= SERVED_MIN_CALLS and served[-1] > served[0]:
            rate = min(rate, (len(served) - 1) / (served[-1] - served[0]))
        return rate

    def eta(self, images: int, now: float | None = None) -> float:
        """Seconds until ``images`` more images (the last one included) are done."""
        return self.held_for(now) + images / self.rate + self.latency

    def automatic_cap(self) -> int:
        """Waiting images the bot can serve within :data:`WAIT_TARGET` at the current rate."""
        return max(self._max_concurrent, int(self.rate * WAIT_TARGET))
