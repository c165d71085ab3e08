"""What a stopped run left behind: its open jobs refunded or settled from their channel, and the
members told; with a shared database, a heartbeat, and the same for processes that died for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final, Protocol

import discord

from bot.coordination import Presence
from bot.credits import CommitResult, CreditLedger, JobRecord
from bot.i18n import tn
from bot.job_model import TRANSPORT_ERRORS
from bot.logs import job_context
from bot.recovery import RECOVERY_REASON, settle_deliveries, settle_delivery
from bot.storage import Storage, StorageError

__all__ = ["HEARTBEAT_INTERVAL", "STALE_AFTER", "CrashRecovery", "Leftovers", "Spawn", "recover"]

log = logging.getLogger(__name__)

#: How often a process sharing the database says it is alive, and after how long
#: without a word its unfinished jobs are refunded by the others.
HEARTBEAT_INTERVAL = 10.0
STALE_AFTER = 60.0
SWEEP_EVERY = 6
PROMPT_SHOWN = 80
#: No process has this name, so asking for its leftovers finds only unowned jobs and those
#: of silent processes.
_NO_LIVE_PROCESS: Final = "(no live process)"


@dataclass(frozen=True)
class Leftovers:
    """One recovery pass: the jobs refunded now, and those whose result was being posted
    (their channel decides: :mod:`bot.recovery`)."""

    refunded: list[JobRecord]
    delivering: list[JobRecord]


async def recover(
    storage: Storage,
    ledger: CreditLedger,
    owner: str | None = None,
    *,
    stale_only: bool = False,
    stale_after: float = STALE_AFTER,
) -> Leftovers:
    """Read once the open jobs a dead run left and refund, exactly once, those not being posted.

    ``owner`` None: every open job (one process owns the database); else this process's earlier
    jobs, unowned ones and those of processes silent for ``stale_after`` seconds.
    ``stale_only``: only unowned jobs and silent processes' (live processes' jobs, ours included,
    stay), for the sweep of processes that died for good.
    """
    jobs = await storage.recoverable_jobs(
        _NO_LIVE_PROCESS if stale_only else owner, stale_after=stale_after
    )
    refunded: list[JobRecord] = []
    for job in jobs:
        if job.delivering:
            continue
        result = await ledger.refund(job, RECOVERY_REASON)
        if result.refunded:  # 0: settled meanwhile by someone else
            refunded.append(result.job)
    if refunded:
        log.warning(
            "refunded %d %s interrupted by a restart: %s",
            len(refunded),
            "job" if len(refunded) == 1 else "jobs",
            ", ".join(str(job.id) for job in refunded),
        )
    else:
        log.info("no interrupted jobs to refund")
    return Leftovers(refunded, [job for job in jobs if job.delivering])


class Spawn(Protocol):
    """Runs a background task the bot keeps referenced, logs if it fails and cancels on close."""

    def __call__(
        self, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> asyncio.Task[None]: ...


class CrashRecovery:
    """Recovers the previous run at start-up and, on a shared database, dead peers later."""

    def __init__(
        self,
        client: discord.Client,
        storage: Storage,
        ledger: CreditLedger,
        *,
        owner: str,
        spawn: Spawn,
    ) -> None:
        self._client = client
        self._storage = storage
        self._ledger = ledger
        self._owner = owner
        self._spawn = spawn
        self._presence: Presence | None = None
        self._settling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Refund the jobs a dead run left; those it was posting are decided from their channel."""
        owner = None
        if self._storage.shared:
            # Other processes use this database: refund only what no live one runs.
            self._presence = Presence(self._storage, self._owner)
            await self._presence.beat()
            owner = self._owner
        left = await recover(self._storage, self._ledger, owner)
        if self._presence is not None:
            self._spawn(self._keep_alive(self._presence), name="heartbeat")
        if left.refunded:
            self._spawn(self._announce(left.refunded))
        if left.delivering:
            self._settling = self._spawn(self._settle(left.delivering), name="deliveries")

    async def wait_settled(self) -> None:
        """Wait until the deliveries a dead run left were settled (tests, benchmarks)."""
        if self._settling is not None:
            await asyncio.wait((self._settling,))

    async def leave(self) -> None:
        """Sign off from a shared database, so no one waits for this process's heartbeat."""
        if self._presence is None:
            return
        try:
            await self._presence.leave()
        except StorageError as error:
            log.warning("could not sign off from the shared database: %s", error)

    async def _keep_alive(self, presence: Presence) -> None:
        """Heartbeat for this process. Every few beats the jobs of processes that died for
        good are recovered in a task of their own: telling members must never delay a beat."""
        beats = 0
        sweeping: asyncio.Task[None] | None = None
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await presence.beat()
            except StorageError as error:
                # Keep beating: a database blip must not make others refund our jobs.
                log.warning("heartbeat to the shared database failed: %s", error)
                continue
            except Exception:  # a bug here would let the others refund every job we run
                log.exception("heartbeat to the shared database failed")
                continue
            beats += 1
            if beats % SWEEP_EVERY == 0 and (sweeping is None or sweeping.done()):
                sweeping = self._spawn(self._sweep(), name="sweep")

    async def _sweep(self) -> None:
        try:
            swept = await recover(self._storage, self._ledger, stale_only=True)
        except StorageError as error:
            log.warning("could not look for the jobs of stopped processes: %s", error)
            return
        if swept.refunded:
            await self._announce(swept.refunded)
        if swept.delivering:
            await self._settle(swept.delivering)

    async def settle_delivery(self, job: JobRecord) -> CommitResult | None:
        """Decide one job of this run whose result's post got no answer, from its channel
        (the queue tells the member); None: the channel cannot be read now."""
        return await settle_delivery(self._client, self._ledger, job)

    async def _settle(self, jobs: list[JobRecord]) -> None:
        await self._client.wait_until_ready()
        refunded = await settle_deliveries(self._client, self._ledger, jobs)
        if refunded:
            await self._announce(refunded)

    async def _announce(self, jobs: list[JobRecord]) -> None:
        """Tell each requester, in the server's language, that their job was refunded."""
        await self._client.wait_until_ready()
        for job in jobs:
            # A stopped peer's guilds may be on shards this process does not cache.
            channel = self._client.get_channel(job.channel_id) or (
                self._client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
            )
            if not isinstance(channel, discord.abc.Messageable):
                continue
            prompt = str(job.params.get("prompt", ""))
            if len(prompt) > PROMPT_SHOWN:
                prompt = prompt[: PROMPT_SHOWN - 1] + "…"
            guild = getattr(channel, "guild", None)
            member = f"<@{job.user_id}>"  # outside tn(): Babel warns on f-strings in a marker call
            try:
                await channel.send(
                    tn(
                        guild.preferred_locale if guild is not None else None,
                        "{member} your image job #{job_id} (“{prompt}”) was interrupted by a "
                        "restart. Its {count} credit was refunded; please run it again.",
                        "{member} your image job #{job_id} (“{prompt}”) was interrupted by a "
                        "restart. Its {count} credits were refunded; please run it again.",
                        job.cost,
                        member=member,
                        job_id=str(job.id),
                        prompt=discord.utils.escape_markdown(prompt),
                    ),
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            except (discord.HTTPException, *TRANSPORT_ERRORS) as error:
                log.warning(
                    "could not post the restart notice (%s)",
                    getattr(error, "status", type(error).__name__),
                    extra=job_context(guild_id=job.guild_id, user_id=job.user_id, job_id=job.id),
                )
