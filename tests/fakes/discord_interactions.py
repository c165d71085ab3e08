"""Building INTERACTION_CREATE payloads the way Discord's client would.

Slash commands take their option types (and limits) from the commands the bot
actually synced; buttons and selects come from the components of the stored
message; modal submissions mirror the modal the bot opened. Anything a real
Discord client would not let a user do raises :class:`CommandUnavailableError` or
``ValueError`` here, so a test cannot exercise an impossible path by accident.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from tests.fakes.discord_records import InteractionRecord, ModalRecord
from tests.fakes.discord_state import (
    ALL_PERMISSIONS,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    FileRecord,
    StoredMessage,
    walk_components,
)

if TYPE_CHECKING:
    from tests.fakes.fake_discord import FakeDiscord

__all__ = ["Actor", "CommandUnavailableError", "build_click", "build_modal_submit", "build_slash"]

_ADMINISTRATOR = 1 << 3
Actor = FakeUser | FakeMember | int


class CommandUnavailableError(ValueError):
    """A real Discord client would not offer this command/component to this user here."""


def _bot_permissions(fake: FakeDiscord, channel: FakeChannel) -> int:
    return fake.bot_permissions(channel) if not channel.is_dm else 0


def base_payload(
    fake: FakeDiscord,
    kind: int,
    *,
    user: FakeUser,
    member: FakeMember | None,
    channel: FakeChannel,
    guild: FakeGuild | None,
    data: dict[str, Any],
    locale: str,
    attachment_size_limit: int | None,
    message: StoredMessage | None = None,
) -> tuple[dict[str, Any], int]:
    interaction_id = fake.ids.next()
    if attachment_size_limit is None:
        attachment_size_limit = guild.filesize_limit if guild else fake.dm_attachment_size_limit
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(fake.application_id),
        "type": kind,
        "token": "fake-" + secrets.token_urlsafe(48),
        "version": 1,
        "data": data,
        "channel_id": str(channel.id),
        "locale": locale,
        "app_permissions": str(_bot_permissions(fake, channel)),
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": attachment_size_limit,
    }
    if guild is not None and member is not None:
        permissions = guild.permissions_in(member, channel)
        payload.update(
            guild_id=str(guild.id),
            guild_locale=guild.preferred_locale,
            guild=guild.partial(),
            member={**member.payload(), "permissions": str(permissions)},
            channel={**channel.payload(), "permissions": str(permissions)},
            context=0,
            authorizing_integration_owners={"0": str(guild.id)},
        )
    else:
        payload.update(
            user=user.payload(),
            channel=channel.payload(),
            context=1,
            authorizing_integration_owners={"0": "0"},
        )
    if message is not None:
        payload["message"] = message.payload
    return payload, attachment_size_limit


def resolve_actor(
    fake: FakeDiscord, actor: Actor | None, channel: FakeChannel
) -> tuple[FakeUser, FakeMember | None, FakeGuild | None]:
    """The user (and member, in a guild channel) acting in ``channel``."""
    guild = fake.guilds.get(channel.guild_id or 0) if not channel.is_dm else None
    if actor is None:
        actor = channel.recipients[0] if channel.is_dm else fake.member.user
    if isinstance(actor, int):
        actor = fake.users[actor]
    user = actor.user if isinstance(actor, FakeMember) else actor
    if guild is None:
        if channel.is_dm and user not in channel.recipients:
            raise ValueError(f"{user!r} is not a recipient of DM channel {channel.id}")
        return user, None, None
    member = guild.members.get(user.id)
    if member is None:
        raise ValueError(f"{user!r} is not a member of {guild!r}")
    return user, member, guild


# -- slash commands ------------------------------------------------------------------


def _find_command(fake: FakeDiscord, name: str, guild: FakeGuild | None) -> dict[str, Any]:
    scopes: list[int | None] = [guild.id] if guild is not None else []
    scopes.append(None)
    for scope in scopes:
        for command in fake.command_store.get(scope, []):
            if command["name"] == name and command.get("type", 1) == 1:
                return command
    synced = {
        f"/{c['name']} ({'global' if scope is None else scope})"
        for scope, commands in fake.command_store.items()
        for c in commands
    }
    raise CommandUnavailableError(
        f"/{name} was not synced here; synced: {sorted(synced) or 'none'}"
    )


def _check_available(
    command: dict[str, Any],
    *,
    guild: FakeGuild | None,
    member: FakeMember | None,
    channel: FakeChannel,
    override: bool,
) -> None:
    name = command["name"]
    if guild is None:
        contexts = command.get("contexts")
        if (contexts is not None and 1 not in contexts) or command.get("dm_permission") is False:
            raise CommandUnavailableError(f"/{name} is not available in DMs")
        return
    required = command.get("default_member_permissions")
    if required is None or override or member is None:
        return
    have = guild.permissions_in(member, channel)
    needed = int(required)
    if needed == 0:  # "0": administrators only
        allowed = bool(have & _ADMINISTRATOR) or have == ALL_PERMISSIONS
    else:
        allowed = (have & needed) == needed
    if not allowed:
        raise CommandUnavailableError(
            f"/{name} needs permissions {needed} that {member!r} lacks; pass "
            "override_permissions=True to model an admin granting access in Integrations"
        )


def _convert(
    fake: FakeDiscord,
    option: dict[str, Any],
    value: Any,
    guild: FakeGuild | None,
    channel: FakeChannel,
    resolved: dict[str, dict[str, Any]],
) -> Any:
    kind = option["type"]
    name = option["name"]

    def bounds(number: float) -> None:
        low, high = option.get("min_value"), option.get("max_value")
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"option {name}={number} outside [{low}, {high}]")

    if kind == 3:
        if not isinstance(value, str):
            raise TypeError(f"option {name} is a string, got {value!r}")
        low, high = option.get("min_length", 0), option.get("max_length", 6000)
        if not low <= len(value) <= high:
            raise ValueError(f"option {name} length {len(value)} outside [{low}, {high}]")
    elif kind == 4:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name} is an integer, got {value!r}")
        bounds(value)
    elif kind == 10:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"option {name} is a number, got {value!r}")
        bounds(value)
    elif kind == 5:
        if not isinstance(value, bool):
            raise TypeError(f"option {name} is a boolean, got {value!r}")
    elif kind in (6, 9) and not isinstance(value, FakeRole):
        user = value.user if isinstance(value, FakeMember) else value
        user = fake.users[user] if isinstance(user, int) else user
        resolved.setdefault("users", {})[str(user.id)] = user.payload()
        member = guild.members.get(user.id) if guild else None
        if member is not None:
            perms = guild.permissions_in(member, channel)  # type: ignore[union-attr]
            resolved.setdefault("members", {})[str(user.id)] = {
                **member.payload(with_user=False),
                "permissions": str(perms),
            }
        value = str(user.id)
    elif kind in (8, 9):
        role = value if isinstance(value, FakeRole) else guild.roles[int(value)]  # type: ignore[union-attr]
        resolved.setdefault("roles", {})[str(role.id)] = role.payload()
        value = str(role.id)
    elif kind == 7:
        target = value if isinstance(value, FakeChannel) else fake.channels[int(value)]
        types = option.get("channel_types")
        if types and target.type not in types:
            raise ValueError(f"option {name} accepts channel types {types}, not {target.type}")
        resolved.setdefault("channels", {})[str(target.id)] = {
            **target.payload(),
            "permissions": str(fake.bot_permissions(target) if not target.is_dm else 0),
        }
        value = str(target.id)
    elif kind == 11:
        upload = value if isinstance(value, FileRecord) else FileRecord("file", *value)
        attachment_id = fake.ids.next()
        fake.attachments[attachment_id] = upload
        url = f"{fake.base_url}/attachments/{channel.id}/{attachment_id}/{upload.filename}"
        resolved.setdefault("attachments", {})[str(attachment_id)] = {
            "id": str(attachment_id),
            "filename": upload.filename,
            "size": upload.size,
            "url": url,
            "proxy_url": url,
            "content_type": upload.guessed_type,
            "ephemeral": True,
        }
        value = str(attachment_id)
    choices = option.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise ValueError(f"option {name}={value!r} is not one of the choices {choices}")
    return value


def _options(
    fake: FakeDiscord,
    path: str,
    declared: list[dict[str, Any]],
    values: dict[str, Any],
    guild: FakeGuild | None,
    channel: FakeChannel,
    resolved: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    known = {option["name"]: option for option in declared}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"/{path} has no option(s) {sorted(unknown)}; it has {sorted(known)}")
    missing = [o["name"] for o in declared if o.get("required") and o["name"] not in values]
    if missing:
        raise ValueError(f"/{path} requires {missing}")
    return [
        {
            "name": name,
            "type": known[name]["type"],
            "value": _convert(fake, known[name], value, guild, channel, resolved),
        }
        for name, value in values.items()
    ]


def build_slash(
    fake: FakeDiscord,
    name: str,
    values: dict[str, Any] | None,
    *,
    user: Actor | None,
    channel: FakeChannel | None,
    locale: str,
    attachment_size_limit: int | None,
    override_permissions: bool,
) -> tuple[dict[str, Any], InteractionRecord]:
    channel = channel or fake.channel
    actor, member, guild = resolve_actor(fake, user, channel)
    words = name.strip().lstrip("/").split()
    command = _find_command(fake, words[0], guild)
    _check_available(
        command, guild=guild, member=member, channel=channel, override=override_permissions
    )
    resolved: dict[str, dict[str, Any]] = {}
    declared: list[dict[str, Any]] = command.get("options") or []
    # Walk "group sub" down the declared tree, building the nesting on the way back.
    chain: list[dict[str, Any]] = []
    for word in words[1:]:
        found = next((o for o in declared if o["name"] == word and o["type"] in (1, 2)), None)
        if found is None:
            raise CommandUnavailableError(f"/{' '.join(words)}: no subcommand {word!r}")
        chain.append(found)
        declared = found.get("options") or []
    if any(o["type"] in (1, 2) for o in declared):
        raise CommandUnavailableError(f"/{' '.join(words)} needs a subcommand")
    options = _options(fake, " ".join(words), declared, values or {}, guild, channel, resolved)
    for sub in reversed(chain):
        options = [{"name": sub["name"], "type": sub["type"], "options": options}]
    data: dict[str, Any] = {
        "id": command["id"],
        "name": command["name"],
        "type": 1,
        "options": options,
    }
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    if resolved:
        data["resolved"] = resolved
    payload, limit = base_payload(
        fake,
        2,
        user=actor,
        member=member,
        channel=channel,
        guild=guild,
        data=data,
        locale=locale,
        attachment_size_limit=attachment_size_limit,
    )
    return payload, _record(fake, payload, actor, member, channel, guild, limit)


def _record(
    fake: FakeDiscord,
    payload: dict[str, Any],
    user: FakeUser,
    member: FakeMember | None,
    channel: FakeChannel,
    guild: FakeGuild | None,
    limit: int,
) -> InteractionRecord:
    return InteractionRecord(
        id=int(payload["id"]),
        token=payload["token"],
        type=payload["type"],
        payload=payload,
        created_at=fake.now(),
        user=user,
        member=member,
        channel=channel,
        guild=guild,
        attachment_size_limit=limit,
    )


# -- components ----------------------------------------------------------------------


def build_click(
    fake: FakeDiscord,
    message: StoredMessage,
    *,
    label: str | None,
    emoji: str | None,
    custom_id: str | None,
    values: list[str] | None,
    user: Actor | None,
    locale: str,
    attachment_size_limit: int | None,
) -> tuple[dict[str, Any], InteractionRecord]:
    if message.deleted:
        raise ValueError(f"message {message.id} was deleted; nobody can click it")
    if message.loading:
        raise ValueError(f"message {message.id} is still 'thinking…' and has no components")
    components = list(walk_components(message.components))
    if custom_id is not None:
        target = next((c for c in components if c.get("custom_id") == custom_id), None)
    elif label is not None or emoji is not None:
        target = message.button(label, emoji=emoji)
    else:
        raise TypeError("give label=, emoji= or custom_id=")
    if target is None:
        raise LookupError(f"no component {custom_id!r} on message {message.id}")
    if target.get("disabled"):
        raise ValueError(f"component {target.get('label') or custom_id!r} is disabled")
    if not target.get("custom_id"):
        raise ValueError("link and premium buttons do not create interactions")
    channel = fake.channels[message.channel_id]
    if user is None and message.interaction_id is not None:
        user = fake.interactions_by_id[message.interaction_id].user
    actor, member, guild = resolve_actor(fake, user, channel)
    if message.ephemeral and message.recipient_id not in (None, actor.id):
        raise ValueError(f"{actor!r} cannot see ephemeral message {message.id}")
    data: dict[str, Any] = {
        "custom_id": target["custom_id"],
        "component_type": target["type"],
        "id": target.get("id"),
    }
    if target["type"] != 2:
        chosen = list(values or [])
        low, high = target.get("min_values", 1), target.get("max_values", 1)
        if not low <= len(chosen) <= high:
            raise ValueError(f"select {custom_id!r} takes {low}..{high} values, not {chosen}")
        options = {o["value"] for o in target.get("options", [])}
        if target["type"] == 3 and not set(chosen) <= options:
            raise ValueError(f"select {custom_id!r} has no option(s) {set(chosen) - options}")
        data["values"] = chosen
    payload, limit = base_payload(
        fake,
        3,
        user=actor,
        member=member,
        channel=channel,
        guild=guild,
        data=data,
        locale=locale,
        attachment_size_limit=attachment_size_limit,
        message=message,
    )
    return payload, _record(fake, payload, actor, member, channel, guild, limit)


# -- modals --------------------------------------------------------------------------


def _submitted(component: dict[str, Any], values: dict[str, Any], used: set[str]) -> dict[str, Any]:
    kind = component["type"]
    if kind == 1:
        return {
            "type": 1,
            "id": component.get("id"),
            "components": [_submitted(c, values, used) for c in component.get("components", [])],
        }
    if kind == 18:
        inner = dict(component["component"])
        if not inner.get("label"):
            inner["label"] = component.get("label")
        return {
            "type": 18,
            "id": component.get("id"),
            "component": _submitted(inner, values, used),
        }
    custom_id = component.get("custom_id")
    label = component.get("label")
    key = custom_id if custom_id in values else label if label in values else None
    if key is not None:
        used.add(key)
    if kind == 4:
        value = values[key] if key is not None else component.get("value") or ""
        low, high = component.get("min_length", 0), component.get("max_length", 4000)
        if component.get("required", True) and not value:
            raise ValueError(f"modal field {label or custom_id!r} is required")
        if value and not low <= len(value) <= high:
            raise ValueError(f"modal field {label or custom_id!r}: length outside [{low}, {high}]")
        return {"type": 4, "id": component.get("id"), "custom_id": custom_id, "value": value}
    if kind in (3, 5, 6, 7, 8):
        chosen = values.get(key, []) if key is not None else []
        return {
            "type": kind,
            "id": component.get("id"),
            "custom_id": custom_id,
            "values": list(chosen),
        }
    return {"type": kind, "id": component.get("id")}


def build_modal_submit(
    fake: FakeDiscord,
    modal: ModalRecord,
    values: dict[str, Any],
    *,
    locale: str,
) -> tuple[dict[str, Any], InteractionRecord]:
    source = modal.interaction
    components = [dict(c) for c in modal.data.get("components", [])]
    for number, component in enumerate(walk_components(components), start=1):
        component.setdefault("id", number)
    names: set[str] = set()
    for component in walk_components(components):
        names.update(str(component[k]) for k in ("custom_id", "label") if component.get(k))
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"modal {modal.custom_id!r} has no field(s) {sorted(unknown)}: {names}")
    used: set[str] = set()
    submitted = [_submitted(c, values, used) for c in components]
    data = {"custom_id": modal.custom_id, "components": submitted}
    message = None
    if "message" in source.payload:
        message = fake.messages_by_id.get(int(source.payload["message"]["id"]))
    payload, limit = base_payload(
        fake,
        5,
        user=source.user,
        member=source.member,
        channel=source.channel,
        guild=source.guild,
        data=data,
        locale=locale,
        attachment_size_limit=source.attachment_size_limit,
        message=message,
    )
    return payload, _record(
        fake, payload, source.user, source.member, source.channel, source.guild, limit
    )
