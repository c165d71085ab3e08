"""A standing backlog end to end: places and estimates, expired tokens, the busy answer, and
the cost of one job (Discord requests, event-loop tasks) with 1 or 1,000 jobs waiting."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import HELD, World, embed_field
from tests.fakes.fake_discord import InteractionRecord

pytestmark = pytest.mark.timeout(120)

STATUS_LINE = re.compile(r"⏳ #(\d+) in line · (under a minute|about \d+ min)")


async def balance(world: World, bot: Any) -> int:
    return int(await bot.ledger.balance(world.discord.guild.id))


def requests_for(world: World, records: list[InteractionRecord], since: int = 0) -> int:
    """Requests made on these interactions' tokens (defer, status edits, follow-ups)."""
    tokens = {record.token for record in records}
    return sum(1 for r in world.discord.requests[since:] if tokens.intersection(r.path.split("/")))


@contextlib.contextmanager
def counting_tasks() -> Iterator[list[int]]:
    """Count every task the running loop creates (the bot's, discord.py's and the fakes')."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    created = [0]

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        created[0] += 1
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        yield created
    finally:
        loop.set_task_factory(previous)


async def test_a_queued_line_shows_its_place_and_an_estimate(world: World) -> None:
    members = [world.discord.add_member(world.discord.guild, f"m{i}") for i in range(3)]
    async with world.running(max_concurrent_jobs=1, segmind_timeout=HELD) as bot:
        world.segmind.pause()
        await world.imagine({"prompt": "first"}, user=members[0])
        await world.segmind.wait_for_requests(1)
        second = await world.imagine({"prompt": "second"}, user=members[1])
        # Queued before "third" is sent: each defer is awaited first, so they could swap.
        await world.reply(second, "in line")
        third = await world.imagine({"prompt": "third"}, user=members[2])
        line = await world.reply(third, "in line")
        match = STATUS_LINE.search(line.content)
        assert match is not None, line.content
        assert match.group(1) == "2"
        assert "1 credit reserved" in line.content
        world.segmind.resume()
        await world.reply(third, "Done!")
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 97


async def test_status_edits_stop_once_the_token_has_expired(world: World) -> None:
    members = [world.discord.add_member(world.discord.guild, f"m{i}") for i in range(3)]
    world.segmind.latency = 0.4  # slow enough for the status board to see every move
    async with world.running(max_concurrent_jobs=1, segmind_timeout=HELD) as bot:
        world.segmind.pause()  # held until "late" has shown its place, however slow the machine
        await world.imagine({"prompt": "first"}, user=members[0])
        await world.segmind.wait_for_requests(1)
        second = await world.imagine({"prompt": "second"}, user=members[1])
        # Queued once reserved: "late" sent at once could overtake it.
        await world.reply(second, "#1 in line")
        late = await world.imagine({"prompt": "late"}, user=members[2])
        await world.reply(late, "#2 in line")
        world.discord.advance(16 * 60)  # the token of every interaction so far is dead
        since = len(world.discord.requests)
        world.segmind.resume()
        # "late" moves to #1, then starts, then ends: each a change its line would show.
        result = await world.result(predicate=lambda m: m.embeds[0].get("description") == "late")
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 97
    # One edit was refused (401 Invalid Webhook Token); none was tried after it.
    assert requests_for(world, [late], since) <= 1
    assert embed_field(result, "Requested by") == f"<@{members[2].id}>"


async def test_over_the_cap_the_bot_says_it_is_busy_and_charges_nothing(world: World) -> None:
    members = [world.discord.add_member(world.discord.guild, f"m{i}") for i in range(4)]
    async with world.running(
        max_concurrent_jobs=1, max_waiting_images=2, segmind_timeout=HELD
    ) as bot:
        world.segmind.pause()
        await world.imagine({"prompt": "running"}, user=members[0])
        await world.segmind.wait_for_requests(1)
        for member in members[1:3]:
            await world.imagine({"prompt": "waiting"}, user=member)
        await world.discord.wait_for(lambda: bot.jobs.depth == 2, what="two jobs waiting")
        before = await balance(world, bot)
        busy = await world.imagine({"prompt": "one too many"}, user=members[3])
        reply = await world.reply(busy, "busy")
        assert "2 images waiting" in reply.content and "Nothing was charged" in reply.content
        assert re.search(r"under a minute|about \d+ min", reply.content)
        assert busy.response_type == 4 and busy.ephemeral  # the first response, at once
        assert await balance(world, bot) == before
        world.segmind.resume()
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 97
    assert world.segmind.calls == 3


async def cost_per_job(world: World, bot: Any, jobs: int) -> tuple[float, float]:
    """Discord requests and loop tasks per job for ``jobs`` one-image jobs that all wait
    behind one held API call, from their interaction to their result."""
    members = [world.discord.add_member(world.discord.guild, f"q{jobs}-{i}") for i in range(10)]
    world.segmind.pause()
    blocker = await world.imagine({"prompt": "blocker"}, user=members[0])
    await world.discord.wait_for(lambda: bot.jobs.in_flight == 1, what="the blocker running")
    since = len(world.discord.requests)
    posts_before = len(world.results())
    with counting_tasks() as tasks:
        calls: list[InteractionRecord] = []
        for n in range(jobs):
            calls.append(await world.imagine({"prompt": f"job {n}"}, user=members[n % 10]))
            if len(calls) % 50 == 0:  # arrivals as fast as the test machine answers them
                await world.discord.wait_for(
                    lambda: all(call.acknowledged for call in calls), what="acknowledgements"
                )
        await world.discord.wait_for(
            lambda: bot.jobs.depth == jobs, timeout=180, what=f"{jobs} jobs waiting"
        )
        world.segmind.resume()
        await world.discord.wait_for(
            lambda: len(world.results()) == posts_before + jobs + 1,
            timeout=180,  # a deadline for a loaded machine, not a timing assertion
            what="every result",
        )
        await bot.jobs.wait_idle()
    assert all(call.acknowledged for call in [blocker, *calls])
    # The jobs' own requests (defer, status edits) and their result posts (not the blocker's).
    requests = requests_for(world, calls, since) + jobs
    return requests / jobs, tasks[0] / jobs


@pytest.mark.timeout(400)  # a thousand jobs through the real bot; generous on a loaded machine
async def test_one_job_costs_the_same_with_a_thousand_waiting(world: World) -> None:
    world.discord.validate = False  # a test-only cost per request; the counts are what matter
    async with world.running(
        max_concurrent_jobs=1,
        max_queued_per_user=1000,
        max_waiting_images=5000,
        segmind_timeout=HELD,  # the blocker is held while a thousand jobs arrive
    ) as bot:
        await bot.ledger.set_balance(world.discord.guild.id, 10**6, actor_id=None)
        await world.imagine({"prompt": "warm-up"})
        await world.result()
        await bot.jobs.wait_idle()
        one_requests, one_tasks = await cost_per_job(world, bot, 1)
        many_requests, many_tasks = await cost_per_job(world, bot, 1000)
    # Counts, not timings: a job waiting behind 999 others costs what a lone job does.
    assert many_requests <= one_requests + 1
    assert many_tasks <= one_tasks + 2
    assert many_requests <= 5
