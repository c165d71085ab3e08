"""Run the real bot against the offline fakes and time each job.

:class:`Harness` starts the fake Segmind (fixed latency) and the fake Discord
(OpenAPI validation off: it is a test-only cost of ~1-2 ms per request) on
127.0.0.1, then either the production :class:`bot.app.ImagineBot` in this
process (through :class:`BenchBot`, which, like the end-to-end tests'
``E2EBot``, only drops discord.py's 5 s pause between shard identifies) or the
bot's entry point in a child process
(:mod:`bench.process`).

A job is timed from the fake's ``INTERACTION_CREATE`` push
(``InteractionRecord.created_at``) to the moment the request carrying the public
result message reaches the fake Discord (:class:`BenchDiscord` stamps each REST
request as its handler starts, and keeps the moment it had stored the message
too). The API's latency taken out of a job is the time the fake Segmind actually
held that job's call (:class:`BenchSegmind`: from the request read to the answer
built), not the nominal figure: its timer wakes a fraction of a millisecond late.
Every job has a unique prompt, which the result embed and the API request
repeat, so each result and API call is matched to its own interaction. A job has *settled* once
its interaction's private status line shows the bot's final text (:data:`FINAL_STATUS`):
the bot sends it after committing the credits and recording the result message's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import itertools
import logging
import math
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image, ImageFilter
from pydantic import SecretStr

from bench.database import throwaway_database
from bot.app import ImagineBot
from bot.config import Settings
from bot.credits import JobStatus
from bot.event_loop import EventLoopChoice
from tests.fakes.discord_rest import RestApi
from tests.fakes.fake_discord import (
    FakeChannel,
    FakeDiscord,
    FakeMember,
    InteractionRecord,
    StoredMessage,
    run_client,
)
from tests.fakes.fake_segmind import FakeSegmind, RecordedRequest

__all__ = [
    "BENCH_CREDITS",
    "FINAL_STATUS",
    "HELD_PREFIX",
    "RESULT_TITLE",
    "Arrival",
    "BenchBot",
    "BenchDiscord",
    "BenchSegmind",
    "Harness",
    "HarnessConfig",
    "JobTiming",
    "percentile",
    "settled",
    "wide_listen_backlog",
]

#: The result embed's title (cogs/imagine/_render.py).
RESULT_TITLE = "Kandinsky 2.1"
#: Enough credits that no benchmark ever runs out.
BENCH_CREDITS = 1_000_000_000
#: Prompts starting with this are held by :class:`BenchSegmind` until released.
HELD_PREFIX = "held"
#: Listen backlog for the fakes (aiohttp's default is 128; see wide_listen_backlog).
LISTEN_BACKLOG = 2048
#: How the bot's final status text starts: success, failure (cogs/imagine/_delivery.py).
FINAL_STATUS = ("✅", "❌")


#: When the REST request being served reached the fake Discord. aiohttp serves each
#: request in a task of its own, so this is per request.
_request_arrived: contextvars.ContextVar[float] = contextvars.ContextVar("request_arrived")


def settled(record: InteractionRecord) -> bool:
    """Whether the job of ``record`` has settled: its status line shows the final text
    (sent once the credits are committed and the result message's id recorded)."""
    return any(message.content.startswith(FINAL_STATUS) for message in record.messages)


@contextlib.contextmanager
def wide_listen_backlog(backlog: int = LISTEN_BACKLOG) -> Iterator[None]:
    """Make aiohttp sites started inside the block listen with ``backlog``.

    discord.py opens a new connection for each concurrent request, so a burst of
    200 interactions opens ~200 connections to the fake at once. aiohttp listens
    with a backlog of 128; past it the kernel drops the SYN and the client only
    retries one second later, which showed up as a 1.1 s p99 time-to-ack that
    was the fake server's, not the bot's. Real Discord does not have this limit.
    """
    original = web.TCPSite.__init__

    def init(self: web.TCPSite, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backlog", backlog)
        original(self, *args, **kwargs)

    web.TCPSite.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        web.TCPSite.__init__ = original  # type: ignore[method-assign]


class BenchBot(ImagineBot):
    """The production bot, with discord.py's 5 s pause between shard identifies dropped
    (as in ``tests/e2e``'s ``E2EBot``; the benchmarks run one shard anyway). It also keeps
    how long each API call took, as the bot's own client timed it: the client reports
    every attempt to ``metrics.observe_api``, which is wrapped here. The retry backoff is
    left as configured: the fake Segmind never fails in a benchmark."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(settings, **options)
        #: Seconds of every API attempt, as the bot's client timed it.
        self.api_times: list[float] = []
        observe = self.metrics.observe_api

        def observe_api(kind: str, status: int | None, seconds: float) -> None:
            observe(kind, status, seconds)
            self.api_times.append(seconds)

        self.metrics.observe_api = observe_api  # type: ignore[method-assign]

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


@dataclass(frozen=True)
class Arrival:
    """A result message: when its request reached the fake Discord, and when the fake
    had read, checked and stored it (``time.monotonic()`` seconds)."""

    arrived: float
    stored: float


class _StampingRestApi(RestApi):
    """The fake's REST API, noting when each request reached it (before the fake reads
    its body and builds the message: that is the fake's work, not the bot's)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        _request_arrived.set(time.monotonic())
        return await super().handle(request)


class BenchDiscord(FakeDiscord):
    """The fake Discord, stamping when each result message arrives.

    ``expect(prompt)`` returns a future resolved with the :class:`Arrival` of the
    public result message for that (unique) prompt.
    """

    def __init__(self, **options: Any) -> None:
        options.setdefault("validate", False)
        super().__init__(**options)
        self.rest = _StampingRestApi(self)
        self._expected: dict[str, asyncio.Future[Arrival]] = {}

    async def start(self) -> BenchDiscord:
        with wide_listen_backlog():
            await super().start()
        return self

    def expect(self, prompt: str) -> asyncio.Future[Arrival]:
        future: asyncio.Future[Arrival] = asyncio.get_running_loop().create_future()
        self._expected[prompt] = future
        return future

    def store_message(self, message: StoredMessage) -> None:
        stored = time.monotonic()
        super().store_message(message)
        if message.ephemeral or not self._expected:
            return
        for embed in message.payload.get("embeds") or ():
            if embed.get("title") == RESULT_TITLE:
                future = self._expected.pop(str(embed.get("description")), None)
                if future is not None and not future.done():
                    future.set_result(Arrival(_request_arrived.get(stored), stored))
                return


def _photo_like_jpeg(width: int, height: int) -> bytes:
    """A JPEG as large as a real 1024x1024 Kandinsky image (~270 KB): blurred noise."""
    bands = [
        Image.effect_noise((width, height), sigma).filter(ImageFilter.GaussianBlur(1.2))
        for sigma in (40, 50, 60)
    ]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class BenchSegmind(FakeSegmind):
    """The fake Segmind with two benchmark knobs.

    * ``photo_like``: answer with textured JPEGs the size of real ones instead of
      the fake's flat-colour images (17 KB at 1024x1024).
    * requests whose prompt starts with :data:`HELD_PREFIX` are answered (after the
      fixed latency) only once :meth:`release_held` is called, to keep jobs in flight.

    It also keeps, per prompt, how long it actually held the last call for that prompt
    (``served``): from the request read to the answer built, the fixed latency plus
    however late the fake's timer woke.
    """

    def __init__(self, *, photo_like: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.served: dict[str, float] = {}
        self.photo_like = photo_like
        self.held = 0
        self._release = asyncio.Event()
        self._held_changed = asyncio.Condition()
        self._photos: dict[tuple[int, int], bytes] = {}

    async def start(self) -> None:
        with wide_listen_backlog():
            await super().start()

    async def close(self) -> None:
        self._release.set()
        await super().close()

    def release_held(self) -> None:
        """Answer every held request; later ones are held again (the count restarts)."""
        self._release.set()
        self._release = asyncio.Event()
        self.held = 0

    async def wait_held(self, count: int, *, timeout: float) -> None:
        """Until ``count`` held requests are waiting (``TimeoutError`` after ``timeout``)."""
        async with asyncio.timeout(timeout), self._held_changed:
            await self._held_changed.wait_for(lambda: self.held >= count)

    async def _respond_after_latency(
        self, request: web.Request, record: RecordedRequest, *rest: Any
    ) -> web.StreamResponse:
        try:
            return await super()._respond_after_latency(request, record, *rest)
        finally:
            prompt = record.json.get("prompt") if isinstance(record.json, dict) else None
            if isinstance(prompt, str):
                self.served[prompt] = time.monotonic() - record.received_at

    async def image(self, width: int, height: int, seed: int, prompt: str) -> bytes:
        if prompt.startswith(HELD_PREFIX):
            release = self._release
            async with self._held_changed:
                self.held += 1
                self._held_changed.notify_all()
            await release.wait()
        if not self.photo_like:
            return await super().image(width, height, seed, prompt)
        data = self._photos.get((width, height))
        if data is None:
            data = await asyncio.to_thread(_photo_like_jpeg, width, height)
            self._photos[(width, height)] = data
        return data


@dataclass(frozen=True)
class HarnessConfig:
    """One bot + fakes set-up.

    ``members`` / ``channels``: how many distinct requesters and channels jobs are
    spread over (the bot caps jobs per member, and Discord rate-limits messages
    per channel: discord.py holds a channel's sends to the fake's 50 per second).
    """

    latency: float = 0.2
    max_concurrent_jobs: int = 4
    members: int = 8
    channels: int = 8
    max_queued_per_user: int = 1000
    photo_like: bool = False
    # The loop of a bot in its own process (EVENT_LOOP); in process, whatever runs the bench.
    event_loop: EventLoopChoice = "auto"
    # "sqlite", "postgresql" (a throwaway local server) or a URL: bench/database.py
    database: str = "sqlite"


@dataclass(frozen=True)
class JobTiming:
    """One job (monotonic seconds): pushed at ``sent``; its result message reached the
    fake Discord at ``arrived`` and was stored by it at ``done``; ``api`` is how long
    the fake Segmind held its API call (None if unknown)."""

    sent: float
    done: float
    ack_latency: float | None
    arrived: float | None = None
    api: float | None = None

    @property
    def total(self) -> float:
        return self.done - self.sent

    def overhead(self, latency: float) -> float:
        """Push to arrival, less the API call's actual latency (``latency`` if unknown)."""
        arrived = self.done if self.arrived is None else self.arrived
        return arrived - self.sent - (latency if self.api is None else self.api)


class Harness:
    """The fakes, a pool of members and channels, and a way to send jobs and time them.

    Use :meth:`running` for the bot in this process; :mod:`bench.process` runs it
    in a child process against the same harness.
    """

    def __init__(self, config: HarnessConfig, folder: Path, database_url: str) -> None:
        self.config = config
        self.folder = folder
        self.database_url = database_url
        self.discord = BenchDiscord()
        self.segmind = BenchSegmind(
            latency=config.latency, remaining_credits=1e9, photo_like=config.photo_like
        )
        guild = self.discord.guild
        self.members: list[FakeMember] = [
            self.discord.add_member(guild, f"bench-{n}") for n in range(config.members)
        ]
        self.channels: list[FakeChannel] = [self.discord.channel] + [
            self.discord.add_text_channel(guild, f"bench-{n}") for n in range(1, config.channels)
        ]
        self.bot: BenchBot | None = None
        self._prompts = itertools.count(1)

    def settings(self) -> Settings:
        config = self.config
        return Settings(
            discord_token=SecretStr(self.discord.token),
            segmind_api_key=SecretStr(self.segmind.api_key),
            segmind_base_url=self.segmind.url,
            segmind_timeout=120.0,
            database_url=self.database_url,
            default_guild_credits=0,
            max_concurrent_jobs=config.max_concurrent_jobs,
            max_queued_per_user=config.max_queued_per_user,
            guild_ready_timeout=0.05,
            shutdown_grace_seconds=10.0,
            log_level="WARNING",
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def fakes(cls, config: HarnessConfig) -> AsyncIterator[Harness]:
        """Only the fakes (for a bot in a child process), in a fresh temporary folder."""
        with (
            tempfile.TemporaryDirectory(prefix="imagine-bench-") as folder,
            throwaway_database(config.database, Path(folder)) as database_url,
        ):
            harness = cls(config, Path(folder), database_url)
            async with harness.segmind, harness.discord:
                yield harness

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: HarnessConfig) -> AsyncIterator[Harness]:
        """The fakes and the bot in this process; everything is stopped (bounded) on exit."""
        logging.getLogger("discord").setLevel(logging.ERROR)  # no voice-support notices
        async with cls.fakes(config) as harness:
            with harness.discord.patch_discord():
                bot = BenchBot(harness.settings())
                async with run_client(bot, harness.discord):
                    harness.bot = bot
                    await bot.ledger.grant(
                        harness.discord.guild.id, BENCH_CREDITS, actor_id=None, note="bench"
                    )
                    try:
                        yield harness
                    finally:
                        harness.bot = None

    # -- jobs -------------------------------------------------------------------

    async def submit(
        self, slot: int, options: dict[str, Any] | None = None, *, prefix: str = "bench"
    ) -> tuple[InteractionRecord, asyncio.Future[Arrival]]:
        """``/imagine`` by member ``slot`` in channel ``slot`` (modulo the pools)."""
        prompt = f"{prefix} job {next(self._prompts)}"
        arrival = self.discord.expect(prompt)
        record = await self.discord.slash(
            "imagine",
            {"prompt": prompt, **(options or {})},
            user=self.members[slot % len(self.members)],
            channel=self.channels[slot % len(self.channels)],
        )
        return record, arrival

    async def run_job(
        self,
        slot: int = 0,
        options: dict[str, Any] | None = None,
        *,
        settle: bool = False,
        timeout: float = 60.0,
    ) -> JobTiming:
        """Submit one job and wait (bounded) for its result message.

        With ``settle``, also wait until the job has :func:`settled` (its final status
        edit stored by the fake), so that its tail (credits committed, message id
        recorded, status line edited) does not overlap the next job. ``timeout`` bounds
        both waits together; the timing stays the result message's, without the settling.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        record, arrival = await self.submit(slot, options)
        done = await asyncio.wait_for(arrival, timeout)
        if settle:
            await self.discord.wait_for(
                lambda: settled(record),
                timeout=deadline - asyncio.get_running_loop().time(),
                what=f"{record!r} to settle (its final status line)",
            )
        return self._timing(record, done)

    async def run_burst(
        self, count: int, options: dict[str, Any] | None = None, *, timeout: float = 120.0
    ) -> list[JobTiming]:
        """Submit ``count`` jobs back to back (distinct members and channels, as far as the
        pools go), then wait (bounded) for every result."""
        submitted = [await self.submit(slot, options) for slot in range(count)]
        async with asyncio.timeout(timeout):
            arrivals = await asyncio.gather(*(arrival for _, arrival in submitted))
        return [
            self._timing(record, done)
            for (record, _), done in zip(submitted, arrivals, strict=True)
        ]

    def _timing(self, record: InteractionRecord, arrival: Arrival) -> JobTiming:
        options = record.payload["data"]["options"]
        prompt = next(str(option["value"]) for option in options if option["name"] == "prompt")
        return JobTiming(
            sent=record.created_at,
            done=arrival.stored,
            ack_latency=record.ack_latency,
            arrived=arrival.arrived,
            api=self.segmind.served.get(prompt),
        )

    def api_times(self) -> list[float]:
        """Every API call's duration so far, as the in-process bot measured it."""
        return list(self.bot.api_times) if self.bot is not None else []

    async def until_running(self, count: int, timeout: float = 30.0) -> None:
        """Wait (bounded) until the in-process bot's ledger shows ``count`` running jobs:
        a job writes queued -> running alongside its API call, so a job held at the fake
        API may still have that write to do."""
        if self.bot is None:
            raise RuntimeError("until_running needs the bot in this process")
        ledger = self.bot.ledger
        async with asyncio.timeout(timeout):
            while True:
                active = await ledger.active_jobs(guild_id=self.discord.guild.id)
                if sum(job.status is JobStatus.RUNNING for job in active) >= count:
                    return
                await asyncio.sleep(0.01)  # a bounded poll of the database (bench only)

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until every job is settled, its final status line included."""
        if self.bot is not None:
            await asyncio.wait_for(self.bot.jobs.wait_idle(), timeout)
            return

        await self.discord.wait_for(
            lambda: all(settled(record) for record in self.discord.interactions),
            timeout=timeout,
            what="every job settled",
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]
