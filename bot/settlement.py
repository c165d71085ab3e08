"""Settling a job once its images are made: post them, commit what was posted, refund the rest.

The ledger writes are retried on :class:`~bot.storage.StorageError` (a locked SQLite file, a
dropped PostgreSQL connection): settling is idempotent, so a retry after an unclear failure is
safe. A post whose outcome is unclear (the connection dropped on the result's first message)
is decided from the channel, as after a crash, never refunded blindly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from bot.credit_errors import JobNotActive
from bot.credits import CommitResult, CreditLedger, JobRecord, JobStatus
from bot.i18n import _N
from bot.job_model import Delivered, Job, UnclearDelivery, failure_message
from bot.metrics import Metrics
from bot.storage import StorageError

__all__ = ["SETTLE_DELAYS", "SettleFromChannel", "Settlement"]

log = logging.getLogger("bot.jobs")

#: Seconds between attempts at a settling write that failed on the database (7 tries, ~30 s).
SETTLE_DELAYS: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

#: Commits or refunds a job marked delivering from what its channel shows (bot.recovery);
#: None when the channel cannot be read now (the job is left for the next start).
SettleFromChannel = Callable[[JobRecord], Awaitable[CommitResult | None]]

NOT_POSTED: Final = _N("The images were made but could not be posted in this channel.")


class Settlement:
    """Delivers a finished job and settles its credits, exactly once."""

    def __init__(
        self,
        ledger: CreditLedger,
        metrics: Metrics,
        *,
        settle_from_channel: SettleFromChannel | None = None,
        delays: Sequence[float] = SETTLE_DELAYS,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._from_channel = settle_from_channel
        self._delays = tuple(delays)

    async def settle(self, job: Job, on_posted: Callable[[Job], None]) -> None:
        """Deliver what worked, then commit it and refund the rest; ``on_posted`` is called
        once the member has their result, before the commit is written."""
        images = job.succeeded_images()
        posted = Delivered(0)
        if images:
            try:
                # Recorded before the post: after a crash the channel decides.
                marked = await self._ledger.mark_delivering(job.record)
            except JobNotActive:
                # Settled elsewhere (another process's recovery refunded it).
                log.warning("job settled elsewhere: images not posted", extra=job.context)
                return
            except Exception:
                log.exception("could not record the delivery", extra=job.context)
                await self._refund(job, NOT_POSTED, "delivery_failed")
                return
            try:
                posted = await job.delivery.deliver(job, images, job.balance_after(marked.balance))
            except UnclearDelivery:
                log.warning(
                    "the result may or may not be in the channel: the channel decides",
                    exc_info=True,
                    extra=job.context,
                )
                await self._decide_from_channel(job, marked.job)
                return
            except Exception:
                log.exception("delivery failed", extra=job.context)
                await self._refund(job, NOT_POSTED, "delivery_failed")
                return
        if not posted.images:
            await self._refund(job, failure_message(job.errors, job.total), "failed")
            return
        # The member has their result: it no longer counts as in progress.
        on_posted(job)
        result = await self._write(
            job,
            "commit",
            lambda: self._ledger.commit(job.record, posted.images, message_id=posted.message_id),
        )
        if result is None:
            await self._tell_failed(
                job,
                _N(
                    "Your images were posted, but a problem on our side kept their credits "
                    "from being settled. They will be settled when the bot restarts."
                ),
                0,
            )
            return
        await self._finished(job, result, posted.images)

    async def _decide_from_channel(self, job: Job, record: JobRecord) -> None:
        result: CommitResult | None = None
        decide = self._from_channel
        if decide is not None:
            try:
                result = await self._write(job, "settle from the channel", lambda: decide(record))
            except Exception:  # reading the channel failed too: the next start decides
                log.exception("could not read the channel", extra=job.context)
        if result is None:
            log.error(
                "delivery left undecided: the next start's recovery settles it from the channel",
                extra=job.context,
            )
            await self._tell_failed(
                job,
                _N(
                    "Your images may not have reached this channel. If they are not here, "
                    "your credits will be returned when the bot restarts."
                ),
                0,
            )
        elif result.job.status is JobStatus.REFUNDED:
            self._metrics.job_settled(result, "delivery_failed")
            await self._tell_failed(job, NOT_POSTED, result.refunded)
        else:
            await self._finished(job, result, result.job.images_delivered)

    async def _finished(self, job: Job, result: CommitResult, images: int) -> None:
        self._metrics.job_settled(result, "succeeded" if images == job.total else "partial")
        self._metrics.images.inc(images)
        try:
            await job.delivery.finished(job, result)
        except Exception:
            log.warning("post-delivery update failed", exc_info=True, extra=job.context)

    async def _refund(self, job: Job, message: str, outcome: str) -> None:
        result = await self._write(job, "refund", lambda: self._ledger.refund(job.record, message))
        if result is None:
            message = _N(
                "{reason} A problem on our side kept your credits from being returned now; "
                "they will be returned when the bot restarts.",
                reason=message,
            )
            await self._tell_failed(job, message, 0)
            return
        self._metrics.job_settled(result, outcome)
        await self._tell_failed(job, message, result.refunded)

    async def _write(
        self, job: Job, what: str, write: Callable[[], Awaitable[CommitResult | None]]
    ) -> CommitResult | None:
        """``write`` until the database takes it; None once every attempt failed (the job
        then stays reserved until the next start's recovery)."""
        failed = 0
        while True:
            try:
                result = await write()
            except StorageError as error:
                if failed == len(self._delays):
                    log.error(
                        "%s failed %d times (%s): the job stays reserved until the next "
                        "start's recovery",
                        what,
                        failed + 1,
                        error,
                        extra=job.context,
                    )
                    return None
                delay = self._delays[failed]
                failed += 1
                log.warning(
                    "%s failed (%s); attempt %d again in %.1fs",
                    what,
                    error,
                    failed + 1,
                    delay,
                    extra=job.context,
                )
                await asyncio.sleep(delay)
                continue
            if failed and result is not None:
                return _as_settled(result)
            return result

    @staticmethod
    async def _tell_failed(job: Job, message: str, refunded: int) -> None:
        try:
            await job.delivery.failed(job, message, refunded)
        except Exception:
            log.warning(
                "could not tell the requester about a failure", exc_info=True, extra=job.context
            )


def _as_settled(result: CommitResult) -> CommitResult:
    """After a write that failed unclearly, its retry finds the job already settled (nothing
    moved this time): what the member is told comes from the job's record instead."""
    if result.committed or result.refunded:
        return result
    job = result.job
    if job.status is JobStatus.SUCCEEDED:
        committed = job.images_delivered * job.units_per_image
        return CommitResult(job, committed, job.cost - committed, result.balance)
    if job.status is JobStatus.REFUNDED:
        return CommitResult(job, 0, job.cost, result.balance)
    return result
