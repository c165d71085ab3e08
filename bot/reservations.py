"""A job's first ledger writes: its reservation, and its start.

A reservation that started writing always completes; if the caller was cancelled
meanwhile, nobody will run the job, so the finished reservation is refunded at
once (and, should that refund fail, by ``recover()`` at the next start). The
queued -> running write runs alongside the job's first API call, off its path.
"""

from __future__ import annotations

import asyncio
import logging

from bot.credits import CommitResult, CreditLedger, JobRecord, NewJob

__all__ = ["Reservations"]

log = logging.getLogger(__name__)


class Reservations:
    """Reserves through the ledger; undoes what a cancelled caller can no longer use."""

    def __init__(self, ledger: CreditLedger) -> None:
        self._ledger = ledger
        self._orphans: set[asyncio.Future[CommitResult]] = set()

    async def reserve(self, job: NewJob) -> JobRecord:
        reservation = asyncio.ensure_future(self._ledger.reserve(job))
        try:
            # Shielded: a write that started always completes, so a caller that is
            # cancelled mid-way must still learn of (and undo) its reservation.
            return await asyncio.shield(reservation)
        except asyncio.CancelledError:
            reservation.add_done_callback(self._undo)
            raise

    def mark_running(self, record: JobRecord) -> asyncio.Future[JobRecord]:
        """Write queued -> running in the background; await the verdict before keeping images."""
        marking = asyncio.ensure_future(self._ledger.mark_running(record.id))
        # When the API call fails first nobody awaits the verdict: retrieve it here so
        # that a refused mark (the job already settled) is not reported as lost.
        marking.add_done_callback(lambda done: done.cancelled() or done.exception())
        return marking

    def _undo(self, reservation: asyncio.Future[JobRecord]) -> None:
        if reservation.cancelled() or reservation.exception() is not None:
            return
        record = reservation.result()
        refund = asyncio.ensure_future(self._ledger.refund(record, "the request was cancelled"))
        self._orphans.add(refund)
        refund.add_done_callback(self._orphan_done)

    def _orphan_done(self, refund: asyncio.Future[CommitResult]) -> None:
        self._orphans.discard(refund)
        if not refund.cancelled() and (error := refund.exception()) is not None:
            # recover() at the next start refunds it; say so rather than lose it silently.
            log.error("refund of a cancelled reservation failed", exc_info=error)
