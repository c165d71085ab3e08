"""Reroll, Edit and Delete: persistent buttons that survive a restart of the bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import World, embed_field

pytestmark = pytest.mark.timeout(60)


async def test_reroll_after_a_restart_makes_a_new_seed_and_spends_one_credit(world: World) -> None:
    requester = world.discord.member
    async with world.running():
        await world.imagine({"prompt": "a fox", "seed": 42, "guidance_scale": 12}, user=requester)
        original = await world.result()
    # A new process: a new Bot instance on the same database, nothing in memory.
    async with world.running() as bot:
        click = await world.discord.click(original, "Reroll", user=requester)
        rerolled = await world.result(predicate=lambda m: m.id != original.id)
        assert click.ack_latency is not None and click.ack_latency < 3
        assert await bot.ledger.balance(world.discord.guild.id) == 98
        assert await bot.ledger.verify()
    first, second = world.segmind.requests
    assert first.json["seed"] == 42
    assert second.json["seed"] != 42
    assert {k: v for k, v in second.json.items() if k != "seed"} == {
        k: v for k, v in first.json.items() if k != "seed"
    }
    assert embed_field(rerolled, "Seed") == str(second.json["seed"])
    world.discord.assert_no_pings()


async def test_reroll_is_billed_to_whoever_clicks(world: World) -> None:
    async with world.running() as bot:
        await world.imagine({"prompt": "an owl"}, user=world.discord.member)
        original = await world.result()
        await world.discord.click(original, "Reroll", user=world.discord.moderator)
        rerolled = await world.result(predicate=lambda m: m.id != original.id)
        job_id = int(rerolled.embeds[0]["footer"]["text"].removeprefix("Job #"))
        job = await bot.ledger.get_job(job_id)
        assert job is not None and job.user_id == world.discord.moderator.id
        assert job.parent_job_id is not None


async def test_edit_opens_a_prefilled_modal_and_keeps_the_other_parameters(world: World) -> None:
    requester = world.discord.member
    async with world.running():
        await world.imagine(
            {
                "prompt": "a red car",
                "negative_prompt": "rain",
                "num_inference_steps": 33,
                "img_width": 1024,
                "scheduler": "P-Sampler",
            },
            user=requester,
        )
        original = await world.result()
        click = await world.discord.click(original, "Edit", user=requester)
        modal = await world.discord.wait_for_modal(click)
        fields = {c["custom_id"]: c for c in _text_inputs(modal.data)}
        assert [f.get("value") for f in fields.values()] == ["a red car", "rain"]
        await world.discord.submit_modal(click, {"Prompt": "a blue car", "Negative prompt": "snow"})
        edited = await world.result(predicate=lambda m: m.id != original.id)
    first, second = world.segmind.requests
    assert second.json["prompt"] == "a blue car"
    assert second.json["negative_prompt"] == "snow"
    for name in (
        "num_inference_steps",
        "img_width",
        "img_height",
        "scheduler",
        "guidance_scale",
        "samples",
    ):
        assert second.json[name] == first.json[name], name
    assert edited.embeds[0]["description"] == "a blue car"


def _text_inputs(payload: dict) -> list[dict]:
    found: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == 4:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload)
    return found


async def test_delete_is_for_the_requester_or_moderators(world: World) -> None:
    discord = world.discord
    stranger = discord.add_member(discord.guild, "stranger")
    async with world.running() as bot:
        await world.imagine({"prompt": "a boat"}, user=discord.member)
        result = await world.result()
        refused = await discord.click(result, "Delete", user=stranger)
        reply = await world.reply(refused, "Only the member who asked")
        assert reply.ephemeral
        assert not discord.get_message(result.id).deleted
        await discord.click(result, "Delete", user=discord.member)
        await discord.wait_for(lambda: discord.get_message(result.id).deleted, what="the delete")
        assert await bot.ledger.balance(discord.guild.id) == 99  # deleting refunds nothing


async def test_moderators_can_delete_others_results(world: World) -> None:
    discord = world.discord
    async with world.running():
        await world.imagine({"prompt": "a kite"}, user=discord.member)
        result = await world.result()
        await discord.click(result, "Delete", user=discord.moderator)
        await discord.wait_for(lambda: discord.get_message(result.id).deleted, what="the delete")


async def test_reroll_without_credits_says_so_and_calls_nothing(world: World) -> None:
    async with world.running() as bot:
        await world.imagine({"prompt": "a tree"}, user=world.discord.member)
        result = await world.result()
        await bot.ledger.set_balance(world.discord.guild.id, 0, actor_id=None)
        click = await world.discord.click(result, "Reroll", user=world.discord.member)
        reply = await world.reply(click, "credits")
        assert "0" in reply.content
    assert world.segmind.calls == 1


async def test_buttons_of_an_unknown_job_answer_clearly(world: World, tmp_path: Path) -> None:
    async with world.running():
        await world.imagine({"prompt": "a river"}, user=world.discord.member)
        result = await world.result()
    # Another database (e.g. it was deleted): the job behind the buttons is gone.
    async with world.running(database_url=f"sqlite:///{tmp_path / 'other.db'}"):
        for label in ("Reroll", "Edit"):
            click = await world.discord.click(result, label, user=world.discord.member)
            await world.reply(click, "can't find the settings")
    assert world.segmind.calls == 1


async def test_only_the_requester_or_a_moderator_may_reroll_or_edit(world: World) -> None:
    discord = world.discord
    stranger = discord.add_member(discord.guild, "stranger")
    async with world.running() as bot:
        await world.imagine({"prompt": "a fox"}, user=discord.member)
        result = await world.result()
        for label in ("Reroll", "Edit"):
            click = await discord.click(result, label, user=stranger, locale="de")
            reply = await world.reply(click, "Nur das Mitglied")
            assert reply.ephemeral and "neu würfeln oder bearbeiten" in reply.content
            assert click.acknowledged and click.response_type == 4  # refused at once, privately
        assert await bot.ledger.balance(discord.guild.id) == 99
        await discord.click(result, "Reroll", user=discord.moderator)
        await world.result(predicate=lambda m: m.id != result.id)
    assert world.segmind.calls == 2
