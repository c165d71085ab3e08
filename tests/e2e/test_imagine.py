"""/imagine end to end: the real bot, the real discord.py client, fake Discord and fake Segmind."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from bot.storage import StorageError
from tests.e2e.conftest import World, embed_field, is_result

pytestmark = pytest.mark.timeout(60)

STRING, INTEGER, NUMBER = 3, 4, 10


async def balance(world: World, bot: Any, guild_id: int | None = None) -> int:
    return int(await bot.ledger.balance(guild_id or world.discord.guild.id))


async def test_synced_command_mirrors_the_api(world: World) -> None:
    async with world.running():
        [imagine] = [c for c in world.discord.commands_for() if c["name"] == "imagine"]
    options = {option["name"]: option for option in imagine["options"]}
    assert list(options) == [
        "prompt",
        "negative_prompt",
        "scheduler",
        "samples",
        "num_inference_steps",
        "guidance_scale",
        "seed",
        "img_width",
        "img_height",
    ]
    assert options["prompt"]["type"] == STRING and options["prompt"]["required"] is True
    assert options["prompt"]["max_length"] == 1000
    assert options["negative_prompt"]["type"] == STRING
    assert [c["value"] for c in options["scheduler"]["choices"]] == ["DDIM", "P-Sampler"]
    assert (
        options["samples"]["type"],
        options["samples"]["min_value"],
        options["samples"]["max_value"],
    ) == (INTEGER, 1, 8)
    steps = options["num_inference_steps"]
    assert (steps["type"], steps["min_value"], steps["max_value"]) == (INTEGER, 10, 40)
    guidance = options["guidance_scale"]
    assert (guidance["type"], guidance["min_value"], guidance["max_value"]) == (NUMBER, 1, 20)
    seed = options["seed"]
    assert (seed["type"], seed["min_value"], seed["max_value"]) == (INTEGER, 0, 4294967295)
    for name in ("img_width", "img_height"):
        assert options[name]["type"] == INTEGER
        assert [c["value"] for c in options[name]["choices"]] == [512, 1024]
    assert all(option.get("description") for option in imagine["options"])
    assert not any(o.get("required") for n, o in options.items() if n != "prompt")


async def test_happy_path_posts_one_image_and_spends_one_credit(world: World) -> None:
    async with world.running() as bot:
        call = await world.imagine(
            {
                "prompt": "a lighthouse in a storm",
                "negative_prompt": "blurry",
                "scheduler": "P-Sampler",
                "num_inference_steps": 30,
                "guidance_scale": 9.5,
                "seed": 1234,
            }
        )
        result = await world.result()
        assert call.ack_latency is not None and call.ack_latency < 3
        assert call.ephemeral  # the status line is private; the result is public
        done = await world.reply(call, "Done!")
        assert "1 credit spent" in done.content
        assert await balance(world, bot) == 99
        assert await bot.ledger.verify()
    [sent] = world.segmind.requests
    assert sent.json == {
        "prompt": "a lighthouse in a storm",
        "negative_prompt": "blurry",
        "scheduler": "P-Sampler",
        "samples": 1,
        "num_inference_steps": 30,
        "guidance_scale": 9.5,
        "seed": 1234,
        "img_width": 512,
        "img_height": 512,
        "base64": False,
    }
    assert [a["filename"] for a in result.attachments] == ["kandinsky-1234.jpg"]
    assert result.attachment_bytes(0)[:2] == b"\xff\xd8"
    assert embed_field(result, "Seed") == "1234"
    assert embed_field(result, "Cost") == "1 credit"
    assert embed_field(result, "Balance") == "99 credits left"
    assert embed_field(result, "Negative prompt") == "blurry"
    assert embed_field(result, "Scheduler") == "P-Sampler"
    assert [b["label"] for b in result.buttons()] == ["Reroll", "Edit", "Delete"]
    world.discord.assert_no_pings()


async def test_the_database_is_asked_once_before_the_api_call(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's rules come from its settings cached in memory: with them cached, one
    # trip to the database (the reservation) comes before the API call (mark_running goes
    # alongside the call, so it is not counted).
    async with world.running() as bot:
        await world.imagine({"prompt": "a first lighthouse"})
        await world.result()  # the guild's settings are cached from here on
        await bot.jobs.wait_idle()
        asked: list[tuple[str, float]] = []
        spied = [(bot.ledger, n) for n in ("reserve", "balance", "get_job", "usage_today")]
        for owner, name in [*spied, (bot.storage, "get_settings")]:
            original = getattr(owner, name)

            async def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
                asked.append((_name, time.monotonic()))
                return await _original(*args)

            monkeypatch.setattr(owner, name, spy)
        await world.imagine({"prompt": "a lighthouse"})
        await world.result(predicate=lambda m: "a lighthouse" in json.dumps(m.embeds))
    sent = world.segmind.requests[-1]
    assert [name for name, at in asked if at < sent.received_at] == ["reserve"]


async def test_four_large_images_cost_sixteen(world: World) -> None:
    async with world.running() as bot:
        await world.imagine(
            {"prompt": "mountains", "samples": 4, "img_width": 1024, "img_height": 1024}
        )
        result = await world.result()
        assert await balance(world, bot) == 84
    assert len(result.attachments) == 4
    seeds = sorted(r.json["seed"] for r in world.segmind.requests)
    assert len(seeds) == 4 and seeds == [seeds[0] + i for i in range(4)]
    assert all(r.json["samples"] == 1 for r in world.segmind.requests)
    assert embed_field(result, "Seeds") == ", ".join(map(str, seeds))
    assert embed_field(result, "Cost") == "16 credits"


async def test_images_waiting_in_files_arrive_intact_and_the_files_go(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # IMAGE_MEMORY_BUDGET_MB=0: every finished image waits in a temporary file.
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    async with world.running(image_memory_budget_mb=0) as bot:
        await world.imagine({"prompt": "harbour at dawn", "samples": 3, "seed": 40})
        result = await world.result()
        await bot.jobs.wait_idle()
        folders = list(spool.iterdir())
        assert len(folders) == 1  # one folder, and its images deleted once settled
        assert [f.name for f in folders[0].iterdir()] == [".lock"]
        assert await balance(world, bot) == 97
    assert list(spool.iterdir()) == []  # the folder goes with the bot
    sent = sorted(result.files.values(), key=lambda f: f.filename)
    expected = [
        await world.segmind.image(512, 512, seed, "harbour at dawn") for seed in (40, 41, 42)
    ]
    assert [f.filename for f in sent] == [f"kandinsky-{seed}.jpg" for seed in (40, 41, 42)]
    assert [f.data for f in sent] == expected


async def test_not_enough_credits_is_explained_and_calls_nothing(world: World) -> None:
    async with world.running() as bot:
        await bot.ledger.set_balance(world.discord.guild.id, 3, actor_id=None)
        call = await world.imagine({"prompt": "big", "img_width": 1024, "img_height": 1024})
        reply = await world.reply(call, "credits")
        assert "3" in reply.content and "4" in reply.content
        assert reply.ephemeral
        assert await balance(world, bot) == 3
    assert world.segmind.calls == 0


API_FAILURES: list[tuple[str, Any, str]] = [
    ("401", lambda s: s.fail(401, times=5), "API key was rejected"),
    ("406", lambda s: s.fail(406, times=5), "out of API credits"),
    ("500", lambda s: s.fail(500, times=5), "Segmind"),
    ("502-html", lambda s: s.fail(502, times=5, html=True), "Segmind"),
    ("504", lambda s: s.fail(504, times=5), "Segmind"),
    ("timeout", lambda s: s.hang(times=5), "not retried, because the call may have been charged"),
    ("dropped", lambda s: s.drop(times=5), "Segmind"),
]


@pytest.mark.parametrize(
    ("label", "script", "expected"), API_FAILURES, ids=[f[0] for f in API_FAILURES]
)
async def test_api_failures_are_explained_and_refunded(
    world: World, label: str, script: Any, expected: str
) -> None:
    script(world.segmind)
    async with world.running(segmind_timeout=0.3, segmind_max_attempts=2) as bot:
        call = await world.imagine({"prompt": f"fails with {label}", "samples": 2})
        reply = await world.reply(call, "refunded")
        assert expected.lower() in reply.content.lower()
        assert "2 credits refunded" in reply.content
        assert await balance(world, bot) == 100
        job = (await bot.ledger.active_jobs()) or []
        assert job == []
        assert await bot.ledger.verify()
    assert world.results() == []
    assert "Traceback" not in reply.content and world.segmind.api_key not in reply.content


async def test_rate_limit_then_success_is_retried(world: World) -> None:
    world.segmind.fail(429, headers={"Retry-After": "0.05"})
    async with world.running() as bot:
        await world.imagine({"prompt": "patience"})
        await world.result()
        assert await balance(world, bot) == 99
    assert world.segmind.calls == 2 and world.segmind.billed_calls == 1


async def test_thirty_commands_on_ten_credits_never_overspend(world: World) -> None:
    members = [world.discord.add_member(world.discord.guild, f"user{i}") for i in range(10)]
    world.segmind.latency = 0.05
    async with world.running(max_concurrent_jobs=4) as bot:
        await bot.ledger.set_balance(world.discord.guild.id, 10, actor_id=None)
        calls = await asyncio.gather(
            *(world.imagine({"prompt": f"crowd {i}"}, user=members[i % 10]) for i in range(30))
        )
        for call in calls:
            await world.discord.wait_for_followup(
                call, lambda m: "⏳" not in m.content or "Done" in m.content
            )
        await bot.jobs.wait_idle()
        assert all(call.acknowledged for call in calls)
        assert await balance(world, bot) == 0
        assert await bot.ledger.verify()
    assert world.segmind.billed_calls == 10
    assert len(world.results()) == 10


async def test_one_member_flooding_does_not_starve_another(world: World) -> None:
    flooder, patient = world.discord.member, world.discord.moderator
    world.segmind.latency = 0.05
    async with world.running(max_concurrent_jobs=1) as bot:
        for i in range(3):
            await world.imagine({"prompt": f"flood {i}", "samples": 4}, user=flooder)
        await world.segmind.wait_for_requests(1)
        call = await world.imagine({"prompt": "patient"}, user=patient)
        await world.reply(call, "Done!")
        await bot.jobs.wait_idle()
    prompts = [r.json["prompt"] for r in world.segmind.requests]
    assert len(prompts) == 13
    assert prompts.index("patient") <= 2  # not after the flood's 12 images


async def test_queue_cap_per_member(world: World) -> None:
    world.segmind.hang(times=1)
    async with world.running(
        max_queued_per_user=1, segmind_timeout=1.0, segmind_max_attempts=1
    ) as bot:
        await world.imagine({"prompt": "first"})
        await world.segmind.wait_for_requests(1)
        second = await world.imagine({"prompt": "second"})
        reply = await world.reply(second, "in progress")
        assert "limit is 1" in reply.content
        await bot.jobs.wait_idle()


async def test_direct_messages_explain_servers(world: World) -> None:
    async with world.running():
        call = await world.imagine({"prompt": "hello"}, channel=world.discord.dm_channel)
        reply = await world.reply(call, "works in servers")
        assert reply.ephemeral
    assert world.segmind.calls == 0


async def test_prompts_ping_nobody(world: World) -> None:
    async with world.running():
        await world.imagine({"prompt": f"@everyone @here <@&1> <@{world.discord.moderator.id}>"})
        result = await world.result()
    assert "@everyone" in result.payload["embeds"][0]["description"]
    world.discord.assert_no_pings()


async def test_blank_prompt_is_refused_before_spending(world: World) -> None:
    async with world.running() as bot:
        call = await world.imagine({"prompt": "   "})
        reply = await world.reply(call, "prompt")
        assert "empty" in reply.content or "blank" in reply.content
        assert await balance(world, bot) == 100
    assert world.segmind.calls == 0


async def test_channel_rules_and_blocked_words(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord = world.discord
    async with world.running() as bot:
        guild_id = discord.guild.id
        await bot.guild_settings.update(
            guild_id, allowed_channel_ids=(discord.art_channel.id,), blocked_words=("gore",)
        )
        entries = await bot.insight.count_history(guild_id)
        queued: list[object] = []
        original = bot.jobs.enqueue

        async def enqueue(**job: Any) -> Any:
            queued.append(job)
            return await original(**job)

        # Refused before the queue is asked, so before any reservation.
        monkeypatch.setattr(bot.jobs, "enqueue", enqueue)
        wrong_channel = await world.imagine({"prompt": "a cat"})
        reply = await world.reply(wrong_channel, "turned off in this channel")
        assert reply.ephemeral and f"<#{discord.art_channel.id}>" in reply.content
        blocked = await world.imagine({"prompt": "lots of GORE"}, channel=discord.art_channel)
        reply = await world.reply(blocked, "blocked")
        assert reply.ephemeral and "“gore”" in reply.content
        assert "Nothing was charged" in reply.content
        assert queued == []
        assert await balance(world, bot) == 100
        assert await bot.insight.count_history(guild_id) == entries
        assert await bot.ledger.active_jobs() == []
    assert world.segmind.calls == 0


async def test_missing_bot_permissions_are_named(world: World) -> None:
    async with world.running() as bot:
        call = await world.imagine({"prompt": "a cat"}, channel=world.discord.locked_channel)
        reply = await world.reply(call, "permission")
        assert "Send Messages" in reply.content
        assert await balance(world, bot) == 100
    assert world.segmind.calls == 0


async def test_results_fit_the_upload_limit(world: World) -> None:
    world.segmind.image_format = "PNG"  # large, incompressible-ish answers
    limit = 400 * 1024
    world.discord.guild.filesize_limit = limit
    async with world.running() as bot:
        call = await world.imagine(
            {"prompt": "big", "samples": 3, "img_width": 1024, "img_height": 1024},
            attachment_size_limit=limit,
        )
        await world.reply(call, "Done!")
        posted = [m for m in world.discord.channel_messages(world.discord.channel) if m.attachments]
        assert sum(len(m.attachments) for m in posted) == 3
        assert await balance(world, bot) == 88
    for message in posted:
        assert sum(len(f.data) for f in message.files.values()) <= limit


async def test_job_finishing_after_the_token_expired_still_delivers(world: World) -> None:
    world.segmind.latency = 0.3
    async with world.running() as bot:
        call = await world.imagine({"prompt": "slow"})
        await world.segmind.wait_for_requests(1)
        world.discord.advance(16 * 60)  # the interaction token is now dead
        result = await world.result()
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 99
    assert is_result(result) and not result.ephemeral
    assert call.acknowledged


async def test_a_low_balance_check_that_fails_does_not_spoil_a_queued_job(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world.running() as bot:
        guild = world.discord.guild.id
        await bot.guild_settings.update(
            guild, low_balance_threshold=500, notice_channel_id=world.discord.channel.id
        )

        async def database_down(guild_id: int) -> bool:
            raise StorageError("The database is locked.")

        monkeypatch.setattr(bot.guild_settings, "claim_low_balance_notice", database_down)
        await world.imagine({"prompt": "still fine"})
        await world.result()
        await bot.jobs.wait_idle()
        assert await balance(world, bot) == 99
    # No apology anywhere (a private reply or a status edit): the request worked, only
    # the notice could not be checked.
    said = [json.dumps(r.json) for r in world.discord.requests if r.json is not None]
    assert said and not any("went wrong" in text for text in said)
