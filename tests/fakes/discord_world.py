"""The fake Discord's world and records: users, guilds, channels, messages, commands.

:class:`DiscordWorld` is the state half of :class:`~tests.fakes.fake_discord.FakeDiscord`
(which adds the server, clock, gateway control, interactions and waiting):
building the world, rendering it as payloads, and querying/asserting on what
was recorded.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import discord

from tests.fakes.discord_gateway import GUILD_MEMBERS, GatewaySession
from tests.fakes.discord_interactions import Actor
from tests.fakes.discord_messages import mention_targets
from tests.fakes.discord_records import (
    CommandSync,
    InjectedDelay,
    InjectedFailure,
    InteractionRecord,
    ModalRecord,
    RequestRecord,
    Violation,
)
from tests.fakes.discord_state import (
    BOT_DEFAULT_PERMISSIONS,
    DEFAULT_FILE_LIMIT,
    EVERYONE_DEFAULT_PERMISSIONS,
    ChannelType,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    FileRecord,
    Overwrite,
    SnowflakeFactory,
    StoredMessage,
)

__all__ = ["DiscordWorld"]

_MIB = 1024 * 1024
_P = discord.Permissions


class DiscordWorld:
    """State and records of the fake Discord.

    The default world: application/bot user, the application owner, ``guild``
    (shard 0 of 2) with ``guild_owner``, ``moderator`` (Manage Server + Manage
    Messages), ``member`` (plain) and ``app_owner_member``; channels ``channel``
    (#general), ``art_channel`` and ``locked_channel`` (the bot may not send);
    ``guild2`` (shard 1 of 2) where ``member`` is also a member; ``dm_channel``
    between ``member`` and the bot.
    """

    def __init__(self) -> None:
        self.ids = SnowflakeFactory()
        self.dm_attachment_size_limit = DEFAULT_FILE_LIMIT
        self.application_flags = 0
        # recorded
        self.requests: list[RequestRecord] = []
        self.violations: list[Violation] = []
        self.unhandled: list[RequestRecord] = []
        self.command_syncs: list[CommandSync] = []
        self.interactions: list[InteractionRecord] = []
        self.modals: list[ModalRecord] = []
        self.failures: list[InjectedFailure] = []
        self.delays: list[InjectedDelay] = []
        self.internal_errors: list[str] = []  # bugs in the fake itself
        # world
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: list[StoredMessage] = []
        self.messages_by_id: dict[int, StoredMessage] = {}
        self.attachments: dict[int, FileRecord] = {}
        self.command_store: dict[int | None, list[dict[str, Any]]] = {}
        self.interactions_by_id: dict[int, InteractionRecord] = {}
        self.interactions_by_token: dict[str, InteractionRecord] = {}
        self._tick = asyncio.Event()
        self._build_world()

    # -- world ---------------------------------------------------------------------------

    def _build_world(self) -> None:
        self.application_id = self.ids.next()
        self.bot_user = self.add_user("Imagine", bot=True, user_id=self.application_id)
        self.app_owner = self.add_user("app-owner")
        self.guild = self.add_guild("Fake Guild", owner=self.add_user("guild-owner"), shard=(0, 2))
        self.guild_owner = self.guild.members[self.guild.owner_id]
        self.channel = self.guild.text_channels()[0]
        self.art_channel = self.add_text_channel(self.guild, "art")
        bot_role = next(r for r in self.guild.roles.values() if r.bot_id == self.bot_user.id)
        self.locked_channel = self.add_text_channel(
            self.guild,
            "locked",
            overwrites=[
                Overwrite(bot_role.id, 0, deny=_P(send_messages=True, attach_files=True).value)
            ],
        )
        self.moderator = self.add_member(
            self.guild,
            "moderator",
            permissions=_P(manage_guild=True, manage_messages=True).value,
            role_name="Moderator",
        )
        self.member = self.add_member(self.guild, "member")
        self.app_owner_member = self.add_member(self.guild, self.app_owner)
        self.guild2 = self.add_guild(
            "Second Guild", owner=self.add_user("second-owner"), shard=(1, 2)
        )
        self.add_member(self.guild2, self.member.user)
        self.dm_channel = self.dm_channel_for(self.member.user)

    def add_user(self, username: str, *, bot: bool = False, user_id: int | None = None) -> FakeUser:
        user = FakeUser(user_id or self.ids.next(), username, global_name=username.title(), bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        owner: FakeUser | None = None,
        filesize_limit: int = DEFAULT_FILE_LIMIT,
        premium_tier: int | None = None,
        channels: tuple[str, ...] = ("general",),
        shard: tuple[int, int] | None = None,
        with_bot: bool = True,
    ) -> FakeGuild:
        """A guild; ``shard=(id, count)`` picks an id on that shard; ``with_bot=False``
        leaves the bot out until :meth:`join_guild`.

        discord.py derives ``Guild.filesize_limit`` from the premium tier (10 MiB
        for tiers 0-1, 50 MiB tier 2, 100 MiB tier 3); the fake enforces
        ``filesize_limit`` on channel messages, which may be set to anything.
        """
        predicate = None if shard is None else (lambda i: (i >> 22) % shard[1] == shard[0])
        guild_id = self.ids.next(predicate)
        owner = owner or self.add_user(f"{name.lower().replace(' ', '-')}-owner")
        if premium_tier is None:
            premium_tier = (
                3 if filesize_limit >= 100 * _MIB else 2 if filesize_limit >= 50 * _MIB else 0
            )
        guild = FakeGuild(
            guild_id,
            name,
            owner.id,
            filesize_limit=filesize_limit,
            premium_tier=premium_tier,
        )
        guild.roles[guild_id] = FakeRole(guild_id, "@everyone", EVERYONE_DEFAULT_PERMISSIONS)
        self.guilds[guild_id] = guild
        guild.members[owner.id] = FakeMember(owner, guild)
        for channel_name in channels:
            self.add_text_channel(guild, channel_name)
        if with_bot:
            self._add_bot(guild)
        return guild

    def _add_bot(self, guild: FakeGuild) -> FakeMember:
        role = next((r for r in guild.roles.values() if r.bot_id == self.bot_user.id), None)
        if role is None:
            role = FakeRole(
                self.ids.next(),
                self.bot_user.username,
                BOT_DEFAULT_PERMISSIONS,
                position=1,
                managed=True,
                bot_id=self.bot_user.id,
            )
            guild.roles[role.id] = role
        member = FakeMember(self.bot_user, guild, roles=[role.id])
        guild.members[self.bot_user.id] = member
        return member

    def add_role(self, guild: FakeGuild, name: str, permissions: int = 0) -> FakeRole:
        role = FakeRole(self.ids.next(), name, permissions, position=len(guild.roles))
        guild.roles[role.id] = role
        return role

    def add_member(
        self,
        guild: FakeGuild,
        user: FakeUser | str,
        *,
        roles: tuple[FakeRole, ...] = (),
        permissions: int | None = None,
        role_name: str | None = None,
        nick: str | None = None,
    ) -> FakeMember:
        """Add a member; ``permissions`` gives them a new role with exactly those bits."""
        if isinstance(user, str):
            user = self.add_user(user)
        role_ids = [role.id for role in roles]
        if permissions is not None:
            role_ids.append(
                self.add_role(guild, role_name or f"{user.username}-role", permissions).id
            )
        member = FakeMember(user, guild, roles=role_ids, nick=nick)
        guild.members[user.id] = member
        return member

    def add_text_channel(
        self,
        guild: FakeGuild,
        name: str,
        *,
        overwrites: list[Overwrite] | None = None,
        topic: str | None = None,
    ) -> FakeChannel:
        channel = FakeChannel(
            self.ids.next(),
            ChannelType.TEXT,
            name=name,
            guild_id=guild.id,
            position=len(guild.channels),
            overwrites=list(overwrites or []),
            topic=topic,
        )
        guild.channels[channel.id] = channel
        self.channels[channel.id] = channel
        return channel

    def dm_channel_for(self, user: FakeUser) -> FakeChannel:
        for channel in self.channels.values():
            if channel.is_dm and channel.recipients == [user]:
                return channel
        channel = FakeChannel(self.ids.next(), ChannelType.DM, recipients=[user])
        self.channels[channel.id] = channel
        return channel

    def bot_guilds(self) -> list[FakeGuild]:
        return [g for g in self.guilds.values() if self.bot_user.id in g.members]

    def bot_permissions(self, channel: FakeChannel) -> int:
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is None or self.bot_user.id not in guild.members:
            return 0
        return guild.permissions_in(guild.members[self.bot_user.id], channel)

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "imagine-bot under test",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": self.application_flags,
            "owner": self.app_owner.payload(),
            "team": None,
            "bot": self.bot_user.payload(),
            "interactions_endpoint_url": None,
            "redirect_uris": [],
            "tags": [],
            "integration_types_config": {"0": {}},
            "approximate_guild_count": len(self.bot_guilds()),
        }

    def guild_create_payload(self, guild: FakeGuild, session: GatewaySession) -> dict[str, Any]:
        members = None
        if not session.intents & GUILD_MEMBERS:
            members = [guild.members[self.bot_user.id]]
        return guild.payload(members=members)

    # -- records ---------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake every :meth:`wait_for` to re-check its predicate."""
        self._tick.set()
        self._tick = asyncio.Event()

    def record_request(self, record: RequestRecord) -> None:
        self.requests.append(record)
        self.notify()

    def store_message(self, message: StoredMessage) -> None:
        self.messages.append(message)
        self.messages_by_id[message.id] = message
        self.notify()

    # -- queries ---------------------------------------------------------------------------

    def commands_for(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced commands (global when ``guild_id`` is None), as Discord stores them."""
        return self.command_store.setdefault(guild_id, [])

    def channel_messages(
        self, channel: FakeChannel | int, *, include_deleted: bool = False
    ) -> list[StoredMessage]:
        """Messages everyone in the channel sees (no ephemeral ones), oldest first."""
        channel_id = channel if isinstance(channel, int) else channel.id
        return [
            m
            for m in self.messages
            if m.channel_id == channel_id and not m.ephemeral and (include_deleted or not m.deleted)
        ]

    def ephemeral_messages(self, user: Actor | None = None) -> list[StoredMessage]:
        user_id = user if isinstance(user, int) or user is None else user.id
        return [m for m in self.messages if m.ephemeral and user_id in (None, m.recipient_id)]

    def get_message(self, message: StoredMessage | discord.abc.Snowflake | int) -> StoredMessage:
        message_id = message if isinstance(message, int) else message.id
        try:
            return self.messages_by_id[message_id]
        except KeyError:
            raise LookupError(f"the fake has no message {message_id}") from None

    def requests_to(self, method: str, path_regex: str) -> list[RequestRecord]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    # -- assertions --------------------------------------------------------------------------

    def take_violations(self) -> list[Violation]:
        """Return and forget the violations (for tests that provoke them on purpose)."""
        taken, self.violations = self.violations, []
        return taken

    def assert_no_violations(self) -> None:
        if self.violations:
            details = "\n".join(f"  {v}" for v in self.violations)
            raise AssertionError(f"requests Discord would reject (400/50035):\n{details}")

    def assert_no_unhandled(self) -> None:
        if self.unhandled:
            details = "\n".join(f"  {r.method} {r.path} ({r.operation_id})" for r in self.unhandled)
            raise AssertionError(f"requests the fake Discord does not serve:\n{details}")

    def pings(self, *, strict: bool = True) -> list[RequestRecord]:
        """Successful message writes that could notify someone.

        strict (DESIGN §5/§7): every message create/edit must carry
        ``allowed_mentions`` with ``"parse": []`` and no ``users``/``roles``/
        ``replied_user``. Not strict: only writes whose content mentions someone
        the ``allowed_mentions`` (or their absence: everything) let through.
        """
        found = []
        for record in self.requests:
            body = record.message_body
            if body is None or not record.ok:
                continue
            allowed = body.get("allowed_mentions")
            safe = (
                isinstance(allowed, dict)
                and allowed.get("parse") == []
                and not allowed.get("users")
                and not allowed.get("roles")
                and not allowed.get("replied_user")
            )
            if safe:
                continue
            if strict or mention_targets(str(body.get("content") or ""), allowed):
                found.append(record)
        return found

    def assert_no_pings(self, *, strict: bool = True) -> None:
        offending = self.pings(strict=strict)
        if offending:
            details = "\n".join(
                f"  {r.method} {r.path}: allowed_mentions={r.allowed_mentions!r}" for r in offending
            )
            raise AssertionError(f"messages sent without AllowedMentions.none():\n{details}")

    def check(self) -> None:
        """What the fixture asserts at teardown: no invalid bodies, no unhandled routes,
        no failure inside the fake itself."""
        if self.internal_errors:
            raise AssertionError(f"the fake Discord itself failed: {self.internal_errors}")
        self.assert_no_violations()
        self.assert_no_unhandled()
