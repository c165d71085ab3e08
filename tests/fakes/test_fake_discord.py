"""Tests of the fake Discord itself, driven by a small real discord.py bot."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakes.fake_discord import CommandUnavailableError, FakeDiscord, run_client


def _png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "purple").save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


class Reroll(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"test:reroll:(?P<job>\d+)"):
    def __init__(self, job: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll",
                emoji="\N{GAME DIE}",
                style=discord.ButtonStyle.primary,
                custom_id=f"test:reroll:{job}",
            )
        )
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
    ) -> Reroll:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"Rerolling job {self.job}", ephemeral=True)


class Archive(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"test:archive:(?P<job>\d+)"
):
    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Archive", custom_id=f"test:archive:{job}"))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any
    ) -> Archive:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content="archived", attachments=[], view=None)


class PromptModal(discord.ui.Modal, title="Edit prompt"):
    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", max_length=200
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"New prompt: {self.prompt.value}")


class LabelModal(discord.ui.Modal, title="Refine"):
    """The newer layout: a Label (type 18) wrapping each input."""

    negative: discord.ui.Label[LabelModal] = discord.ui.Label(
        text="Negative prompt",
        component=discord.ui.TextInput(custom_id="negative", required=False),
    )
    steps: discord.ui.Label[LabelModal] = discord.ui.Label(
        text="Steps", component=discord.ui.TextInput(custom_id="steps", default="25")
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        negative = self.negative.component
        steps = self.steps.component
        assert isinstance(negative, discord.ui.TextInput)
        assert isinstance(steps, discord.ui.TextInput)
        await interaction.response.send_message(f"negative={negative.value} steps={steps.value}")


class TestBot(commands.Bot):
    """A minimal bot exercising what imagine-bot does with Discord."""

    __test__ = False

    def __init__(
        self, *, mentions: discord.AllowedMentions | None = None, dev_guild: int | None = None
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            allowed_mentions=mentions,
            guild_ready_timeout=0.05,
        )
        self.results: asyncio.Queue[Any] = asyncio.Queue()
        self.last_interaction: discord.Interaction | None = None
        self.dev_guild = dev_guild
        _add_commands(self)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Reroll, Archive)
        if self.dev_guild is None:
            await self.tree.sync()
        else:
            guild = discord.Object(self.dev_guild)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    async def result(self) -> Any:
        return await asyncio.wait_for(self.results.get(), 5)


class ShardedTestBot(commands.AutoShardedBot):
    __test__ = False

    def __init__(self) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.05,
        )
        self.seen: asyncio.Queue[int | None] = asyncio.Queue()

        @self.tree.command(name="where", description="Which shard am I on?")
        async def where(interaction: discord.Interaction) -> None:
            await self.seen.put(interaction.guild.shard_id if interaction.guild else None)
            await interaction.response.send_message("here")

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s between shards' IDENTIFYs; the fake needs no pause."""


def _add_commands(bot: TestBot) -> None:
    tree = bot.tree

    @tree.command(name="imagine", description="Draw something")
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        samples: app_commands.Range[int, 1, 4] = 1,
    ) -> None:
        bot.last_interaction = interaction
        await interaction.response.defer()
        files = [discord.File(io.BytesIO(PNG), f"image{i}.png") for i in range(samples)]
        view = discord.ui.View(timeout=None)
        view.add_item(Reroll(42))
        view.add_item(Archive(42))
        await interaction.followup.send(prompt, files=files, view=view)

    @tree.command(name="late", description="Answers too late")
    async def late(interaction: discord.Interaction, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await interaction.response.send_message("finally")
        except discord.HTTPException as error:
            await bot.results.put(error)

    @tree.command(name="edit", description="Opens a modal")
    async def edit(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal())

    @tree.command(name="refine", description="Opens a modal with labels")
    async def refine(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(LabelModal())

    @tree.command(name="pick", description="A select menu")
    async def pick(interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=30)
        menu: discord.ui.Select[discord.ui.View] = discord.ui.Select(
            custom_id="pick", options=[discord.SelectOption(label=x) for x in "abc"]
        )

        async def chosen(choice: discord.Interaction) -> None:
            await choice.response.send_message(f"picked {menu.values}")

        menu.callback = chosen  # type: ignore[method-assign]
        view.add_item(menu)
        await interaction.response.send_message("choose", view=view)

    @tree.command(name="ping", description="Mentions someone")
    async def ping(interaction: discord.Interaction, who: discord.Member) -> None:
        await interaction.response.send_message(f"hello {who.mention}")

    @tree.command(name="upload", description="Uploads n bytes")
    async def upload(interaction: discord.Interaction, size: int) -> None:
        await interaction.response.defer(ephemeral=True)
        try:
            await interaction.followup.send(file=discord.File(io.BytesIO(b"x" * size), "big.bin"))
        except discord.HTTPException as error:
            await bot.results.put(error)

    @tree.command(name="badbutton", description="An 81-character label")
    async def badbutton(interaction: discord.Interaction) -> None:
        view = discord.ui.View()
        button: discord.ui.Button[Any] = discord.ui.Button(label="ok", custom_id="bad")
        button._underlying.label = "x" * 81  # bypass discord.py's own checks
        view.add_item(button)
        try:
            await interaction.response.send_message("look", view=view)
        except discord.HTTPException as error:
            await bot.results.put(error)

    @tree.command(name="long", description="2001 characters")
    async def long(interaction: discord.Interaction) -> None:
        try:
            await interaction.response.send_message("x" * 2001)
        except discord.HTTPException as error:
            await bot.results.put(error)

    @tree.command(name="embeds", description="7,500 characters of embeds")
    async def embeds(interaction: discord.Interaction) -> None:
        big = [discord.Embed(description="x" * 2500) for _ in range(3)]
        try:
            await interaction.response.send_message(embeds=big)
        except discord.HTTPException as error:
            await bot.results.put(error)

    @tree.command(name="say", description="Posts in the channel")
    async def say(interaction: discord.Interaction, text: str) -> None:
        card = discord.File(io.BytesIO(PNG), "card.png")
        await interaction.response.send_message("posting", file=card, ephemeral=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        await interaction.channel.send(text)

    credits = app_commands.Group(name="credits", description="Credits")

    @credits.command(name="balance", description="Show the balance")
    async def balance(interaction: discord.Interaction) -> None:
        where = interaction.guild.name if interaction.guild else "DM"
        await interaction.response.send_message(f"Balance in {where}: 100", ephemeral=True)

    tree.add_command(credits)


async def test_login_ready_guilds_and_sync(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        assert bot.user is not None
        assert bot.user.id == fake_discord.bot_user.id
        assert bot.application_id == fake_discord.application_id
        assert bot.application is not None
        assert bot.application.owner.id == fake_discord.app_owner.id
        assert {g.id for g in bot.guilds} == {fake_discord.guild.id, fake_discord.guild2.id}
        guild = bot.get_guild(fake_discord.guild.id)
        assert guild is not None
        assert guild.me is not None
        assert guild.owner_id == fake_discord.guild_owner.id
        channel = bot.get_channel(fake_discord.channel.id)
        assert isinstance(channel, discord.TextChannel)
        assert channel.permissions_for(guild.me).send_messages
        locked = guild.get_channel(fake_discord.locked_channel.id)
        assert isinstance(locked, discord.TextChannel)
        assert not locked.permissions_for(guild.me).send_messages
        session = fake_discord.connected_sessions[0]
        assert session.identify["intents"] == discord.Intents.default().value

    sync = fake_discord.command_syncs[-1]
    assert sync.method == "PUT"
    assert sync.guild_id is None
    names = {command["name"] for command in sync.payload}
    assert {"imagine", "credits", "edit"} <= names
    credits = next(c for c in fake_discord.commands_for(None) if c["name"] == "credits")
    assert credits["options"][0]["name"] == "balance"
    assert credits["id"].isdigit()
    paths = [r.path for r in fake_discord.requests]
    assert paths[:2] == ["/users/@me", "/oauth2/applications/@me"]


async def test_slash_defer_and_followup_with_attachments(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("imagine", {"prompt": "a cat", "samples": 2})
        reply = await fake_discord.wait_for_followup(call)

    assert call.response_type == 5
    assert call.ack_latency is not None
    assert call.ack_latency < 1
    assert reply is call.original  # the follow-up replaced "thinking…"
    assert not reply.ephemeral
    assert not reply.loading
    assert reply.content == "a cat"
    assert [a["filename"] for a in reply.attachments] == ["image0.png", "image1.png"]
    assert reply.attachment_bytes(1) == PNG
    assert reply.attachments[0]["width"] == 8
    assert reply.button("Reroll")["custom_id"] == "test:reroll:42"
    assert fake_discord.channel_messages(fake_discord.channel) == [reply]
    upload = fake_discord.requests_to("POST", r"^/webhooks/")[0]
    assert [f.form_field for f in upload.files] == ["files[0]", "files[1]"]
    assert upload.allowed_mentions == {"parse": []}
    fake_discord.assert_no_pings()


async def test_button_reaches_dynamic_item(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("imagine", {"prompt": "a dog"})
        result = await fake_discord.wait_for_followup(call)
        click = await fake_discord.click(result, "Reroll", user=fake_discord.moderator)
        answer = await fake_discord.wait_for_followup(click)
        by_emoji = await fake_discord.click(result, emoji="\N{GAME DIE}")
        await fake_discord.wait_for_followup(by_emoji)

    assert answer.content == "Rerolling job 42"
    assert answer.ephemeral
    assert answer.recipient_id == fake_discord.moderator.id
    assert click.payload["message"]["id"] == str(result.id)
    with pytest.raises(LookupError):
        result.button("Delete")


async def test_update_message_callback_edits_the_clicked_message(
    fake_discord: FakeDiscord,
) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("imagine", {"prompt": "a fox"})
        result = await fake_discord.wait_for_followup(call)
        click = await fake_discord.click(result, "Archive")
        await fake_discord.wait_for(lambda: click.acknowledged)
    assert click.response_type == 7
    assert result.content == "archived"
    assert result.components == []
    assert result.attachments == []
    assert result.history[-1]["content"] == "a fox"
    with pytest.raises(LookupError):
        await fake_discord.click(result, "Reroll")


async def test_select_menu(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("pick")
        menu = await fake_discord.wait_for_followup(call)
        with pytest.raises(ValueError, match="no option"):
            await fake_discord.select(menu, ["z"])
        choice = await fake_discord.select(menu, ["b"])
        answer = await fake_discord.wait_for_followup(choice)
    assert answer.content == "picked ['b']"


async def test_dev_guild_sync_and_guild_commands(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none(), dev_guild=fake_discord.guild.id)
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("credits balance")
        reply = await fake_discord.wait_for_followup(call)
        with pytest.raises(CommandUnavailableError):
            await fake_discord.slash("credits balance", channel=fake_discord.dm_channel)
    assert fake_discord.command_syncs[-1].guild_id == fake_discord.guild.id
    assert fake_discord.commands_for(None) == []
    assert call.data["guild_id"] == str(fake_discord.guild.id)
    assert reply.content == "Balance in Fake Guild: 100"


async def test_modal_sent_and_submitted(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("edit")
        modal = await fake_discord.wait_for_modal(call)
        assert modal.title == "Edit prompt"
        with pytest.raises(ValueError, match="no field"):
            await fake_discord.submit_modal(call, {"Nope": "x"})
        submitted = await fake_discord.submit_modal(call, {"Prompt": "a bird"})
        reply = await fake_discord.wait_for_followup(submitted)
    assert reply.content == "New prompt: a bird"
    assert call.response_type == 9


async def test_label_modal_is_submitted_with_its_structure(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("refine")
        submitted = await fake_discord.submit_modal(call, {"Negative prompt": "blurry"})
        reply = await fake_discord.wait_for_followup(submitted)
    assert [c["type"] for c in submitted.data["components"]] == [18, 18]
    assert reply.content == "negative=blurry steps=25"


async def test_late_answer_gets_unknown_interaction(fake_discord: FakeDiscord) -> None:
    fake_discord.ack_deadline = 0.3
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("late", {"delay": 0.4})
        error = await bot.result()
    assert isinstance(error, discord.NotFound)
    assert error.code == 10062
    assert not call.acknowledged
    assert [(c.status, c.code) for c in call.rejected_callbacks] == [(404, 10062)]


async def test_delayed_route_is_held_until_released_or_for_its_seconds(
    fake_discord: FakeDiscord,
) -> None:
    callback = r"^/interactions/\d+/[^/]+/callback$"
    held = fake_discord.delay_next("POST", callback, 10.0)
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("imagine", {"prompt": "a cat"})
        await fake_discord.wait_for(lambda: held.holding == 1, what="the held callback")
        await asyncio.sleep(0.05)
        assert not call.acknowledged and call.callbacks == []
        held.release()
        reply = await fake_discord.wait_for_followup(call)
        assert reply.content == "a cat"
        assert call.acknowledged and (held.hits, held.holding) == (1, 0)

        # A timed delay is Discord's latency: the acknowledgement lands that much later...
        fake_discord.delay_next("POST", callback, 0.2)
        slow = await fake_discord.slash("credits balance")
        await fake_discord.wait_for_followup(slow)
        assert slow.ack_latency is not None and slow.ack_latency >= 0.2
        # ...and Discord's 3 s are checked when the request gets through.
        fake_discord.ack_deadline = 0.1
        fake_discord.delay_next("POST", callback, 0.2)
        late = await fake_discord.slash("late", {"delay": 0})
        error = await bot.result()
        assert isinstance(error, discord.NotFound) and error.code == 10062
        assert not late.acknowledged
        # Spent delays hold nothing.
        fake_discord.ack_deadline = 3.0
        quick = await fake_discord.slash("credits balance")
        await fake_discord.wait_for_followup(quick)
        assert quick.ack_latency is not None and quick.ack_latency < 0.2


async def test_second_callback_is_already_acknowledged(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("credits balance")
        await fake_discord.wait_for_followup(call)
        url = f"{fake_discord.api_url}/interactions/{call.id}/{call.token}/callback"
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json={"type": 4, "data": {"content": "again"}}) as response,
        ):
            assert response.status == 400
            assert response.headers["Content-Type"] == "application/json"
            assert (await response.json())["code"] == 40060


async def test_mentions_without_allowed_mentions_are_detected(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=None)
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("ping", {"who": fake_discord.moderator})
        message = await fake_discord.wait_for_followup(call)
    assert message.pings
    assert message.mentions == [fake_discord.moderator.id]
    assert fake_discord.pings(strict=False)
    with pytest.raises(AssertionError, match="AllowedMentions"):
        fake_discord.assert_no_pings()


async def test_mentions_with_allowed_mentions_none_do_not_ping(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("ping", {"who": fake_discord.moderator})
        message = await fake_discord.wait_for_followup(call)
    assert not message.pings
    fake_discord.assert_no_pings()


async def test_upload_over_interaction_limit_is_413(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("upload", {"size": 2048}, attachment_size_limit=1024)
        error = await bot.result()
        ok = await fake_discord.slash("upload", {"size": 1000}, attachment_size_limit=1024)
        small = await fake_discord.wait_for_followup(ok)
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (413, 40005)
    assert call.original is not None
    assert call.original.loading
    assert small.ephemeral
    assert small.attachments[0]["size"] == 1000


async def test_invalid_bodies_are_rejected_and_recorded(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        await fake_discord.slash("badbutton")
        label_error = await bot.result()
        await fake_discord.slash("long")
        content_error = await bot.result()
        await fake_discord.slash("embeds")
        embeds_error = await bot.result()
    for error in (label_error, content_error, embeds_error):
        assert isinstance(error, discord.HTTPException)
        assert (error.status, error.code) == (400, 50035)
    violations = fake_discord.take_violations()
    assert [v.operation_id for v in violations] == ["create_interaction_response"] * 3
    assert "label: length 81 violates maxLength 80" in violations[0].message
    assert "content: length 2001 violates maxLength 2000" in violations[1].message
    assert "7500 characters in total exceed 6000" in violations[2].message


async def test_rate_limit_is_retried(fake_discord: FakeDiscord) -> None:
    failure = fake_discord.fail_next("POST", r"^/channels/\d+/messages$", 429, retry_after=0.05)
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        await fake_discord.slash("say", {"text": "hello"})
        message = await fake_discord.wait_for_message(fake_discord.channel)
    assert message.content == "hello"
    assert failure.hits == 1
    statuses = [r.status for r in fake_discord.requests_to("POST", r"^/channels/\d+/messages$")]
    assert statuses == [429, 200]
    callback = fake_discord.interactions[0].original
    assert callback is not None
    assert callback.attachment_bytes("card.png") == PNG


async def test_channel_messages_limits_and_permissions(fake_discord: FakeDiscord) -> None:
    fake_discord.guild.filesize_limit = 1000
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        channel = bot.get_channel(fake_discord.channel.id)
        locked = bot.get_channel(fake_discord.locked_channel.id)
        assert isinstance(channel, discord.TextChannel)
        assert isinstance(locked, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as too_big:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 1001), "big.bin"))
        with pytest.raises(discord.Forbidden) as forbidden:
            await locked.send("hi")
        sent = await channel.send("first", file=discord.File(io.BytesIO(PNG), "a.png"))
        await sent.edit(content="second")
        await sent.delete()
        with pytest.raises(discord.NotFound) as gone:
            await channel.fetch_message(sent.id)
    assert (too_big.value.status, too_big.value.code) == (413, 40005)
    assert forbidden.value.code == 50013
    assert gone.value.code == 10008
    stored = fake_discord.get_message(sent.id)
    assert stored.deleted
    assert stored.content == "second"
    assert stored.history[0]["content"] == "first"
    assert stored.attachment_bytes("a.png") == PNG
    assert fake_discord.channel_messages(fake_discord.channel) == []
    fake_discord.assert_no_pings()


async def test_slash_helper_follows_the_synced_commands(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        with pytest.raises(ValueError, match=r"outside \[1, 4\]"):
            await fake_discord.slash("imagine", {"prompt": "x", "samples": 9})
        with pytest.raises(ValueError, match="requires"):
            await fake_discord.slash("imagine", {})
        with pytest.raises(CommandUnavailableError):
            await fake_discord.slash("credits")
        with pytest.raises(CommandUnavailableError):
            await fake_discord.slash("nope")
        dm = await fake_discord.slash("credits balance", channel=fake_discord.dm_channel)
        in_dm = await fake_discord.wait_for_followup(dm)
        other = await fake_discord.slash(
            "credits balance", channel=fake_discord.guild2.text_channels()[0]
        )
        in_guild2 = await fake_discord.wait_for_followup(other)
    assert in_dm.content == "Balance in DM: 100"
    assert "member" not in dm.payload
    assert in_guild2.content == "Balance in Second Guild: 100"


async def test_expired_token_and_unhandled_route(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        call = await fake_discord.slash("imagine", {"prompt": "late edit"})
        await fake_discord.wait_for_followup(call)
        fake_discord.advance(16 * 60)
        assert bot.last_interaction is not None
        with pytest.raises(discord.HTTPException) as expired:
            await bot.last_interaction.edit_original_response(content="too late")
        with pytest.raises(discord.NotFound):
            await bot.http.request(
                discord.http.Route("GET", "/guilds/{guild_id}/bans", guild_id=fake_discord.guild.id)
            )
    assert (expired.value.status, expired.value.code) == (401, 50027)
    with pytest.raises(AssertionError, match="does not serve"):
        fake_discord.assert_no_unhandled()
    fake_discord.unhandled.clear()


async def test_gateway_drop_resumes_and_refusal(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        session = fake_discord.connected_sessions[0]
        assert await fake_discord.drop_gateway() == 1
        await fake_discord.wait_for(lambda: session.resumes == 1 and session.connected)
        await fake_discord.drop_gateway(refuse_for=0.2)
        await fake_discord.wait_for(lambda: session.resumes == 2 and session.connected, timeout=10)
        call = await fake_discord.slash("credits balance")
        await fake_discord.wait_for_followup(call)
    assert fake_discord.gateway.refused_attempts >= 1
    with pytest.raises(RuntimeError, match="no connected gateway session"):
        await fake_discord.slash("credits balance")


async def test_autosharded_bot_connects_both_shards(fake_discord: FakeDiscord) -> None:
    fake_discord.recommended_shards = 2
    bot = ShardedTestBot()
    async with run_client(bot, fake_discord):
        shards = sorted(s.shard_id for s in fake_discord.connected_sessions)
        assert shards == [0, 1]
        assert bot.shard_count == 2
        guild = bot.get_guild(fake_discord.guild.id)
        guild2 = bot.get_guild(fake_discord.guild2.id)
        assert guild is not None
        assert guild2 is not None
        assert (guild.shard_id, guild2.shard_id) == (0, 1)
        await fake_discord.slash("where", channel=fake_discord.guild2.text_channels()[0])
        assert await asyncio.wait_for(bot.seen.get(), 5) == 1
    assert [i.get("shard") for i in fake_discord.gateway.identifies] == [[0, 2], [1, 2]]


async def test_restart_with_a_new_bot(fake_discord: FakeDiscord) -> None:
    for round_ in range(2):
        bot = TestBot(mentions=discord.AllowedMentions.none())
        async with run_client(bot, fake_discord):
            call = await fake_discord.slash("credits balance")
            reply = await fake_discord.wait_for_followup(call)
            assert reply.content.endswith("100")
        assert bot.is_closed(), round_
    assert len(fake_discord.command_syncs) == 2
    assert len(fake_discord.gateway.identifies) == 2  # a new session, not a RESUME
    assert [s.resumes for s in fake_discord.gateway.sessions] == [0, 0]


async def test_failed_start_is_raised_and_seeded_commands(fake_discord: FakeDiscord) -> None:
    with pytest.raises(discord.LoginFailure):
        async with run_client(TestBot(), fake_discord, token="wrong"):
            pass
    fake_discord.seed_commands([{"name": "where", "description": "Which shard?"}])
    bot = ShardedTestBot()
    bot.setup_hook = _no_sync  # type: ignore[method-assign]
    async with run_client(bot, fake_discord):
        await fake_discord.slash("where")
        assert await asyncio.wait_for(bot.seen.get(), 5) == 0
    assert fake_discord.command_syncs == []


async def _no_sync() -> None:
    """A bot whose tree is unchanged does not sync."""


async def test_guild_join_and_user_message_events(fake_discord: FakeDiscord) -> None:
    newcomer = fake_discord.add_guild("Newcomer", with_bot=False)
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        assert bot.get_guild(newcomer.id) is None
        joined = asyncio.ensure_future(bot.wait_for("guild_join", timeout=5))
        await fake_discord.join_guild(newcomer)
        assert (await joined).id == newcomer.id
        said = asyncio.ensure_future(bot.wait_for("message", timeout=5))
        await fake_discord.user_message(fake_discord.channel, fake_discord.member, "hi bot")
        message = await said
    assert message.author.id == fake_discord.member.id
    assert message.channel.id == fake_discord.channel.id


async def test_raw_http_contract() -> None:
    async with FakeDiscord() as fake:
        headers = {"Authorization": f"Bot {fake.token}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{fake.api_url}/users/@me", headers=headers) as response:
                assert response.headers["Content-Type"] == "application/json"
                assert "X-RateLimit-Bucket" in response.headers
                assert (await response.json())["bot"] is True
            async with session.get(f"{fake.api_url}/users/@me") as response:
                assert response.status == 401
        assert fake.unhandled == []


async def test_enforce_nonce_and_history(fake_discord: FakeDiscord) -> None:
    bot = TestBot(mentions=discord.AllowedMentions.none())
    async with run_client(bot, fake_discord):
        channel = bot.get_channel(fake_discord.channel.id)
        assert isinstance(channel, discord.TextChannel)
        before = await channel.send("before")
        # discord.py sends every nonce with enforce_nonce: a retry returns the first message.
        first = await channel.send("result", nonce="im7p0")
        again = await channel.send("result", nonce="im7p0")
        other = await channel.send("other", nonce="im8p0")
        after = [m.id async for m in channel.history(after=before, oldest_first=True)]
        newest = [m.id async for m in channel.history(limit=2)]
        around = [m.id async for m in channel.history(around=first, limit=3)]
        fetched = await channel.fetch_message(first.id)
    assert again.id == first.id
    assert first.nonce == "im7p0"
    assert fetched.nonce is None  # Discord does not keep the nonce on later reads
    assert after == [first.id, other.id]
    assert newest == [other.id, first.id]
    assert set(around) == {before.id, first.id, other.id}
    assert [m.content for m in fake_discord.channel_messages(fake_discord.channel)] == [
        "before",
        "result",
        "other",
    ]
    requests = fake_discord.requests_to("POST", r"^/channels/\d+/messages$")
    assert all(r.message_body and r.message_body.get("enforce_nonce") for r in requests[1:])
