"""The job queue: each job's life from reservation to commit or refund.

Image calls (not whole jobs) run under a global concurrency limit, handed out fairly
by :class:`bot.backlog.Backlog`. Money moves only here: reserve on entry, then commit
what was delivered and refund the rest, exactly once (:mod:`bot.settlement`). The Discord
side is the job's :class:`JobDelivery`, which gets everything it shows (the final balance
included).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Coroutine, Sequence

from bot.backlog import Backlog
from bot.config import Settings
from bot.coordination import HeldElsewhere, LocalSlots, SlotPool
from bot.credit_errors import JobNotActive
from bot.credits import CreditLedger, NewJob
from bot.image_store import ImageStore
from bot.job_model import (
    INTERRUPTED,
    Delivered,
    ImageFailure,
    ImageGenerator,
    Job,
    JobDelivery,
    JobProgress,
    QueueBusy,
    QueueFull,
    ShuttingDown,
    internal_failure,
)
from bot.member_slots import MemberSlots
from bot.metrics import Metrics
from bot.reservations import Reservations
from bot.segmind import SegmindError, SegmindRateLimited, Txt2ImgRequest
from bot.settlement import SETTLE_DELAYS, SettleFromChannel, Settlement

__all__ = [
    "Delivered",
    "ImageGenerator",
    "Job",
    "JobDelivery",
    "JobProgress",
    "JobQueue",
    "QueueBusy",
    "QueueFull",
    "ShuttingDown",
]

#: What a queue without an explicit store may keep in memory: IMAGE_MEMORY_BUDGET_MB's default.
DEFAULT_IMAGE_MEMORY_BUDGET = Settings.model_fields["image_memory_budget_mb"].default * 1024 * 1024

log = logging.getLogger(__name__)


class JobQueue:
    """Runs the backlog's image calls under a global concurrency limit; settles each job."""

    def __init__(
        self,
        generator: ImageGenerator,
        ledger: CreditLedger,
        *,
        max_concurrent: int,
        max_per_user: int,
        metrics: Metrics | None = None,
        owner: str | None = None,
        slots: SlotPool | None = None,
        image_store: ImageStore | None = None,
        rpm: int = 0,
        max_waiting_images: int | None = None,
        settle_from_channel: SettleFromChannel | None = None,
        settle_delays: Sequence[float] = SETTLE_DELAYS,
    ) -> None:
        """``settle_from_channel``: decides a job whose result's post got no answer from
        its channel (the app wires it to :mod:`bot.recovery`); without it such a job is
        left for the next start. ``settle_delays``: between attempts at a ledger write."""
        self._generator = generator
        self._own_store = image_store is None
        self._store = image_store or ImageStore(memory_budget=DEFAULT_IMAGE_MEMORY_BUDGET)
        self._owner = owner
        self._slots: SlotPool = slots or LocalSlots()
        self._ledger = ledger
        self._reservations = Reservations(ledger)
        self._max_concurrent = max_concurrent
        self._metrics = metrics or Metrics()
        self._settlement = Settlement(
            ledger, self._metrics, settle_from_channel=settle_from_channel, delays=settle_delays
        )
        #: The waiting jobs: their order, places, pace, cap and status lines.
        self.backlog = Backlog(
            self._dispatch, max_concurrent=max_concurrent, rpm=rpm, max_waiting=max_waiting_images
        )
        self._active: dict[int, Job] = {}
        self._members = MemberSlots(max_per_user)
        self._in_flight = 0
        # An image waits for a shared API slot: the next stays in line (its place shown) till then.
        self._slot_wanted = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._image_tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._closing = False

    # -- public state ------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """API calls running now."""
        return self._in_flight

    @property
    def depth(self) -> int:
        """Jobs waiting for their first image to start."""
        return self.backlog.depth

    @property
    def active_jobs(self) -> int:
        return len(self._active)

    @property
    def closing(self) -> bool:
        return self._closing

    def user_load(self, guild_id: int, user_id: int) -> int:
        return self._members.load((guild_id, user_id))

    # -- entry -------------------------------------------------------------

    async def enqueue(
        self,
        *,
        guild_id: int,
        channel_id: int,
        user_id: int,
        request: Txt2ImgRequest,
        delivery: JobDelivery,
        parent_job_id: int | None = None,
    ) -> Job:
        """Check the member's queue cap, reserve the credits and queue the job.

        Raises :class:`QueueFull`, :class:`QueueBusy`, :class:`ShuttingDown` or a
        ledger error (not enough credits, daily cap) before anything is spent.
        """
        if self._closing:
            raise ShuttingDown()
        key = (guild_id, user_id)
        self._members.take(key)
        request = request.with_random_seed()
        try:
            self.backlog.check_room(request.samples)
            record = await self._reservations.reserve(
                NewJob(
                    guild_id=guild_id,
                    channel_id=channel_id,
                    user_id=user_id,
                    params=request.model_dump(mode="json"),
                    units_per_image=request.units_per_image,
                    images_total=request.samples,
                    parent_job_id=parent_job_id,
                    owner=self._owner,
                    # The in-memory count above covers this process; the database
                    # counts the member's jobs in every process.
                    max_active=self._members.limit,
                )
            )
        except BaseException:
            self._members.release(key)
            raise
        if self.closing:
            # Shutdown began while the reservation was being written.
            await self._ledger.refund(record, "the bot was shutting down")
            self._members.release(key)
            raise ShuttingDown()
        job = Job(record=record, request=request, delivery=delivery, seq=next(self._seq))
        job.images = [None] * request.samples
        self._active[job.id] = job
        self.backlog.add(job)
        self._metrics.queue_depth.set(self.backlog.depth)
        log.info(
            "job queued: %d image(s), cost %d, seed %s",
            request.samples,
            record.cost,
            request.seed,
            extra=job.context,
        )
        self._dispatch()
        return job

    # -- scheduling ----------------------------------------------------------

    def _dispatch(self) -> None:
        started = False
        while self._in_flight < self._max_concurrent and not self._slot_wanted:
            picked = self.backlog.next_image()
            if picked is None:
                break
            job, index = picked
            if job.marking is None:
                # Written while the first call runs, off its path; awaited before keeping images.
                job.marking = self._reservations.mark_running(job.record)
            started = True
            job.running += 1
            self._in_flight += 1
            self._slot_wanted = self._slots.shared
            task = self._spawn(self._run_image(job, index), job)
            self._image_tasks.add(task)
            task.add_done_callback(self._image_tasks.discard)
        if started:
            self._metrics.queue_depth.set(self.backlog.depth)
            self._metrics.jobs_in_flight.set(len(self._active) - self.backlog.depth)

    def _spawn(self, coro: Coroutine[object, object, None], job: Job) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, job))
        return task

    def _task_done(self, task: asyncio.Task[None], job: Job) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("job task crashed", exc_info=task.exception(), extra=job.context)

    # -- running -------------------------------------------------------------

    async def _run_image(self, job: Job, index: int) -> None:
        cancelled = requeued = freed = False
        try:
            slot = await self._take_slot(job)
            started = time.monotonic()
            try:
                result = await self._generator.generate(job.request.per_image()[index])
            finally:
                await self._slots.release(slot)
            self.backlog.call_ended(time.monotonic() - started)
            # The API call is over: the next image starts now, not once the database has
            # recorded this job's start (a write that may queue behind reservations).
            freed = True
            self._in_flight -= 1
            self._dispatch()
            # Stored first (memory budget, else a file): images waiting for the job's start
            # write, which may queue behind other writes, must not pile up in memory.
            held = await self._store.hold(result.images[0])
            del result  # the store has the image: no reference to its bytes is left here
            await job.keep(index, held)
        except SegmindRateLimited as error:
            # The API's own limit: the whole bot (every process) waits as it says, and this
            # image goes first again for its member. Waiting never fails a job.
            requeued = True
            wait = self.backlog.put_back(job, index, error.retry_after)
            log.warning("API rate limit: the queue waits %.1fs", wait, extra=job.context)
            if not isinstance(error, HeldElsewhere):
                await self._slots.hold(wait)
        except SegmindError as error:
            job.errors.append(ImageFailure(error.kind, error.user_message, error.retryable))
            log.warning("image %d failed: %s", index + 1, error, extra=job.context)
        except JobNotActive:
            # The ledger already closed this job: generating now would be free work.
            job.errors.append(INTERRUPTED)
        except asyncio.CancelledError:
            cancelled = True
            job.errors.append(INTERRUPTED)
            raise
        except Exception:  # an unexpected bug must still refund, not strand credits
            log.exception("image %d crashed", index + 1, extra=job.context)
            job.errors.append(internal_failure(job.id))
        finally:
            job.running -= 1
            if not requeued:
                job.completed += 1
            if not freed:
                self._in_flight -= 1
                if not cancelled:
                    self._dispatch()
        if job.completed == job.total:
            # Settling runs as its own task so that a shutdown cancelling API calls
            # never interrupts a delivery or a ledger write.
            self._spawn(self._settle(job), job)

    async def _take_slot(self, job: Job) -> int | None:
        """The image's API slot. While a shared one is awaited no other image leaves the
        line; once it is taken, the next comes forward to wait for its own."""
        try:
            if job.settling:  # settled elsewhere (e.g. a shutdown) while it waited
                raise JobNotActive(job.record)
            slot = await self._slots.acquire()
        finally:
            self._slot_wanted = False
        if self._slots.shared:
            self._dispatch()
        return slot

    async def _settle(self, job: Job) -> None:
        """Deliver what worked, then commit it and refund the rest: exactly once."""
        if job.settling:
            return
        job.settling = True
        try:
            await self._settlement.settle(job, self._uncount)
        finally:
            self._forget(job)

    def _forget(self, job: Job) -> None:
        for image in job.succeeded_images():
            image.release()
        if self._active.pop(job.id, None) is None:
            return
        self.backlog.forget(job)
        self._uncount(job)
        self._metrics.jobs_in_flight.set(len(self._active) - self.backlog.depth)
        job.settled.set()

    def _uncount(self, job: Job) -> None:
        if job.counted:
            job.counted = False
            self._members.release((job.record.guild_id, job.record.user_id))

    # -- shutdown ------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Refuse new jobs, let running ones finish for ``grace`` seconds, refund the rest."""
        self._closing = True
        active = list(self._active.values())
        if active:
            log.info("shutting down: waiting up to %.0fs for %d job(s)", grace, len(active))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(job.settled.wait() for job in active)), timeout=grace
                )
        # Whatever is left could not finish in time: stop its API calls, then deliver
        # what was made and refund the rest, like any partial failure.
        await self.backlog.close()
        leftovers = [job for job in self._active.values() if not job.settled.is_set()]
        images = list(self._image_tasks)
        for task in images:
            task.cancel()
        await asyncio.gather(*images, return_exceptions=True)
        for job in leftovers:
            if job.id not in self._active:
                continue
            job.errors.append(INTERRUPTED)
            await self._settle(job)
        # Settling tasks already under way (delivery, commit) are allowed to end.
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(grace, 5.0))
        if leftovers:
            log.warning("shutdown interrupted %d unfinished job(s)", len(leftovers))
        if self._own_store:
            self._store.close()

    async def wait_idle(self) -> None:
        """Wait until no job is active (tests and benchmarks use this)."""
        while self._active:
            await next(iter(self._active.values())).settled.wait()
