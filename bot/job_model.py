"""What a job is, as the queue, the backlog and the imagine cog share it.

The data of one reserved job on its way through the queue, the Discord side it
reports to (:class:`JobDelivery`, implemented by the cog), and the refusals the
queue gives before anything is spent. The life cycle itself is in :mod:`bot.jobs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import aiohttp

from bot.credits import CommitResult, JobRecord
from bot.errors import UserFacingError
from bot.i18n import _N
from bot.image_store import HeldImage
from bot.logs import job_context
from bot.segmind import GenerationResult, Txt2ImgRequest
from bot.status_board import JobProgress

__all__ = [
    "INTERRUPTED",
    "TRANSPORT_ERRORS",
    "Delivered",
    "ImageFailure",
    "ImageGenerator",
    "Job",
    "JobDelivery",
    "JobProgress",
    "QueueBusy",
    "QueueFull",
    "ShuttingDown",
    "UnclearDelivery",
    "failure_message",
    "internal_failure",
]


class QueueFull(UserFacingError):
    """The member already has as many jobs queued or running as allowed."""


class QueueBusy(UserFacingError):
    """The bot already has as many images waiting as it can make in time."""


class ShuttingDown(UserFacingError):
    user_message = _N("The bot is restarting. Nothing was charged; please try again in a minute.")


class ImageGenerator(Protocol):
    """What the queue needs from the API client (``SegmindClient`` satisfies it)."""

    async def generate(self, request: Txt2ImgRequest) -> GenerationResult: ...


#: A request that got no answer (dropped connection, timeout): Discord may have acted on it.
#: discord.py does not wrap these in ``discord.HTTPException``.
TRANSPORT_ERRORS: Final = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class UnclearDelivery(Exception):
    """The result's first message got no answer: it may be in the channel or not.

    The queue then settles the job from what the channel shows, as after a crash.
    """


@dataclass(frozen=True)
class Delivered:
    """What a delivery posted: the images that reached the channel, and the result message."""

    images: int
    message_id: int | None = None


class JobDelivery(Protocol):
    """The Discord side of a job, implemented by the imagine cog; it never touches the ledger."""

    @property
    def shows_progress(self) -> bool:
        """Whether a progress edit can still reach the requester (the status board spends
        its edit budget only on those)."""

    async def progress(self, job: Job, progress: JobProgress) -> None:
        """Show the job's place in line or how many images are done."""

    async def deliver(self, job: Job, images: Sequence[HeldImage], balance: int) -> Delivered:
        """Post the images, showing ``balance`` (the server's once settled).

        Raise if none was posted: :class:`UnclearDelivery` when the first message may
        have been posted all the same. A failure after that returns what went out.
        """

    async def finished(self, job: Job, result: CommitResult) -> None:
        """Called after the ledger settled a delivered job (e.g. to show the balance)."""

    async def failed(self, job: Job, message: str, refunded: int) -> None:
        """Tell the requester the job failed, why, and what was refunded."""


@dataclass(eq=False)
class Job:
    """A reserved job moving through the queue."""

    record: JobRecord
    request: Txt2ImgRequest
    delivery: JobDelivery
    seq: int
    images: list[HeldImage | None] = field(default_factory=list)
    errors: list[ImageFailure] = field(default_factory=list)
    running: int = 0
    completed: int = 0
    started: bool = False
    started_at: float = 0.0
    # The queued -> running write, started with the first call (see _run_image).
    marking: asyncio.Future[JobRecord] | None = None
    settling: bool = False
    #: Whether the job still counts against its member's MAX_QUEUED_PER_USER.
    counted: bool = True
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    shown: Hashable | None = None  # what its status line shows (bot.status_board)

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def total(self) -> int:
        return self.request.samples

    @property
    def context(self) -> dict[str, int]:
        return job_context(
            guild_id=self.record.guild_id, user_id=self.record.user_id, job_id=self.record.id
        )

    def succeeded_images(self) -> list[HeldImage]:
        return [image for image in self.images if image is not None]

    def balance_after(self, balance: int) -> int:
        """The server's balance once settled, from ``balance`` now: the images not made
        are refunded."""
        return balance + (self.total - len(self.succeeded_images())) * self.record.units_per_image

    async def keep(self, index: int, image: HeldImage) -> None:
        """Count ``image`` as image ``index`` once the job's start is written; else drop it.

        JobNotActive from that write: the job was settled elsewhere meanwhile (another
        process recovered it); its credits are back, so the image is dropped.
        """
        try:
            if self.marking is not None:
                await self.marking
        except BaseException:
            image.release()
            raise
        self.images[index] = image


@dataclass(frozen=True)
class ImageFailure:
    """Why one image of a job was not made."""

    kind: str
    message: str
    retryable: bool


INTERRUPTED = ImageFailure(
    "interrupted", _N("The bot restarted before your images were ready."), retryable=True
)


def internal_failure(job_id: int) -> ImageFailure:
    """An unexpected bug in one image: it is refunded, and the member can quote the job."""
    message = _N(
        "Something went wrong on our side (job {job_id}). Please try again.", job_id=str(job_id)
    )
    return ImageFailure("internal", message, retryable=True)


def failure_message(errors: Sequence[ImageFailure], total: int) -> str:
    """What to tell the member when none of a job's images were made."""
    if not errors:
        return _N("The image could not be generated.")
    # The most actionable message wins: configuration and quota problems before transient ones.
    error = min(errors, key=lambda e: e.retryable)
    if total == 1:
        return error.message
    return _N(
        "None of the {total} images could be generated. {reason}", total=total, reason=error.message
    )
