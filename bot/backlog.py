"""The jobs waiting to start: their fair order, places, pace and status lines.

:class:`Backlog` hands out images in :class:`~bot.scheduler.FairScheduler` order when
:class:`~bot.pacing.Pace` allows, answers places in O(log n), refuses work past the
waiting cap, and feeds the :class:`~bot.status_board.StatusBoard`, so one job costs the
same however many wait.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

from sortedcontainers import SortedDict

from bot.i18n import _NP
from bot.job_model import Job, JobProgress, QueueBusy
from bot.pacing import Pace
from bot.scheduler import FairScheduler
from bot.status_board import StatusBoard, describe_eta

__all__ = ["Backlog"]

log = logging.getLogger(__name__)

#: Lines the status board looks at per tick: new ones, running jobs, the front, a sweep of the rest.
BOARD_NEW, BOARD_RUNNING, BOARD_FRONT, BOARD_SWEEP = 32, 64, 32, 256


class Backlog:
    """Waiting images in fair order, handed out at the API's pace."""

    def __init__(
        self,
        wake: Callable[[], None],
        *,
        max_concurrent: int,
        rpm: int = 0,
        max_waiting: int | None = None,
    ) -> None:
        """``wake``: called (from a timer) when an image held back by the pace may start."""
        self._wake = wake
        # uvloop answers call_at with a plain Handle (no .when()) when under 1 ms away.
        self._timer: asyncio.Handle | None = None
        self._timer_due = 0.0
        self._max_waiting = max_waiting
        self.pace = Pace(max_concurrent=max_concurrent, rpm=rpm)
        self._scheduler: FairScheduler[tuple[Job, int]] = FairScheduler()
        self._waiting: SortedDict[int, Job] = SortedDict()  # jobs not started, by arrival
        self._started: dict[int, Job] = {}  # started, not settled yet
        self._unshown: deque[Job] = deque()  # by arrival, until their line was first shown
        self._sweep_from = 0  # where the status board's sweep through the waiting jobs resumes
        self.status_board: StatusBoard[Job] = StatusBoard(self)

    # -- state ---------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Jobs waiting for their first image to start."""
        return len(self._waiting)

    @property
    def images(self) -> int:
        """Images not started yet, across every job."""
        return len(self._scheduler)

    @property
    def max_waiting_images(self) -> int:
        """The cap on waiting images: the setting, or what can be made in time."""
        return self._max_waiting or self.pace.automatic_cap()

    def position(self, job: Job) -> int | None:
        if job.seq not in self._waiting:
            return None
        return self._waiting.bisect_left(job.seq) + 1

    def check_room(self, images: int) -> None:
        """Raise :class:`QueueBusy` (nothing spent) if ``images`` more would pass the cap."""
        waiting = len(self._scheduler)
        if waiting and waiting + images > self.max_waiting_images:
            raise QueueBusy(
                _NP(
                    "🚦 I'm very busy right now: {count} image waiting, {eta} to get through "
                    "them. Nothing was charged; please try again later.",
                    "🚦 I'm very busy right now: {count} images waiting, {eta} to get through "
                    "them. Nothing was charged; please try again later.",
                    waiting,
                    eta=describe_eta(self.pace.eta(waiting)),
                )
            )

    # -- in and out ----------------------------------------------------------------

    def add(self, job: Job) -> None:
        for index in range(job.total):
            self._scheduler.push(job.record.guild_id, job.record.user_id, (job, index))
        self._waiting[job.seq] = job
        self._unshown.append(job)
        self.status_board.start()

    def next_image(self) -> tuple[Job, int] | None:
        """The next image to start now, or None (nothing waits, or the pace holds it back)."""
        if not self._scheduler:
            return None
        delay = self.pace.delay()
        if delay > 0:
            self._wake_in(delay)
            return None
        picked = self._scheduler.pop()
        if picked is None:  # pragma: no cover - the scheduler was not empty
            return None
        job, _ = picked
        self.pace.started()
        self.status_board.earn()
        if not job.started:
            job.started = True
            job.started_at = time.monotonic()
            del self._waiting[job.seq]
            self._started[job.id] = job
        return picked

    def call_ended(self, seconds: float) -> None:
        """An image call succeeded after ``seconds``: the latency, and the rate served."""
        self.pace.observe(seconds)
        self.pace.served(waiting=bool(self._scheduler))

    def put_back(self, job: Job, index: int, retry_after: float | None) -> float:
        """The API said 429: every start waits, this image first for its member; the wait."""
        self._scheduler.push_front(job.record.guild_id, job.record.user_id, (job, index))
        return self.pace.hold(retry_after)

    def forget(self, job: Job) -> None:
        self._waiting.pop(job.seq, None)
        self._started.pop(job.id, None)

    async def close(self) -> None:
        """Drop every waiting image and stop the timer and the status board."""
        self._scheduler.clear()
        self._unshown.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.status_board.stop()

    def _wake_in(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if self._timer is not None:
            if self._timer_due <= when:
                return  # already due as early
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_due = when

    def _fire(self) -> None:
        self._timer = None
        self._wake()

    # -- the status board's source (bot.status_board.BoardSource) ------------------

    def board_lines(self) -> list[Job]:
        """Lines never shown, running jobs, the front of the queue, then a sweep: bounded."""
        while self._unshown and (self._unshown[0].shown is not None or self._unshown[0].settling):
            self._unshown.popleft()
        lines = list(itertools.islice(self._unshown, BOARD_NEW))
        lines += itertools.islice(self._started.values(), BOARD_RUNNING)
        front = self._waiting.values()[:BOARD_FRONT]
        lines += front
        start = max(self._sweep_from, front[-1].seq + 1) if front else self._sweep_from
        swept = list(itertools.islice(self._waiting.irange(minimum=start), BOARD_SWEEP))
        lines += (self._waiting[seq] for seq in swept)
        # Resume after the last one next time; from the start once the end was reached.
        self._sweep_from = swept[-1] + 1 if len(swept) == BOARD_SWEEP else 0
        return lines

    def board_progress(self, job: Job) -> JobProgress | None:
        if job.settling or job.completed == job.total or not job.delivery.shows_progress:
            return None
        if job.id not in self._started and job.seq not in self._waiting:
            return None
        if job.started:
            elapsed = time.monotonic() - job.started_at
            return JobProgress("generating", None, job.completed, job.total, elapsed=elapsed)
        place = self._waiting.bisect_left(job.seq) + 1
        # Images ahead, from the average job waiting: O(1), where an exact sum would scan.
        ahead = (place - 1) * len(self._scheduler) / len(self._waiting)
        eta = self.pace.eta(round(ahead) + job.total)
        return JobProgress("queued", place, 0, job.total, eta=eta)

    async def board_show(self, job: Job, progress: JobProgress) -> None:
        try:
            await job.delivery.progress(job, progress)
        except Exception:
            # A status edit that fails must never fail the job itself.
            log.warning("status update failed", exc_info=True, extra=job.context)
