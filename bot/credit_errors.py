"""The credit ledger's refusals, each with its figures and a message in the member's language."""

from __future__ import annotations

from bot.errors import UserFacingError
from bot.i18n import _N, _NP
from bot.storage.records import JobRecord

__all__ = [
    "CreditError",
    "DailyCapReached",
    "InsufficientCredits",
    "InvalidAmount",
    "InvalidSetting",
    "JobNotActive",
    "TooManyJobs",
    "UnknownJob",
]


class CreditError(UserFacingError):
    """A refusal the user should see; ``message(locale)`` is short and specific."""


class InsufficientCredits(CreditError):
    """The guild's balance does not cover the cost."""

    def __init__(self, balance: int, cost: int, images: int = 1) -> None:
        if images == 1:
            message = _NP(
                "This server has {count} credit left; this image costs {cost}.",
                "This server has {count} credits left; this image costs {cost}.",
                balance,
                cost=cost,
            )
        else:
            message = _NP(
                "This server has {count} credit left; these {images} images cost {cost}.",
                "This server has {count} credits left; these {images} images cost {cost}.",
                balance,
                images=images,
                cost=cost,
            )
        super().__init__(message)
        self.balance = balance
        self.cost = cost


class DailyCapReached(CreditError):
    """The member's daily allowance in this guild does not cover the cost."""

    def __init__(self, cap: int, used: int, cost: int) -> None:
        if cap == 0:
            message = _N(
                "This server's daily limit per member is 0 credits, "
                "so images can't be generated here right now."
            )
        else:
            message = _N(
                "You've used {used} of your {cap} daily credits here; this costs {cost}. "
                "Your allowance resets at 00:00 UTC.",
                used=used,
                cap=cap,
                cost=cost,
            )
        super().__init__(message)
        self.cap = cap
        self.used = used
        self.cost = cost


class TooManyJobs(CreditError):
    """The member already has as many open jobs as allowed (counted in every process)."""

    def __init__(self, *, active: int, limit: int) -> None:
        super().__init__(
            _NP(
                "You already have {count} image job in progress "
                "(the limit is {limit}). Try again when one has finished.",
                "You already have {count} image jobs in progress "
                "(the limit is {limit}). Try again when one has finished.",
                active,
                limit=limit,
            )
        )
        self.active = active
        self.limit = limit


class InvalidAmount(CreditError):
    """An amount is not a whole number in the allowed range."""


class InvalidSetting(CreditError):
    """A guild setting other than an amount (channels, words) is malformed."""


class UnknownJob(CreditError):
    """No job has this id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(_N("That image request no longer exists."))
        self.job_id = job_id


class JobNotActive(CreditError):
    """The job was already settled (done, refunded or cancelled), so it must not run."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(_N("That image request has already finished."))
        self.job = job
