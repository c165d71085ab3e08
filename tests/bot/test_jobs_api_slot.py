"""The API slot of an image is free as soon as its call ends, whatever the database is doing.

With PostgreSQL a job's queued -> running write can wait behind a crowd of
reservations for a connection (the guild's row serialises them); the next image
must not wait for it too, and the images that wait for it wait in the image store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref
from pathlib import Path

import pytest

from bot.credits import CreditLedger
from bot.image_store import HeldImage, ImageStore
from bot.jobs import JobQueue
from bot.segmind import GeneratedImage, GenerationResult, Txt2ImgRequest
from tests.bot.test_jobs import (
    ALICE,
    BOB,
    GUILD,
    ScriptedGenerator,
    hold_marks,
    make_queue,
    settle,
    submit,
)


async def test_the_next_call_starts_while_the_previous_job_is_still_being_marked(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    marked = hold_marks(ledger, monkeypatch)
    generator = ScriptedGenerator(gated=True)
    queue = make_queue(generator, ledger, concurrent=1)
    first, _ = await submit(queue, user=ALICE, prompt="first")
    second, _ = await submit(queue, user=BOB, prompt="second")
    await generator.wait_calls(1)
    generator.release()  # "first" is answered; its start is not written yet
    await generator.wait_calls(2)  # would time out if the slot waited for that write
    assert queue.in_flight == 1
    assert not first.settled.is_set()  # its image is still kept only after the verdict
    generator.release()
    marked.set()
    await settle(first)
    await settle(second)
    assert generator.peak == 1
    assert await ledger.balance(GUILD) == 98
    assert await ledger.verify()


class Answer(GenerationResult):
    """A GenerationResult one can take a weak reference to."""


class RememberingGenerator(ScriptedGenerator):
    """Keeps a weak reference to every answer it gave."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[weakref.ref[Answer]] = []

    async def generate(self, request: Txt2ImgRequest) -> GenerationResult:
        result = await super().generate(request)
        answer = Answer(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
        self.answers.append(weakref.ref(answer))
        return answer


async def test_images_waiting_for_the_start_write_wait_in_the_store(
    ledger: CreditLedger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    marked = hold_marks(ledger, monkeypatch)
    generator = RememberingGenerator()
    store = ImageStore(memory_budget=0, directory=tmp_path)  # every image goes to a file
    queue = JobQueue(generator, ledger, max_concurrent=2, max_per_user=3, image_store=store)
    both_stored = asyncio.Event()
    real_hold = store.hold

    async def hold(image: GeneratedImage) -> HeldImage:
        held = await real_hold(image)
        if store.files == 2:
            both_stored.set()
        return held

    monkeypatch.setattr(store, "hold", hold)
    job, delivery = await submit(queue, samples=2, size=512)
    await asyncio.wait_for(both_stored.wait(), 5)  # both answered, their start not written
    assert not job.settled.is_set()
    gc.collect()
    # The queue keeps no answer (nor its bytes) while it waits for the write.
    assert len(generator.answers) == 2 and all(ref() is None for ref in generator.answers)
    marked.set()
    await settle(job)
    assert len(delivery.delivered) == 2 and store.files == 0
    assert await ledger.verify()
