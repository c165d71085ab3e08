"""What /imagine shows: status lines, the result embed, files packed under the upload limit."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass

import discord

from bot.image_store import HeldImage
from bot.images import fit_jpeg
from bot.jobs import JobProgress
from bot.segmind import Txt2ImgRequest
from bot.status_board import describe_eta

__all__ = [
    "PreparedFile",
    "pack_files",
    "plural",
    "prepare_files",
    "result_embed",
    "status_text",
]

# Room for the JSON part of a multipart upload (embed, components).
_PAYLOAD_HEADROOM = 64 * 1024
_MAX_FILES_PER_MESSAGE = 10


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _duration(seconds: float) -> str:
    return f"{int(seconds)} s" if seconds < 60 else f"{int(seconds // 60)} min"


def status_text(progress: JobProgress, cost: int) -> str:
    """The private status line: place and estimate while queued, time running while generating."""
    if progress.state == "queued":
        place = f"#{progress.position} in line" if progress.position else "waiting for a slot"
        eta = f" · {describe_eta(progress.eta)}" if progress.eta is not None else ""
        return f"⏳ {place}{eta} · {plural(cost, 'credit')} reserved"
    running = ""
    if progress.elapsed is not None and progress.elapsed >= 10:
        running = f" · {_duration(progress.elapsed)} so far"
    if progress.total == 1:
        return f"🎨 Generating your image…{running}"
    return f"🎨 Generating {min(progress.done + 1, progress.total)}/{progress.total}…{running}"


def _size(request: Txt2ImgRequest) -> str:
    return f"{request.img_width}×{request.img_height}"


def result_embed(
    *,
    job_id: int,
    request: Txt2ImgRequest,
    seeds: Sequence[int],
    cost: int,
    balance: int,
    requester_id: int,
) -> discord.Embed:
    """The parameters, seeds, cost and balance under the images.

    The prompt goes in the description (4,096 characters) so the full 1,000-character
    prompt is always readable; the negative prompt fits a field (1,024).
    """
    embed = discord.Embed(
        title="Kandinsky 2.1", description=request.prompt, colour=discord.Colour.blurple()
    )
    if request.negative_prompt:
        embed.add_field(name="Negative prompt", value=request.negative_prompt, inline=False)
    embed.add_field(name="Scheduler", value=request.scheduler.value)
    embed.add_field(name="Steps", value=str(request.num_inference_steps))
    embed.add_field(name="Guidance", value=f"{request.guidance_scale:g}")
    embed.add_field(name="Size", value=_size(request))
    embed.add_field(name="Seed" if len(seeds) == 1 else "Seeds", value=", ".join(map(str, seeds)))
    embed.add_field(name="Cost", value=plural(cost, "credit"))
    embed.add_field(name="Balance", value=f"{plural(balance, 'credit')} left")
    embed.add_field(name="Requested by", value=f"<@{requester_id}>")
    embed.set_footer(text=f"Job #{job_id}")
    return embed


@dataclass(frozen=True)
class PreparedFile:
    """One attachment: the held image as it is, or its re-encoded bytes."""

    filename: str
    source: HeldImage | bytes
    seed: int | None

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.size

    def to_file(self) -> discord.File:
        """For one upload (discord.py closes it after the request)."""
        if isinstance(self.source, bytes):
            return discord.File(io.BytesIO(self.source), filename=self.filename)
        return discord.File(self.source.open(), filename=self.filename)


def _extension(image_format: str) -> str:
    return "png" if image_format.upper() == "PNG" else "jpg"


async def prepare_files(images: Sequence[HeldImage], limit: int) -> list[PreparedFile]:
    """Name each image ``kandinsky-<seed>.<ext>``; re-encode (off the loop) any over the limit."""
    budget = max(limit - _PAYLOAD_HEADROOM, 64 * 1024)
    prepared: list[PreparedFile] = []
    for index, image in enumerate(images):
        stem = f"kandinsky-{image.seed}" if image.seed is not None else f"kandinsky-{index + 1}"
        if image.size <= budget:
            prepared.append(PreparedFile(f"{stem}.{_extension(image.format)}", image, image.seed))
            continue
        data = await asyncio.to_thread(fit_jpeg, await image.read(), budget)
        prepared.append(PreparedFile(f"{stem}.jpg", data, image.seed))
    # Two images with the same seed (a multi-image answer) must not share a name.
    seen: dict[str, int] = {}
    unique: list[PreparedFile] = []
    for file in prepared:
        count = seen.get(file.filename, 0)
        seen[file.filename] = count + 1
        if count:
            stem, dot, ext = file.filename.rpartition(".")
            unique.append(PreparedFile(f"{stem}-{count + 1}{dot}{ext}", file.source, file.seed))
        else:
            unique.append(file)
    return unique


def pack_files(files: Sequence[PreparedFile], limit: int) -> list[list[PreparedFile]]:
    """Group files into messages, each under ``limit`` bytes and 10 files, keeping their order."""
    budget = max(limit - _PAYLOAD_HEADROOM, 1)
    messages: list[list[PreparedFile]] = []
    current: list[PreparedFile] = []
    used = 0
    for file in files:
        size = file.size
        if current and (used + size > budget or len(current) >= _MAX_FILES_PER_MESSAGE):
            messages.append(current)
            current, used = [], 0
        current.append(file)
        used += size
    if current:
        messages.append(current)
    return messages
